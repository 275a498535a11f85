"""Faults of the MLP harness: a killed sweep whose retry resumes from last.pt, Ctrl-C on a single run, a full or
read-only disk, running out of memory, and Hydra's own complaints in one line. Every wait here is on an event the code
exposes (a trial's state, a file written, a line printed)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import alive, assert_one_line_error, children, drawers_done, start_cli, wait_for
from mlp import train_cli

ENDLESS = ["data=digits", "search=digits", "hydra/sweeper/pruner=none", "trainer.epochs=100000"]


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / "digits.db"


def _trials(cwd: Path) -> list:
    if not _db(cwd).exists():
        return []
    try:
        return optuna.load_study(study_name="digits", storage=f"sqlite:///{_db(cwd)}").trials
    except Exception:  # the sweep has not created the study yet
        return []


def _running_with_epochs(cwd: Path, n: int):
    running = [t for t in _trials(cwd) if t.state == TrialState.RUNNING and t.intermediate_values]
    return running if len(running) >= n else None


@pytest.mark.slow  # the default run has each part: tests/plugin/test_study.py (kill -9, fail, retry) and test_train.py
def test_workers_die_with_a_killed_sweep_and_the_next_sweep_resumes_the_trial(tmp_path):  # (the retry's last.pt)
    proc = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *ENDLESS,
                     "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "hydra.sweeper.heartbeat_interval=1",
                     "hydra.sweeper.report=false", cwd=tmp_path)
    wait_for(lambda: (_running_with_epochs(tmp_path, 1) or [None])[0] and
             len(_running_with_epochs(tmp_path, 1)[0].intermediate_values) >= 3, "three epochs", process=proc)
    workers = children(proc.pid)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, as the OOM killer or a lost terminal would
    wait_for(lambda: not [p for p in workers if alive(p)], "the workers to exit", timeout=10)
    proc.communicate(timeout=10)
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.RUNNING  # nobody has noticed yet
    epochs_before = len(trial.intermediate_values)

    beat = trial.system_attrs["sweep:heartbeat"]
    wait_for(lambda: time.time() - beat > 1.5, "the heartbeat to go stale")

    # The next sweep finds the silent trial, fails it with the reason, retries it; the retry resumes from the dead
    # run's last.pt and trains on past where it died, and is then stopped.
    again = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *ENDLESS,
                      "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "hydra.sweeper.grace_period=1",
                      "hydra.sweeper.retries=1", "hydra.sweeper.report=false", cwd=tmp_path)
    wait_for(lambda: len(_trials(tmp_path)) == 2 and len(_trials(tmp_path)[1].intermediate_values) > epochs_before + 2,
             "the retry to train past where the first run died", process=again)
    again.terminate()
    again.communicate(timeout=120)
    trials = _trials(tmp_path)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "its sweep stopped sending heartbeats"
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params
    run = Path(retry.user_attrs["run_dir"])
    assert "resumed after epoch" in (run / "train.log").read_text()
    epochs = [int(line.split(",")[0]) for line in (run / "history.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > epochs_before + 1  # carried over, then on


def test_a_disk_that_fills_mid_sweep_fails_trials_and_the_sweep_still_ends_with_one_line(tmp_path):
    with _mounted(tmp_path / "tiny") as tiny:
        (tiny / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # leave 64 KB: a run's first files
        result = train_cli("--multirun", *ENDLESS[:3], "trainer.epochs=3", "hydra.sweeper.n_trials=4",
                           f"hydra.sweep.dir={tiny / 'sweep'}", cwd=tmp_path)
        err = result.stderr
        assert "Traceback" not in err, err
        assert "Sweep done:" in err + result.stdout  # the summary line still comes
        assert result.returncode == 0 or err.strip().splitlines()[-1].startswith("error: ")
        results = tiny / "sweep" / "optimization_results.yaml"
        assert not results.exists() or results.stat().st_size > 0  # never a 0-byte file
        drawers_done()  # the report's plots, drawn after the command ended, on the same full disk
        assert all(p.stat().st_size > 0 for p in (tiny / "sweep").glob("*.png"))
        trials = _trials(tmp_path)
        assert len(trials) >= 1 and all(t.state != TrialState.RUNNING for t in trials)
        assert any("disk is full" in t.user_attrs.get("fail_reason", "") for t in trials) or \
            all(t.state == TrialState.COMPLETE for t in trials)
    # and no worker outlived the sweep: the autouse fixture fails the test otherwise


def test_ctrl_c_on_a_single_run_is_one_line_and_the_rerun_resumes(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data=digits", "trainer.epochs=300", f"hydra.run.dir={run_dir}"]
    proc = start_cli("sweep.train", f"data.cache_dir={tmp_path / 'cache'}", *args, cwd=tmp_path)
    wait_for(lambda: (run_dir / "last.pt").is_file(), "the first checkpoint", process=proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"error: interrupted; rerun the same command to resume from {run_dir / 'last.pt'}"
    # The same command resumes; once it says so, a second Ctrl-C stops it the same way (no need to train 300 epochs).
    again = start_cli("sweep.train", f"data.cache_dir={tmp_path / 'cache'}", *args, cwd=tmp_path)
    wait_for(lambda: "resumed after epoch" in (run_dir / "train.log").read_text(), "the rerun to resume", process=again)
    os.killpg(again.pid, signal.SIGINT)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 130 and "Traceback" not in err, err


@contextmanager
def _mounted(folder: Path, *options: str):
    """A small tmpfs at `folder` (root only): a real full or read-only file system for a run to meet."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(["size=1m", *options]), "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        assert os.geteuid() != 0, mounted.stderr
        pytest.skip("needs root to mount a tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.parametrize("how", ["read-only", "full"])
def test_a_run_on_a_disk_it_cannot_write_is_one_line(tmp_path, how):
    with _mounted(tmp_path / "disk", *(["ro"] if how == "read-only" else [])) as disk:
        if how == "full":
            (disk / "filler").write_bytes(b"\0" * (1024 * 1024))
        single = train_cli("data=digits", "trainer.epochs=2", f"hydra.run.dir={disk / 'run'}", cwd=tmp_path)
        assert_one_line_error(single, str(disk), "read-only" if how == "read-only" else "full")
        swept = train_cli("--multirun", "data=digits", "search=digits", "trainer.epochs=2", "hydra.sweeper.n_trials=2",
                          f"hydra.sweep.dir={disk / 'sweep'}", cwd=tmp_path)
        assert_one_line_error(swept, "hydra.sweep.dir", str(disk))


def test_a_full_cache_disk_costs_a_warning_not_the_run(tmp_path):
    with _mounted(tmp_path / "cache") as cache:
        (cache / "filler").write_bytes(b"\0" * (1024 * 1024))
        root = tmp_path / "imgs"
        from mlp import write_imagefolder

        write_imagefolder(root, per_class=40, size=16)
        result = train_cli("data=imagefolder", f"data.root={root}", "data.val_size=10", "trainer.epochs=1",
                           f"data.cache_dir={cache}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "not written" in result.stdout + result.stderr


@pytest.mark.parametrize("width, fragment", [(30000, "does not fit in memory"),  # the weights alone
                                             (14000, "out of memory while training")])  # Adam's state too
def test_running_out_of_memory_is_one_line(tmp_path, width, fragment):
    limit = 5 * 1024**3  # address space: torch itself takes about 3.3 GB of it
    result = subprocess.run(
        [sys.executable, "-m", "sweep.train", "data=digits", "trainer.epochs=1", f"model.width={width}", "model.depth=2",
         f"data.cache_dir={tmp_path / 'cache'}", "optimizer=adamw", "data.batch_size=32"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, start_new_session=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert_one_line_error(result, fragment, "model.width")


@pytest.mark.parametrize("args, fragments", [
    (["model=foo"], ["model=foo is not an option; model has: mlp"]),
    (["+experiment=foo"], ["experiment=foo is not an option; experiment has: cifar10_mlp_best, tutorial"]),
    (["--multirun", "hydra/launcher=foo"], ["hydra/launcher=foo is not an option", "pool", "ray_pool", "slurm_pool"]),
    (["trainer.epochs=${trainer.epochs}"], ["trainer.epochs"]),
    (["data.root=${oc.env:NO_SUCH_VARIABLE}", "data=imagefolder"], ["NO_SUCH_VARIABLE"]),
    (["trainer.seed=99999999999999999999999"], ["trainer.seed", "within +-2**63"]),
    (["data.crop_padding=100000"], ["data.crop_padding=100000 is invalid", "0..64"]),
    (["nosuchkey=1"], ["nosuchkey", "+key=value adds a key"]),
    (["hydra.sweeper.storage=postgresql://u@h/db?password=S3cret x"], ["cannot read the override", "quote a value"]),
])
def test_what_hydra_refuses_is_one_line(tmp_path, args, fragments):
    result = train_cli("data=digits", "trainer.epochs=1", *args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert "S3cret" not in result.stdout + result.stderr


def test_a_last_checkpoint_that_is_a_folder_is_named(tmp_path):
    (tmp_path / "run" / "last.pt").mkdir(parents=True)
    result = train_cli("data=digits", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_error(result, "last.pt is not a file")


def test_class_names_that_are_not_utf8_are_named(tmp_path):
    from mlp import write_imagefolder

    root = write_imagefolder(tmp_path / "imgs")
    os.rename(root / "train" / "cat", os.path.join(os.fsencode(root / "train"), b"c\xe4t"))
    result = train_cli("data=imagefolder", f"data.root={root}", cwd=tmp_path)
    assert_one_line_error(result, "is not UTF-8")
