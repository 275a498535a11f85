"""Several workers on one study in a real PostgreSQL server (started here, on loopback), crash safety,
credentials, and the submitit launcher's local executor."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from conftest import run_cli, start_cli, train_cli, wait_for
from pgserver import Postgres, bindir, start_postgres

pytestmark = pytest.mark.xdist_group("postgres")  # one server per test process: keep these tests together

BASE = ["data=digits", "search=digits", "hydra/sweeper/pruner=none", "hydra.sweeper.n_jobs=1"]
FAST = [*BASE, "trainer.epochs=3"]  # a fixed trainer.epochs would drop it from a search space, so BASE leaves it out


@pytest.fixture(scope="module")
def postgres():
    if bindir() is None:
        assert not os.environ.get("CI"), "CI must have PostgreSQL: .ci/run installs Debian's postgresql"
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql; `bash .ci/run` does it)")
    server = start_postgres()
    yield server
    server.remove()


def _study(pg: Postgres, name: str) -> optuna.Study:
    os.environ["PGPASSWORD"] = pg.password
    return optuna.load_study(study_name=name, storage=pg.url)


def _trials_so_far(pg: Postgres, name: str) -> list:
    try:
        return _study(pg, name).trials
    except KeyError:  # the worker has not created the study yet
        return []


def _worker(cwd: Path, pg: Postgres, name: str, *args: str):
    return start_cli("sweep.train", "--multirun", f"data.cache_dir={cwd / 'cache'}", *args,
                     f"hydra.sweeper.storage={pg.url}", f"hydra.sweeper.study_name={name}", cwd=cwd, env=pg.env)


def test_concurrent_workers_land_every_trial_once(postgres, tmp_path):
    workers = [_worker(tmp_path, postgres, "shared", *FAST, "hydra.sweeper.n_trials=3") for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err
    trials = _study(postgres, "shared").trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    result = run_cli("sweep.report", "--storage", postgres.url, "--study", "shared", cwd=tmp_path, env=postgres.env)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "report-shared" / "report.csv").read_text().strip().splitlines()) == 1 + 6


@pytest.mark.slow  # the same path as test_faults' SQLite case, on PostgreSQL
def test_killed_worker_loses_nothing_and_its_trial_is_retried(postgres, tmp_path):
    # Trial 0 is short and finishes; trial 1 never would, and is running when its sweep is killed.
    args = [*BASE, "hydra.sweeper.n_trials=2", "hydra.sweeper.heartbeat_interval=1", "trainer.epochs=choice(2,100000)",
            "hydra.sweeper.enqueue=[{trainer.epochs:2},{trainer.epochs:100000}]"]
    worker = _worker(tmp_path, postgres, "crash", *args)

    def second_trial_training():
        trials = _trials_so_far(postgres, "crash")
        return len(trials) == 2 and trials[1].state == TrialState.RUNNING and len(trials[1].intermediate_values) >= 2

    wait_for(second_trial_training, "trial 1 to train", process=worker)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.communicate()
    assert _study(postgres, "crash").trials[1].state == TrialState.RUNNING  # nobody has noticed yet

    # The next worker finds it silent, fails it with the reason and retries it: the retry resumes from the dead
    # run's last epoch, and the time budget stops it (it would never finish).
    result = train_cli("--multirun", *BASE, "hydra.sweeper.n_trials=1", "hydra.sweeper.heartbeat_interval=1",
                       "hydra.sweeper.grace_period=1", "hydra.sweeper.retries=1", "hydra.sweeper.time_budget=2",
                       "trainer.epochs=choice(2,100000)", f"hydra.sweeper.storage={postgres.url}",
                       "hydra.sweeper.study_name=crash", cwd=tmp_path, env=postgres.env)
    assert result.returncode == 0, result.stderr  # trial 0 completed, so the study has a best
    trials = _study(postgres, "crash").trials
    assert trials[0].state == TrialState.COMPLETE  # finished before the kill: kept
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["fail_reason"] == "worker stopped sending heartbeats"
    retried = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 1]
    assert len(retried) == 1 and retried[0].params == trials[1].params
    assert retried[0].state == TrialState.PRUNED
    assert len(retried[0].intermediate_values) > len(trials[1].intermediate_values)
    assert "resumed after epoch" in (Path(retried[0].user_attrs["run_dir"]) / "train.log").read_text()
    result = run_cli("sweep.report", "--storage", postgres.url, "--study", "crash", cwd=tmp_path, env=postgres.env)
    assert result.returncode == 0, result.stderr


def test_database_going_away_is_a_clear_error_and_the_sweep_resumes(postgres, tmp_path):
    worker = _worker(tmp_path, postgres, "outage", *BASE, "hydra.sweeper.n_trials=3", "trainer.epochs=100000")
    wait_for(lambda: [t for t in _trials_so_far(postgres, "outage") if t.intermediate_values], "a trial to train",
             process=worker)
    postgres.stop()
    try:
        _, err = worker.communicate(timeout=120)
    finally:
        postgres.start()
    assert worker.returncode != 0 and "Traceback" not in err, err
    assert "lost the study's storage" in err.strip().splitlines()[-1]
    result = train_cli("--multirun", *FAST, "hydra.sweeper.n_trials=1", "hydra.sweeper.grace_period=1",
                       f"hydra.sweeper.storage={postgres.url}", "hydra.sweeper.study_name=outage", cwd=tmp_path,
                       env=postgres.env)
    assert result.returncode == 0, result.stderr
    states = [t.state for t in _study(postgres, "outage").trials]
    assert states[0] == TrialState.FAIL and states[-1] == TrialState.COMPLETE


def test_password_never_reaches_logs_reports_or_saved_configs(postgres, tmp_path):
    url = postgres.url.replace("sweep@", "sweep:${oc.env:SWEEP_DB_PASSWORD}@")
    secret = {"SWEEP_DB_PASSWORD": postgres.password}
    result = train_cli("--multirun", *FAST, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={url}",
                       "hydra.sweeper.study_name=secret", "trainer.save_checkpoint=true", cwd=tmp_path, env=secret)
    assert result.returncode == 0, result.stderr
    assert postgres.password not in result.stdout + result.stderr
    (sweep_dir,) = [p.parent for p in tmp_path.glob("multirun/*/*/study.json")]
    assert "${oc.env:SWEEP_DB_PASSWORD}" in (sweep_dir / "study.json").read_text()
    # The README's recipe works end to end: the report and the evaluation reconnect from the sweep directory.
    reported = run_cli("sweep.report", str(sweep_dir), cwd=tmp_path, env=secret)
    assert reported.returncode == 0, reported.stderr
    evaluated = run_cli("sweep.evaluate", str(sweep_dir), cwd=tmp_path, env=secret)
    assert evaluated.returncode == 0, evaluated.stderr
    without = run_cli("sweep.report", str(sweep_dir), cwd=tmp_path, env={"SWEEP_DB_PASSWORD": ""})
    assert without.returncode == 2 and "SWEEP_DB_PASSWORD" in without.stderr.strip().splitlines()[-1]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in files) and any(p.name == "report.html" for p in files)
    leaks = [p for p in files if postgres.password.encode() in p.read_bytes()]
    assert not leaks

    literal = postgres.url.replace("sweep@", f"sweep:{postgres.password}@")
    (tmp_path / "x").mkdir()
    refused = train_cli("--multirun", *FAST, f"hydra.sweeper.storage={literal}", cwd=tmp_path / "x")
    assert refused.returncode != 0 and "PGPASSWORD" in refused.stderr.strip().splitlines()[-1]


@pytest.mark.slow  # the refusal itself is also in test_faults
def test_sqlite_refuses_a_second_concurrent_worker(tmp_path):
    first = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *BASE,
                      "hydra.sweeper.n_trials=1", "trainer.epochs=100000", cwd=tmp_path)
    db = tmp_path / "multirun" / "studies" / "digits.db"
    wait_for(lambda: list(tmp_path.glob("multirun/*/*/0/metrics.json")), "the first sweep's trial to train",
             process=first)
    second = train_cli("--multirun", *FAST, "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert second.returncode != 0 and "journal" in second.stderr.strip().splitlines()[-1]
    os.killpg(first.pid, signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert "sweep interrupted" in err.strip().splitlines()[-1]
    trials = optuna.load_study(study_name="digits", storage=f"sqlite:///{db}").trials
    assert len(trials) == 1 and trials[0].user_attrs["fail_reason"] == "sweep interrupted"  # the study is intact


@pytest.mark.slow  # the batch-launcher path is also run by Hydra's basic launcher in test_plugin
def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    result = train_cli("--multirun", *FAST, "hydra.sweeper.n_trials=2", "hydra/launcher=submitit_local",
                       "hydra.launcher.timeout_min=10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{tmp_path}/multirun/studies/digits.db")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert list(tmp_path.glob("multirun/*/*/.submitit"))
