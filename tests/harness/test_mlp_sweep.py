"""End-to-end sweeps on digits, through the command line a user types."""

import json
import os
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from helpers import start_cli, wait_for
from mlp import train_cli

FAST = ["data=digits", "search=digits", "trainer.epochs=3", "hydra/sweeper/pruner=none"]


def sweep(cwd: Path, *args: str, **kw):
    return train_cli("--multirun", *args, cwd=cwd, **kw)


def load(cwd: Path, name: str = "digits") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'multirun' / 'studies' / (name + '.db')}")


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("multirun/*/*/study.json"))


def test_sweep_records_every_trial_and_reports_it(tmp_path):
    result = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=4")
    assert result.returncode == 0, result.stderr
    study = load(tmp_path)
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for t in study.trials:
        assert len(t.intermediate_values) == 3  # every epoch was reported to Optuna
        assert 0 < t.value <= 1 and t.value == max(t.intermediate_values.values())
        run = Path(t.user_attrs["run_dir"])
        assert json.loads((run / "metrics.json").read_text())["val_accuracy"] == t.value
    (out,) = sweep_dirs(tmp_path)
    assert "best_value" in (out / "optimization_results.yaml").read_text()
    assert len(pd.read_csv(out / "report.csv")) == 4
    log = result.stderr + result.stdout
    assert re.search(r"4 trial\(s\): 4 complete, 0 pruned, 0 failed; pruning saved 0 of 12 steps", log)
    # One progress line per finished trial, and the index Hydra-style lines print is the trial number.
    assert [int(m) for m in re.findall(r"\[(\d)/4\] trial \d complete", log)] == [1, 2, 3, 4]
    assert sorted(int(m) for m in re.findall(r"#(\d+) : ", log)) == [t.number for t in study.trials]
    assert sorted(p.name for p in out.iterdir() if p.name.isdigit()) == ["0", "1", "2", "3"]
    # Workers keep their epochs to their runs' logs: the terminal shows the sweep, not four interleaved trainings.
    assert "epoch 1/3" not in log
    assert all("epoch 3/3" in (out / n / "train.log").read_text() for n in "0123")
    # Two workers by default, with the cores split between them, and the next trial starts as soon as one ends.
    cores = len(os.sched_getaffinity(0))
    for t in study.trials:
        assert json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())["threads"] == max(1, cores // 2)
    spans = sorted((t.datetime_start, t.datetime_complete) for t in study.trials)
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1))


@pytest.mark.parametrize("launcher", ["pool", pytest.param("basic", marks=pytest.mark.slow)])  # workers; in-process
def test_aggressive_pruner_prunes_and_counts_saved_epochs(tmp_path, launcher):
    result = sweep(tmp_path, "data=digits", "search=digits", "trainer.epochs=6", "hydra.sweeper.n_trials=8",
                   f"hydra/launcher={launcher}",
                   "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
                   "hydra.sweeper.pruner.n_warmup_steps=0", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0")
    assert result.returncode == 0, result.stderr
    pruned = [t for t in load(tmp_path).trials if t.state == TrialState.PRUNED]
    assert pruned, "an aggressive median pruner should stop some of 8 random trials"
    assert all(len(t.intermediate_values) < 6 for t in pruned)
    saved = sum(6 - len(t.intermediate_values) for t in pruned)
    assert f"pruning saved {saved} of 48 steps" in result.stderr + result.stdout
    reasons = {t.number: t.user_attrs["stop_reason"] for t in pruned}
    assert all(r == f"pruned at step {len(t.intermediate_values)} by median"
               for t in pruned for r in [reasons[t.number]])
    report = pd.read_csv(sweep_dirs(tmp_path)[0] / "report.csv")
    assert set(report.loc[report["state"] == "PRUNED", "reason"]) == set(reasons.values())


def test_time_budget_stops_running_trials_and_starts_no_more(tmp_path):
    # Trials far too long for the budget: each is stopped at an epoch end once the budget runs out.
    result = sweep(tmp_path, "data=digits", "search=digits", "trainer.epochs=100000", "hydra.sweeper.n_trials=6",
                   "hydra/sweeper/pruner=none", "hydra.sweeper.time_budget=10")
    trials = load(tmp_path).trials
    assert len(trials) == 2  # the first two workers' trials; nothing started after the budget
    assert all(t.state == TrialState.PRUNED and 0 < len(t.intermediate_values) < 100000 for t in trials)
    assert "stopped by hydra.sweeper.time_budget" in result.stderr + result.stdout
    (out,) = sweep_dirs(tmp_path)
    assert set(pd.read_csv(out / "report.csv")["reason"]) == {"stopped by hydra.sweeper.time_budget"}
    assert result.returncode != 0 and "time_budget=10" in result.stderr.strip().splitlines()[-1]


def test_resume_adds_trials_without_replaying_configurations(tmp_path):
    args = [*FAST, "hydra.sweeper.n_trials=3", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0",
            "hydra.sweeper.report=false"]
    assert sweep(tmp_path, *args).returncode == 0
    first = [t.params for t in load(tmp_path).trials]
    result = sweep(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    trials = load(tmp_path).trials
    assert len(trials) == 6 and [t.params for t in trials[:3]] == first
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6
    assert "3 earlier trial(s)" in result.stderr + result.stdout


@pytest.mark.slow  # also covered by test_report's sweep, which holds a diverging trial
def test_diverging_trial_is_recorded_fail_and_the_sweep_goes_on(tmp_path):
    result = sweep(tmp_path, "data=digits", "trainer.epochs=3", "hydra/sweeper/sampler=grid", "hydra.sweeper.n_trials=2",
                   "search=digits", "model.depth=1", "model.width=32", "optimizer=sgd", "model.dropout=0.0",
                   "optimizer.weight_decay=0", "optimizer.lr=choice(0.05,1e12)")
    assert result.returncode == 0, result.stderr
    by_lr = {t.params["optimizer.lr"]: t for t in load(tmp_path).trials}
    assert by_lr[0.05].state == TrialState.COMPLETE
    assert by_lr[1e12].state == TrialState.FAIL and "diverged" in by_lr[1e12].user_attrs["fail_reason"]
    report = pd.read_csv(sweep_dirs(tmp_path)[0] / "report.csv")
    assert "diverged" in report.loc[report["state"] == "FAIL", "reason"].item()


@pytest.mark.slow  # also covered by test_plugin's test_failure_rate
def test_too_many_failures_stop_the_sweep_with_a_clear_error(tmp_path):
    result = sweep(tmp_path, "data=digits", "trainer.epochs=2", "search=digits", "hydra/sweeper/sampler=grid",
                   "hydra.sweeper.max_failure_rate=0", "hydra.sweeper.n_jobs=1", "model.depth=1", "model.width=32", "optimizer=sgd",
                   "model.dropout=0.0", "optimizer.weight_decay=0", "optimizer.lr=choice(1e12,1e13)")
    assert result.returncode != 0
    assert "max_failure_rate" in result.stderr.strip().splitlines()[-1]
    assert len(load(tmp_path).trials) == 1  # stopped after the first failure


def test_bad_search_space_fails_before_any_training(tmp_path):
    for bad, fragment in [("model.widht=choice(1,2)", "model.widht"), ("optimizer.lr=interval(0,0.1)", "optimizer.lr")]:
        result = sweep(tmp_path, *FAST, bad)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: hydra.sweeper.params") and fragment in last, last
    assert not list(tmp_path.glob("multirun/studies/*.db"))  # not even a study was created


def test_a_bad_sweeper_setting_is_one_line_on_the_command_line(tmp_path):
    result = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=1", "hydra.sweeper.direction=sideways")
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == ("error: hydra.sweeper.direction='sideways' is invalid: expected minimize, maximize, or a list "
                    "of them (one per objective)")


@pytest.mark.parametrize("settings, fragment", [
    ({"direction": ["maximize", "up"]}, "hydra.sweeper.direction"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0 is invalid"),
    ({"n_jobs": True}, "hydra.sweeper.n_jobs=True is invalid"),
    ({"max_failure_rate": 2}, "hydra.sweeper.max_failure_rate=2 is invalid"),
    ({"time_budget": -1}, "hydra.sweeper.time_budget=-1 is invalid"),
    ({"metric_names": ["a", "b"]}, "one name per objective"),
    ({"enqueue": [1]}, "hydra.sweeper.enqueue"),
    ({"sampler": {"_target_": "hydra_plugins.hydra_optuna_sweeper.config.raise_motpe_removed"}}, "hydra/sweeper/sampler"),
    ({"custom_search_space": "no.such.function"}, "hydra.sweeper.custom_search_space"),
])
def test_bad_sweeper_settings_are_named(settings, fragment):
    from omegaconf import OmegaConf

    from sweep.errors import UserError
    from sweep.sweeper import SweepImpl

    settings = {"sampler": None, **settings}
    if isinstance(settings["sampler"], dict):
        settings["sampler"] = OmegaConf.create(settings["sampler"])
    with pytest.raises(UserError, match=re.escape(fragment)):
        SweepImpl(**settings)


@pytest.mark.parametrize("url, fragment", [
    ("sqlite://", "in-memory SQLite database"),
    ("postgresql://u@h:notaport/db", "is not a storage URL"),
    ("sqlite:///multirun/studies/a?b.db", "may not hold '?'"),
    ("", "is invalid"),
])
def test_bad_storage_urls_are_named(url, fragment):
    from sweep import storage
    from sweep.errors import UserError

    with pytest.raises(UserError, match=re.escape(fragment)):
        storage.parse(url)


def test_a_bad_launcher_setting_is_named():
    from sweep.launcher import PoolLauncher

    with pytest.raises(SystemExit, match=r"hydra.launcher.n_jobs=0 is invalid"):
        PoolLauncher(n_jobs=0)


@pytest.mark.slow  # also covered by test_faults' symlinked lock
def test_second_sweep_on_one_sqlite_file_is_refused(tmp_path):
    import fcntl

    db = tmp_path / "multirun" / "studies" / "digits.db"
    db.parent.mkdir(parents=True)
    with open(f"{db}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running sweep holds it
        result = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=1")
    assert result.returncode != 0
    assert "journal" in result.stderr.strip().splitlines()[-1]


def test_journal_storage_and_command_line_search_space(tmp_path):
    result = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=journal:///{tmp_path}/j.log",
                   "hydra.sweeper.report=false",
                   "hydra.sweeper.params.optimizer.lr=tag(log, interval(1e-2, 2e-2))")
    assert result.returncode == 0, result.stderr
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="digits", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    assert len(study.trials) == 2 and all(1e-2 <= t.params["optimizer.lr"] <= 2e-2 for t in study.trials)


@pytest.mark.parametrize("how", [pytest.param("ctrl-c", marks=pytest.mark.slow), "sigterm"])  # Ctrl-C: test_faults
def test_an_interrupted_sweep_marks_its_trials_failed_and_keeps_the_study_readable(tmp_path, how):
    import signal

    proc = start_cli("sweep.train", "--multirun", f"data.cache_dir={tmp_path / 'cache'}", "data=digits",
                     "search=digits", "trainer.epochs=100000", "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=none",
                     cwd=tmp_path)
    wait_for(lambda: list(tmp_path.glob("multirun/*/*/[01]/metrics.json")), "a trial's first epoch", process=proc)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the whole process group
    else:
        proc.terminate()  # `kill PID`: the sweep process alone
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "error: sweep interrupted; rerun the same command to resume the study"
    trials = load(tmp_path).trials
    assert trials and all(t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "sweep interrupted" for t in trials)
    assert (sweep_dirs(tmp_path)[0] / "report.html").exists()
