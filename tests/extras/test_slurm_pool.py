"""hydra/launcher=slurm_pool with submitit's local executor (the same jobs SLURM would run, as local processes):
one job per trial, refilled as each ends; a preempted job fails its trial with the reason, and its retry resumes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from helpers import ASHA, BAD, GOOD, check_promotion, run_app, start_app, trials, wait_for

pytest.importorskip("submitit")  # the `slurm` extra; .ci/run installs it

STUDY = "curve"
LOCAL = ["hydra/launcher=slurm_pool", "hydra.launcher.executor=local", "hydra.launcher.timeout_min=10"]


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / f"{STUDY}.db"


def test_one_job_per_trial_refilled_as_each_ends(tmp_path):
    result = run_app("--multirun", *LOCAL, "hydra.sweeper.n_trials=3", "barrier=choice(0,3)",
                     f"barrier_dir={tmp_path / 'b'}",
                     "hydra.sweeper.enqueue=[{barrier:3,lr:0.1},{barrier:0,lr:0.2},{barrier:0,lr:0.3}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = {t.number: t for t in trials(_db(tmp_path), STUDY)}
    assert [t.state for t in found.values()] == [TrialState.COMPLETE] * 3
    assert found[0].datetime_complete > found[2].datetime_start  # trial 2 started while trial 0 still ran
    jobs = {p.parent.name for p in tmp_path.glob("multirun/*/*/.submitit/*/*_submitted.pkl")}
    assert len(jobs) == 3  # one job per trial, no array
    assert "submitit local executor: one job per trial, 2 at a time" in result.stdout + result.stderr


def test_asha_pauses_and_promotes_trials_through_slurm_jobs(tmp_path):
    result = run_app("--multirun", *LOCAL, *ASHA, "hydra.sweeper.n_trials=8", f"hydra.sweeper.enqueue=[{GOOD},{BAD}]",
                     cwd=tmp_path)
    check_promotion(result, _db(tmp_path))


def test_a_preempted_job_fails_its_trial_and_the_retry_resumes_where_it_stopped(tmp_path):
    proc = start_app("--multirun", *LOCAL, "hydra.sweeper.n_trials=1", "hydra.sweeper.retries=1",
                     "hydra.sweeper.max_failure_rate=1", "epochs=12", "epoch_seconds=0.2", cwd=tmp_path)
    wait_for(lambda: any(len(t.intermediate_values) >= 3 for t in trials(_db(tmp_path), STUDY)), "three epochs",
             process=proc)
    (pid,) = [int(p.read_text()) for p in tmp_path.glob("multirun/*/*/0/pid")]
    os.kill(pid, signal.SIGKILL)  # what preemption or a dead node does to the job
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    first, retry = trials(_db(tmp_path), STUDY)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"].startswith("WorkerDied: local job ")
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    assert sorted(retry.intermediate_values) == list(range(1, 13))
    stopped = len(first.intermediate_values)
    assert stopped >= 3 and "1 complete, 0 pruned, 1 failed" in out + err
    # The retry read the dead run's progress and went on from there, not from epoch 1.
    assert int((Path(retry.user_attrs["run_dir"]) / "resumed_from").read_text()) >= 3


def test_a_result_file_left_in_a_reused_sweep_folder_is_never_read(tmp_path):
    """submitit's local executor names jobs by process id: a planted <id>_0_result.pkl must never be unpickled."""
    import pickle

    sweep_dir = f"hydra.sweep.dir={tmp_path / 'sweep'}"
    assert run_app("--multirun", *LOCAL, "hydra.sweeper.n_trials=1", sweep_dir, cwd=tmp_path).returncode == 0
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    first = list((tmp_path / "sweep" / ".submitit").iterdir())
    for folder in first:  # the old jobs' folders, and the names the next jobs would get if ids were reused
        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
        for job in {folder.name, *(str(p) for p in range(last + 1, last + 400))}:
            (folder.parent / job).mkdir(exist_ok=True)
            (folder.parent / job / f"{job}_0_result.pkl").write_bytes(pickle.dumps(("success", Payload())))
    result = run_app("--multirun", *LOCAL, "hydra.sweeper.n_trials=1", sweep_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert [t.state for t in trials(_db(tmp_path), STUDY)] == [TrialState.COMPLETE] * 2


def test_a_killed_sweeps_local_jobs_end_with_it_and_ctrl_c_is_one_line(tmp_path):
    from helpers import marked_processes

    args = ["--multirun", *LOCAL, "hydra.sweeper.n_trials=2", "epochs=100000", "epoch_seconds=0.05"]
    proc = start_app(*args, cwd=tmp_path)
    wait_for(lambda: len([t for t in trials(_db(tmp_path), STUDY) if t.intermediate_values]) == 2, "two jobs training",
             process=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    wait_for(lambda: not marked_processes(), "the jobs to end with their sweep", timeout=30)

    proc = start_app(*args, f"hydra.sweep.dir={tmp_path / 'second'}", cwd=tmp_path)
    wait_for(lambda: len([t for t in trials(_db(tmp_path), STUDY) if t.intermediate_values]) == 4, "two new jobs",
             process=proc)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the local jobs too: they leave it to the sweep
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "KeyboardInterrupt" not in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith("error: sweep interrupted")


def test_slurm_on_a_machine_without_slurm_is_one_line(tmp_path):
    from helpers import assert_one_line_error

    result = run_app("--multirun", "hydra/launcher=slurm_pool", "hydra.launcher.executor=slurm", cwd=tmp_path,
                     env={"PATH": "/usr/bin:/bin"})
    assert_one_line_error(result, "hydra.launcher.executor=slurm", "no srun", "executor=local")
