"""Faults and hostile input: a killed worker, a killed sweep, a deleted database, a full disk, a secret in a URL.
Every wait here is on an event the code exposes (a trial's state, a file written, a line printed)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from helpers import assert_one_line_error, run_cli, start_cli, wait_for
from mlp import train_cli

ENDLESS = ["data=digits", "search=digits", "hydra/sweeper/pruner=none", "trainer.epochs=100000"]


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / "digits.db"


def _trials(cwd: Path) -> list:
    if not _db(cwd).exists():
        return []
    try:
        return optuna.load_study(study_name="digits", storage=f"sqlite:///{_db(cwd)}").trials
    except (KeyError, Exception):  # the sweep has not created the study yet
        return []


def _running_with_epochs(cwd: Path, n: int):
    running = [t for t in _trials(cwd) if t.state == TrialState.RUNNING and t.intermediate_values]
    return running if len(running) >= n else None


def _children(pid: int) -> list[int]:
    """Live processes whose parent is pid, and theirs (the pool's fork server forks the workers)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == parent and stat[0] != "Z":
                found.append(int(entry))
                frontier.append(int(entry))
    return found


def _writer_of(path: Path) -> int:
    """The process whose stdout is `path`: a pool worker points it at its trial's console.log while it runs."""
    for pid in _all_pids():
        try:
            if os.readlink(f"/proc/{pid}/fd/1") == str(path):
                return pid
        except OSError:
            continue
    return 0


def _all_pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def test_a_killed_worker_costs_one_trial_and_is_replaced(tmp_path):
    """What an out-of-memory kill looks like: kill -9 on one of two workers."""
    proc = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *ENDLESS[:3],
                     "trainer.epochs=choice(2,100000)", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=2",
                     "hydra.sweeper.enqueue=[{trainer.epochs:100000,model.width:32},{trainer.epochs:100000,model.width:64},"
                     "{trainer.epochs:2,model.width:32}]",
                     cwd=tmp_path)
    wait_for(lambda: _running_with_epochs(tmp_path, 2), "two trials training", process=proc)
    (run,) = [p.parent for p in tmp_path.glob("multirun/*/*/0/console.log")]
    victim = wait_for(lambda: _writer_of(run / "console.log"), "trial 0's worker", process=proc)
    os.kill(victim, signal.SIGKILL)
    # The sweep goes on: trial 0 fails with the signal as its reason, trial 2 runs on a new worker and completes.
    wait_for(lambda: {t.number: t.state for t in _trials(tmp_path)}.get(2) == TrialState.COMPLETE,
             "trial 2 to complete on the replacement worker", process=proc)
    proc.terminate()  # trial 1 would run forever
    out, err = proc.communicate(timeout=120)
    trials = {t.number: t for t in _trials(tmp_path)}
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["fail_reason"] == "WorkerDied: worker died: signal 9"
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["fail_reason"] == "sweep interrupted"
    assert trials[2].state == TrialState.COMPLETE
    assert "Traceback" not in err and "Trial #0: worker died: signal 9; starting a new worker" in out
    (sweep_dir,) = [p.parent for p in tmp_path.glob("multirun/*/*/study.json")]
    assert len(pd.read_csv(sweep_dir / "report.csv")) == 3


def test_workers_die_with_a_killed_sweep_and_the_next_sweep_resumes_the_trial(tmp_path):
    proc = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *ENDLESS,
                     "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", "hydra.sweeper.heartbeat_interval=1",
                     "hydra.sweeper.report=false", cwd=tmp_path)
    wait_for(lambda: (_running_with_epochs(tmp_path, 1) or [None])[0] and
             len(_running_with_epochs(tmp_path, 1)[0].intermediate_values) >= 3, "three epochs", process=proc)
    workers = _children(proc.pid)
    assert workers
    os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, as the OOM killer or a lost terminal would
    wait_for(lambda: not [p for p in workers if _alive(p)], "the workers to exit", timeout=10)
    proc.communicate(timeout=10)
    (trial,) = _trials(tmp_path)
    assert trial.state == TrialState.RUNNING  # nobody has noticed yet
    epochs_before = len(trial.intermediate_values)

    # The next sweep finds the silent trial, fails it with the reason, retries it; the retry resumes from the
    # dead run's last epoch and is stopped by the time budget.
    result = train_cli("--multirun", *ENDLESS, "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1",
                       "hydra.sweeper.grace_period=1", "hydra.sweeper.retries=1", "hydra.sweeper.time_budget=2",
                       "hydra.sweeper.report=false", cwd=tmp_path)
    trials = _trials(tmp_path)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"] == "worker stopped sending heartbeats"
    retry = trials[1]
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params
    assert retry.state == TrialState.PRUNED and retry.user_attrs["stop_reason"] == "stopped by hydra.sweeper.time_budget"
    assert len(retry.intermediate_values) > epochs_before  # carried over, then continued
    run = Path(retry.user_attrs["run_dir"])
    assert "resumed after epoch" in (run / "train.log").read_text()
    history = (run / "history.csv").read_text().splitlines()
    assert int(history[1].split(",")[0]) == 1 and len(history) - 1 == len(retry.intermediate_values)
    assert "time_budget" in result.stderr.strip().splitlines()[-1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_deleted_sqlite_file_stops_the_sweep_with_one_line(tmp_path):
    proc = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *ENDLESS,
                     "hydra.sweeper.n_trials=2", cwd=tmp_path)
    wait_for(lambda: _running_with_epochs(tmp_path, 1), "a trial training", process=proc)
    for p in _db(tmp_path).parent.glob("digits.db*"):
        if not p.name.endswith(".lock"):
            p.unlink()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: lost the study's storage") and "was deleted" in last
    assert not _db(tmp_path).exists()  # nobody quietly made a fresh, empty study there


def test_a_second_ctrl_c_does_not_cut_the_clean_up_short(tmp_path):
    proc = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", *ENDLESS,
                     "hydra.sweeper.n_trials=2", "hydra.sweeper.report=false", cwd=tmp_path)
    wait_for(lambda: _running_with_epochs(tmp_path, 1), "a trial training", process=proc)
    out: list[str] = []
    errs: list[str] = []
    readers = [threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True),
               threading.Thread(target=lambda: errs.extend(proc.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    os.killpg(proc.pid, signal.SIGINT)
    wait_for(lambda: any("Interrupted" in line for line in out), "the sweep to start cleaning up")
    os.killpg(proc.pid, signal.SIGINT)  # impatient user
    proc.wait(timeout=120)
    for reader in readers:
        reader.join(timeout=10)
    err = "".join(errs)
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "error: sweep interrupted; rerun the same command to resume the study"
    assert all(t.state == TrialState.FAIL for t in _trials(tmp_path))


def test_the_sqlite_lock_holds_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "multirun").mkdir()
    (tmp_path / "multirun" / "studies").symlink_to(real)
    with open(real / "digits.db.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a sweep writing real/digits.db holds it
        result = train_cli("--multirun", *ENDLESS[:3], "trainer.epochs=2", "hydra.sweeper.n_trials=1",
                           cwd=tmp_path)
    assert_one_line_error(result, "in use by another running sweep")


def test_a_password_in_the_query_is_refused_and_never_printed(tmp_path):
    url = "postgresql://sweep@127.0.0.1:9/sweep?password=S3cret"
    result = train_cli("--multirun", *ENDLESS[:3], "trainer.epochs=2", f"hydra.sweeper.storage='{url}'", cwd=tmp_path)
    assert_one_line_error(result, "holds a password", "PGPASSWORD")
    assert "S3cret" not in result.stdout + result.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"S3cret" in p.read_bytes()]
    report = run_cli("sweep.report", "--storage", "postgresql://u:S3cret@127.0.0.1:9/db", "--study", "nosuch",
                     cwd=tmp_path)
    assert_one_line_error(report, "--storage")
    assert report.returncode == 2 and "S3cret" not in report.stdout + report.stderr


def test_a_full_disk_fails_trials_but_the_sweep_still_ends_with_one_line(tmp_path):
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(tiny)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("needs root to mount a 1 MB tmpfs")
    try:
        (tiny / "filler").write_bytes(b"\0" * (1024 * 1024 - 64 * 1024))  # leave 64 KB: a run's first files
        result = train_cli("--multirun", *ENDLESS[:3], "trainer.epochs=3", "hydra.sweeper.n_trials=4",
                           f"hydra.sweep.dir={tiny / 'sweep'}", cwd=tmp_path)
        err = result.stderr
        assert "Traceback" not in err, err
        assert "Sweep done:" in err + result.stdout  # the summary line still comes
        assert result.returncode == 0 or err.strip().splitlines()[-1].startswith("error: ")
        results = tiny / "sweep" / "optimization_results.yaml"
        assert not results.exists() or results.stat().st_size > 0  # never a 0-byte file
        assert not list((tiny / "sweep").glob("*.png")) or all(p.stat().st_size > 0 for p in (tiny / "sweep").glob("*.png"))
        trials = _trials(tmp_path)
        assert len(trials) >= 1 and all(t.state != TrialState.RUNNING for t in trials)
        assert any("No space left" in t.user_attrs.get("fail_reason", "") for t in trials) or \
            all(t.state == TrialState.COMPLETE for t in trials)
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)
