"""Several sweeps on one study in a real PostgreSQL server (started here, on loopback), a database that goes away,
and passwords: given as ${oc.env:VAR}, holding @ / : %, they connect and never reach a log, a file or an error."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import assert_one_line_error, drawers_done, run_app, run_cli, start_app, wait_for
from pgserver import Postgres, bindir, start_postgres

pytestmark = pytest.mark.xdist_group("postgres")  # one server per test process: keep these tests together

SPECIAL = "p@ss/w:rd%2Fx"  # a password URL syntax would split, were it pasted in


@pytest.fixture(scope="module")
def postgres():
    if bindir() is None:
        assert not os.environ.get("CI"), "CI must have PostgreSQL: .ci/run installs Debian's postgresql"
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; `bash .ci/run` does it)")
    server = start_postgres()
    yield server
    server.remove()


def _study(pg: Postgres, name: str, url: str | None = None, env: dict | None = None) -> optuna.Study:
    os.environ.update(env or pg.env)
    try:
        return optuna.load_study(study_name=name, storage=url or pg.url)
    finally:
        os.environ.pop("PGPASSWORD", None)


def _trials(pg: Postgres, name: str) -> list:
    try:
        return _study(pg, name).trials
    except KeyError:  # the sweep has not created the study yet
        return []


def _sweep(cwd: Path, pg: Postgres, name: str, *args: str):
    return start_app("--multirun", f"hydra.sweeper.storage={pg.url}", f"hydra.sweeper.study_name={name}",
                     f"hydra.sweep.dir={cwd / name / '${now:%H-%M-%S-%f}'}", *args, cwd=cwd, env=pg.env)


def test_concurrent_sweeps_land_every_trial_once(postgres, tmp_path):
    sweeps = [_sweep(tmp_path, postgres, "shared", "hydra.sweeper.n_trials=3") for _ in range(2)]
    for s in sweeps:
        _, err = s.communicate(timeout=300)
        assert s.returncode == 0, err
    found = _study(postgres, "shared").trials
    assert sorted(t.number for t in found) == list(range(6)) and all(t.state == TrialState.COMPLETE for t in found)
    result = run_cli("sweep.report", "--storage", postgres.url, "--study", "shared", cwd=tmp_path, env=postgres.env)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "report-shared" / "report.csv").read_text().strip().splitlines()) == 1 + 6


def test_a_database_going_away_is_one_line_and_the_sweep_resumes(postgres, tmp_path):
    sweep = _sweep(tmp_path, postgres, "outage", "hydra.sweeper.n_trials=3", "epochs=100000", "epoch_seconds=0.05")
    wait_for(lambda: [t for t in _trials(postgres, "outage") if t.intermediate_values], "a trial to train", process=sweep)
    postgres.stop()
    try:
        _, err = sweep.communicate(timeout=120)
    finally:
        postgres.start()
    assert sweep.returncode == 2 and "Traceback" not in err, err
    assert "lost the study's storage" in err.strip().splitlines()[-1]
    again = _sweep(tmp_path, postgres, "outage", "hydra.sweeper.n_trials=1", "hydra.sweeper.grace_period=1")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    states = [t.state for t in _study(postgres, "outage").trials]
    assert states[0] == TrialState.FAIL and states[-1] == TrialState.COMPLETE


def test_a_password_from_the_environment_connects_and_is_never_shown(postgres, tmp_path):
    host = postgres.url.split("@", 1)[1]  # 127.0.0.1:port/sweep
    psql = [str(bindir() / "psql"), f"postgresql://sweep@{host}", "-v", "ON_ERROR_STOP=1", "-c"]
    for sql in ["CREATE ROLE special LOGIN PASSWORD 'p@ss/w:rd%2Fx'", "CREATE DATABASE special OWNER special"]:
        subprocess.run([*psql, sql], check=True, capture_output=True, env={**os.environ, **postgres.env})
    url = f"postgresql://special:${{oc.env:SWEEP_DB_PASSWORD}}@{host.rsplit('/', 1)[0]}/special"
    secret = {"SWEEP_DB_PASSWORD": SPECIAL}
    result = run_app("--multirun", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={url}",
                     "hydra.sweeper.study_name=secret", "hydra.sweeper.report=true", cwd=tmp_path, env=secret)
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = [p.parent for p in tmp_path.glob("multirun/*/*/study.json")]
    assert "${oc.env:SWEEP_DB_PASSWORD}" in (sweep_dir / "study.json").read_text()
    # The folder does not decide where to connect: the report asks for the storage, then uses what it is given.
    refused = run_cli("sweep.report", str(sweep_dir), cwd=tmp_path, env=secret)
    assert_one_line_error(refused, "a sweep folder never decides where this command connects", "--storage")
    reported = run_cli("sweep.report", str(sweep_dir), "--storage", url, cwd=tmp_path, env=secret)
    assert reported.returncode == 0, reported.stderr
    wrong = run_cli("sweep.report", "--storage", url.replace("special:", "special:x"), "--study", "secret",
                    cwd=tmp_path, env=secret)
    assert wrong.returncode == 2
    outputs = result.stdout + result.stderr + refused.stderr + reported.stdout + reported.stderr + wrong.stderr
    drawers_done()  # the sweep's report drawer (its plots, report.log) is done writing too
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in files) and any(p.name == "report.html" for p in files)
    # The report's embedded plots are base64, where a piece such as "ss/w" turns up by chance: they are left out.
    texts = {p: re.sub(rb"base64,[A-Za-z0-9+/=]+", b"", p.read_bytes()) for p in files}
    for piece in (SPECIAL, "ss/w", "w:rd", "rd%2F", "p%40ss"):  # nothing of it, escaped or not
        assert piece not in outputs
        assert not [p for p, text in texts.items() if piece.encode() in text]
