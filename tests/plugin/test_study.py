"""The study across sweeps: resume without replay, heartbeats on every storage (the journal too), retries that
resume, the time budget, pruning from the workers, a lost database, and one folder per study."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from helpers import alive, assert_one_line_error, children, run_app, start_app, trials, wait_for

STUDY = "curve"


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / f"{STUDY}.db"


def _journal(path: Path) -> list:
    if not path.exists():
        return []
    try:
        return optuna.load_study(study_name=STUDY, storage=optuna.storages.JournalStorage(JournalFileBackend(str(path)))).trials
    except Exception:  # not created yet
        return []


def test_resume_adds_trials_without_replaying_configurations(tmp_path):
    args = ["--multirun", "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0"]
    assert run_app(*args, cwd=tmp_path).returncode == 0
    first = [t.params for t in trials(_db(tmp_path), STUDY)]
    result = run_app(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = trials(_db(tmp_path), STUDY)
    assert len(found) == 6 and [t.params for t in found[:3]] == first
    assert len({json.dumps(t.params, sort_keys=True) for t in found}) == 6
    assert "3 earlier trial(s)" in result.stdout + result.stderr


def test_workers_prune_through_the_study_and_the_sweep_counts_what_it_saved(tmp_path):
    result = run_app("--multirun", "hydra.sweeper.n_trials=8", "hydra/sweeper/pruner=median", "epochs=6",
                     "hydra.sweeper.pruner.n_startup_trials=1", "hydra/sweeper/sampler=random", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = trials(_db(tmp_path), STUDY)
    pruned = [t for t in found if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["stop_reason"] == f"pruned at step {len(t.intermediate_values)} by median"
                          for t in pruned)
    saved = sum(6 - len(t.intermediate_values) for t in pruned)
    assert f"pruning saved {saved} of 48 steps" in result.stdout + result.stderr
    logs = [(Path(t.user_attrs["run_dir"]) / "console.log").read_text() for t in pruned]
    assert all("TrialPruned" in log and "Traceback" not in log for log in logs), logs  # a decision, not a fault


def test_a_time_budget_stops_running_trials_and_starts_no_more(tmp_path):
    result = run_app("--multirun", "hydra.sweeper.n_trials=6", "epochs=100000", "epoch_seconds=0.05",
                     "hydra.sweeper.time_budget=3", cwd=tmp_path)
    found = trials(_db(tmp_path), STUDY)
    assert len(found) == 2  # the first two trials; nothing started after the budget
    assert all(t.state == TrialState.PRUNED and t.user_attrs["stop_reason"] == "stopped by hydra.sweeper.time_budget"
               for t in found)
    assert_one_line_error(result, "no trial completed within hydra.sweeper.time_budget=3 seconds")


def test_a_killed_sweeps_trial_is_failed_by_the_next_sweep_on_a_journal_and_its_retry_resumes(tmp_path):
    journal = tmp_path / "study.log"
    common = ["--multirun", f"hydra.sweeper.storage=journal:///{journal}", "hydra.sweeper.n_trials=1",
              "hydra.sweeper.n_jobs=1"]
    proc = start_app(*common, "epochs=100000", "epoch_seconds=0.05", "hydra.sweeper.heartbeat_interval=1", cwd=tmp_path)
    wait_for(lambda: any(len(t.intermediate_values) >= 3 for t in _journal(journal)), "three epochs", process=proc)
    workers = children(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the sweep alone, as the OOM killer or a lost terminal would
    proc.communicate(timeout=30)
    wait_for(lambda: not [p for p in workers if alive(p)], "the workers to die with their sweep", timeout=30)
    (orphan,) = _journal(journal)
    assert orphan.state == TrialState.RUNNING  # nobody has noticed yet
    beat = orphan.system_attrs["sweep:heartbeat"]
    wait_for(lambda: time.time() - beat > 1.5, "the heartbeat to go stale")
    # How far the dead run got depends on when the kill landed (later on a busy machine): read it, then ask for more.
    done = int((Path(orphan.user_attrs["run_dir"]) / "last_epoch").read_text())
    assert done >= 3

    result = run_app(*common, f"epochs={done + 3}", "hydra.sweeper.grace_period=1", "hydra.sweeper.retries=1",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, retry = _journal(journal)
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"] == "its sweep stopped sending heartbeats"
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == first.params
    assert retry.state == TrialState.COMPLETE and sorted(retry.intermediate_values) == list(range(1, done + 4))
    # The retry went on from the dead run's last epoch, not from epoch 1, and trained only the epochs after it.
    retry_dir = Path(retry.user_attrs["run_dir"])
    assert int((retry_dir / "resumed_from").read_text()) == done
    assert (retry_dir / "epochs_run").read_text().split() == [str(e) for e in range(done + 1, done + 4)]
    assert re.search(r"Trial 0: its sweep stopped sending heartbeats", result.stdout + result.stderr)


def test_a_deleted_sqlite_file_stops_the_sweep_with_one_line(tmp_path):
    proc = start_app("--multirun", "hydra.sweeper.n_trials=2", "epochs=100000", "epoch_seconds=0.05", cwd=tmp_path)
    wait_for(lambda: any(t.intermediate_values for t in trials(_db(tmp_path), STUDY)), "a trial training", process=proc)
    for p in _db(tmp_path).parent.glob(f"{STUDY}.db*"):
        if not p.name.endswith(".lock"):
            p.unlink()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: lost the study's storage") and "was deleted" in last
    assert not _db(tmp_path).exists()  # nobody quietly made a fresh, empty study there


def test_the_sqlite_lock_holds_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "multirun").mkdir()
    (tmp_path / "multirun" / "studies").symlink_to(real)
    with open(real / f"{STUDY}.db.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a sweep writing real/curve.db holds it
        result = run_app("--multirun", "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert_one_line_error(result, "in use by another running sweep", "journal:///")


def test_two_studies_never_share_a_sweep_folder(tmp_path):
    folder = tmp_path / "same"
    first = run_app("--multirun", f"hydra.sweep.dir={folder}", "hydra.sweeper.n_trials=2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = (folder / "0" / "last_epoch").stat().st_mtime_ns
    other = run_app("--multirun", f"hydra.sweep.dir={folder}", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.study_name=other", cwd=tmp_path)
    assert_one_line_error(other, f"hydra.sweep.dir={folder} holds the runs of another study (curve)")
    assert (folder / "0" / "last_epoch").stat().st_mtime_ns == before
    assert not [s for s in optuna.get_all_study_names(f"sqlite:///{tmp_path}/multirun/studies/other.db")]
    again = run_app("--multirun", f"hydra.sweep.dir={folder}", "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # the same study resumes into its folder: new numbers, new runs
    assert sorted(p.name for p in folder.iterdir() if p.name.isdigit()) == ["0", "1", "2"]


def test_two_studies_started_together_into_one_folder_one_is_refused(tmp_path):
    folder = tmp_path / "same"
    procs = [start_app("--multirun", f"hydra.sweep.dir={folder}", "hydra.sweeper.n_trials=2",
                       f"hydra.sweeper.study_name=s{i}", cwd=tmp_path) for i in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], results
    (refused,) = [err for _, err, code in results if code == 2]
    assert "holds the runs of another study" in refused.strip().splitlines()[-1]
    owner = json.loads((folder / "study.json").read_text())["study_name"]
    assert len([p for p in folder.iterdir() if p.name.isdigit()]) == 2 and owner in ("s0", "s1")


def test_a_journal_whose_last_record_was_torn_loses_nothing_and_the_rerun_goes_on(tmp_path):
    journal = tmp_path / "study.log"
    args = ["--multirun", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=journal:///{journal}"]
    assert run_app(*args, cwd=tmp_path).returncode == 0
    complete = len(_journal(journal))
    data = journal.read_bytes()
    last = data[:-1].rfind(b"\n") + 1
    journal.write_bytes(data[:last] + data[last:][: (len(data) - last) // 2])  # a crash in mid-write
    result = run_app(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "its last record was cut off" in result.stdout + result.stderr
    assert len(list(tmp_path.glob("study.log.torn-*"))) == 1
    found = _journal(journal)  # Optuna's own reader gets through the whole journal
    assert len(found) >= complete + 1 and sum(t.state == TrialState.COMPLETE for t in found) >= 3
    report = run_app("--multirun", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage=journal:///{journal}",
                     cwd=tmp_path)
    assert report.returncode == 0, report.stderr


@pytest.mark.parametrize("first, then, kinds", [
    ("width=choice(8,16)", "width=interval(8.0,32.0)", ["choice(8, 16)", "float interval(8.0, 32.0)"]),
    ("lr=interval(0.01,1.0)", "lr=int(interval(1,5))", ["float interval(0.01, 1.0)", "int interval(1, 5)"]),
])
def test_resuming_with_a_parameter_of_another_kind_is_one_line_before_any_trial(tmp_path, first, then, kinds):
    assert run_app("--multirun", "hydra.sweeper.n_trials=1", first, cwd=tmp_path).returncode == 0
    result = run_app("--multirun", "hydra.sweeper.n_trials=1", then, cwd=tmp_path)
    assert_one_line_error(result, f"hydra.sweeper.params.{first.split('=')[0]}", *kinds)
    assert len(trials(_db(tmp_path), STUDY)) == 1  # no trial was created, none left RUNNING


def test_a_result_no_float_can_hold_fails_its_trial_and_the_sweep_goes_on(tmp_path):
    result = run_app("--multirun", "hydra.sweeper.n_trials=2", "hydra.sweeper.max_failure_rate=0.5",
                     "returns=" + "1" + "0" * 400,
                     cwd=tmp_path)
    found = trials(_db(tmp_path), STUDY)
    assert [t.state for t in found] == [TrialState.FAIL, TrialState.FAIL]
    assert all("not a finite number" in t.user_attrs["fail_reason"] for t in found)
    assert_one_line_error(result, "failed")


def test_a_trial_whose_sweep_died_before_its_first_heartbeat_is_failed_and_retried_by_the_next(tmp_path):
    import sqlite3

    assert run_app("--multirun", "hydra.sweeper.n_trials=1", cwd=tmp_path).returncode == 0
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{_db(tmp_path)}")
    done = study.trials[0]
    # What a SIGKILL right after the trial's creation leaves: RUNNING, no heartbeat, started long ago.
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params=done.params,
                                              distributions=done.distributions))
    with sqlite3.connect(_db(tmp_path)) as db:
        db.execute("UPDATE trials SET datetime_start = '2020-01-01 00:00:00' WHERE number = 1")
    result = run_app("--multirun", "hydra.sweeper.n_trials=1", "hydra.sweeper.retries=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = trials(_db(tmp_path), STUDY)
    assert found[1].state == TrialState.FAIL and "heartbeats" in found[1].user_attrs["fail_reason"]
    retried = [t for t in found if t.system_attrs.get("failed_trial") == 1]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert not [t for t in found if t.state == TrialState.RUNNING]


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_sweeps_killed_at_random_moments_leave_nothing_running_and_run_nothing_twice(tmp_path, storage):
    import random

    url = f"sqlite:///{_db(tmp_path)}" if storage == "sqlite" else f"journal:///{tmp_path / 'study.log'}"
    args = ["--multirun", f"hydra.sweeper.storage={url}", "hydra/sweeper/sampler=random"]
    rng = random.Random(0)
    for k in range(20):
        proc = start_app(*args, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'killed' / str(k)}",
                         cwd=tmp_path)
        time.sleep(rng.uniform(0.5, 4.0))  # a random moment: imports, opening the study, asking, running, telling
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    result = run_app(*args, "hydra.sweeper.n_trials=3", "hydra.sweeper.grace_period=1",
                     "hydra.sweeper.heartbeat_interval=1", "epochs=10", "epoch_seconds=0.1",
                     f"hydra.sweep.dir={tmp_path / 'final'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = (trials(_db(tmp_path), STUDY) if storage == "sqlite" else _journal(tmp_path / "study.log"))
    assert not [t.number for t in found if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get("fail_reason") for t in found if t.state == TrialState.FAIL)
    runs = [p.parent.name for p in tmp_path.glob("*/*/*/span")] + [p.parent.name for p in tmp_path.glob("final/*/span")]
    assert len(runs) == len(set(runs))  # every trial number ran in one folder, once


def test_callbacks_are_called_after_each_trial_and_one_that_raises_is_turned_off(tmp_path):
    record = tmp_path / "record.txt"
    result = run_app("--multirun", "hydra.sweeper.n_trials=3", "hydra.sweeper.n_jobs=1",
                     f"hydra.sweeper.callbacks=[{{_target_:curve_callbacks.Broken}},"
                     f"{{_target_:curve_callbacks.Record,path:'{record}'}}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert record.read_text().splitlines() == [f"curve {n} COMPLETE" for n in range(3)]
    said = [line for line in (result.stdout + result.stderr).splitlines() if "curve_callbacks.Broken" in line]
    assert len(said) == 1 and "the tracker is down" in said[0] and "turned off" in said[0]


@pytest.mark.parametrize("callbacks, fragment", [
    ("[{_target_:no_such_module.Callback}]", "hydra.sweeper.callbacks[0]._target_=no_such_module.Callback cannot be created"),
    ("[{_target_:builtins.int,x:1}]", "hydra.sweeper.callbacks[0]._target_=builtins.int cannot be created"),
    ("[1]", "hydra.sweeper.callbacks=[1] is invalid"),
])
def test_a_callback_that_cannot_be_made_is_one_line_before_any_trial(tmp_path, callbacks, fragment):
    result = run_app("--multirun", f"hydra.sweeper.callbacks={callbacks}", cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert not _db(tmp_path).exists()


def test_a_sweep_stops_early_when_its_stop_rule_says_so_and_says_why(tmp_path):
    reached = run_app("--multirun", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1",
                      "hydra.sweeper.stop={target:0.0}", cwd=tmp_path)
    assert reached.returncode == 0, reached.stderr
    assert len(trials(_db(tmp_path), STUDY)) == 1
    assert "stopped early: hydra.sweeper.stop.target=0 reached" in reached.stdout + reached.stderr
    plateau = run_app("--multirun", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1",
                      "hydra.sweeper.stop={trials:2}", f"hydra.sweep.dir={tmp_path / 'plateau'}",
                      "hydra.sweeper.enqueue=[{lr:0.1,width:32},{lr:0.001,width:8},{lr:0.001,width:16}]", cwd=tmp_path)
    assert plateau.returncode == 0, plateau.stderr
    assert len(trials(_db(tmp_path), STUDY)) == 1 + 3
    assert "stopped early: hydra.sweeper.stop.trials: 2 trials without a better value" in plateau.stdout + plateau.stderr


def test_an_enqueued_configuration_runs_once_even_when_listed_twice_or_swept_again(tmp_path):
    enqueue = "hydra.sweeper.enqueue=[{lr:0.01,width:8},{lr:0.01,width:8},{lr:0.2,width:32}]"
    for n in (2, 1):  # the second sweep's one trial is the sampler's, not the first enqueued one again
        result = run_app("--multirun", f"hydra.sweeper.n_trials={n}", enqueue, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    found = [t.params for t in trials(_db(tmp_path), STUDY)]
    assert found[:2] == [{"lr": 0.01, "width": 8}, {"lr": 0.2, "width": 32}] and len(found) == 3
    assert found[2]["lr"] not in (0.01, 0.2)


def test_an_unknown_stop_rule_is_one_line(tmp_path):
    result = run_app("--multirun", "hydra.sweeper.stop={patience:3}", cwd=tmp_path)
    assert_one_line_error(result, "hydra.sweeper.stop.patience is not a stop rule", "target, trials, seconds")


def test_a_warm_start_adds_another_studys_completed_trials_before_the_first_new_one(tmp_path):
    db = f"sqlite:///{tmp_path / 'other.db'}"
    first = run_app("--multirun", "hydra.sweeper.n_trials=3", f"hydra.sweeper.storage={db}",
                    "hydra.sweeper.study_name=other", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    warm = f"hydra.sweeper.warm_start={{storage:'{db}',study_name:other}}"
    result = run_app("--multirun", "hydra.sweeper.n_trials=2", warm, f"hydra.sweep.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = trials(_db(tmp_path), STUDY)
    added = [t for t in found if "warm_start_from" in t.user_attrs]
    assert [t.user_attrs["warm_start_from"] for t in added] == [0, 1, 2] and [t.number for t in added] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in added) and len(found) == 5
    assert "Warm start: 3 completed trial(s) of study 'other' added" in result.stdout + result.stderr
    again = run_app("--multirun", "hydra.sweeper.n_trials=1", warm, f"hydra.sweep.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert again.returncode == 0 and len(trials(_db(tmp_path), STUDY)) == 6  # a resumed study is not warmed twice


@pytest.mark.parametrize("args, fragment", [
    (["hydra.sweeper.warm_start={storage:'sqlite:///other.db',study_name:nowhere}"], "no study named 'nowhere'"),
    (["hydra.sweeper.warm_start={storage:'sqlite:///other.db',study_name:other}", "width=interval(8.0,32.0)"],
     "has width as choice(8, 16, 32), this sweep as float interval(8.0, 32.0)"),
    (["hydra.sweeper.warm_start={storage:'sqlite:///other.db',study_name:other}", "width=16"],
     "has the parameter width, which this sweep's space lacks"),
    (["hydra.sweeper.warm_start={study:other}"], "hydra.sweeper.warm_start is invalid"),
])
def test_a_warm_start_that_cannot_be_used_is_one_line(tmp_path, args, fragment):
    assert run_app("--multirun", "hydra.sweeper.n_trials=1", "hydra.sweeper.storage=sqlite:///other.db",
                   "hydra.sweeper.study_name=other", cwd=tmp_path).returncode == 0
    result = run_app("--multirun", *args, cwd=tmp_path)
    assert_one_line_error(result, "hydra.sweeper.warm_start", fragment)
    assert not _db(tmp_path).exists() or not trials(_db(tmp_path), STUDY)
