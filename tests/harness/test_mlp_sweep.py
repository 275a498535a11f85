"""End-to-end sweeps of the MLP harness on digits, through the command line a user types. (The sweeper's own
behaviour is tested on a torch-free app in tests/plugin.)"""

import json
import os
import re
import sys
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from helpers import assert_one_line_error, run
from mlp import train_cli

FAST = ["data=digits", "search=digits", "trainer.epochs=3", "hydra/sweeper/pruner=none"]


def sweep(cwd: Path, *args: str, cwd_env: dict | None = None, **kw):
    return train_cli("--multirun", *args, cwd=cwd, env=cwd_env, **kw)


def load(cwd: Path, name: str = "digits") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'multirun' / 'studies' / (name + '.db')}")


def sweep_dirs(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("multirun/*/*/study.json"))


def test_only_the_workers_import_torch(tmp_path):
    # The sweep's own process composes configs and schedules trials: torch's second of import at its start, and
    # its teardown at its end, are spent in the workers' fork server instead, once (SWEEP_PRELOAD).
    script = tmp_path / "sweep_train.py"
    script.write_text("import runpy, sys\n"
                      "if __name__ == '__main__':\n"
                      "    sys.argv = ['sweep.train', *sys.argv[1:]]\n"
                      "    try:\n"
                      "        runpy.run_module('sweep.train', run_name='__main__')\n"
                      "    finally:\n"
                      "        print('torch in the sweep process:', 'torch' in sys.modules, file=sys.stderr)\n")
    result = run([sys.executable, str(script), "--multirun", *FAST, "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.report=false", f"data.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "torch in the sweep process: False" in result.stderr, result.stderr[-2000:]
    study = load(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())["epochs_run"] == 3
               for t in study.trials)


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
    table = pd.read_csv(out / "report.csv")
    assert len(table) == 4 and {"best_epoch", "epochs_run", "param_count", "precision", "node"} <= set(table.columns)
    log = result.stderr + result.stdout
    assert re.search(r"4 trial\(s\): 4 complete, 0 pruned, 0 failed", log)
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


def test_bad_search_space_fails_before_any_training(tmp_path):
    for bad, fragment in [("model.widht=choice(1,2)", "model.widht"), ("optimizer.lr=interval(0,0.1)", "optimizer.lr")]:
        result = sweep(tmp_path, *FAST, bad)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: hydra.sweeper.params") and fragment in last, last
    assert not list(tmp_path.glob("multirun/studies/*.db"))  # not even a study was created


def test_a_sweep_without_data_is_refused_before_any_study(tmp_path):
    # CIFAR-10 is not there, and (through a proxy on a closed port) cannot be downloaded: no trial, no study.
    env = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "no_proxy": ""}
    result = sweep(tmp_path, "data.root=nowhere", "data.download=false", cwd_env=env)
    last = assert_one_line_error(result, "CIFAR-10 is not there", "data=digits", "data=imagefolder")
    assert last.startswith("error: hydra.sweeper.params: a trial with")
    assert not list(tmp_path.glob("multirun/studies/*.db"))


def test_journal_storage_command_line_space_and_a_diverging_trial_pruned_with_its_reason(tmp_path):
    # A diverged trial is pruned, not failed, so the sampler learns from it; it never counts against max_failure_rate.
    result = sweep(tmp_path, *FAST, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=journal:///{tmp_path}/j.log",
                   "hydra.sweeper.report=false", "hydra/sweeper/sampler=grid", "hydra.sweeper.max_failure_rate=0",
                   "model.depth=1", "model.width=32", "model.dropout=0.0", "optimizer=sgd", "optimizer.weight_decay=0",
                   "hydra.sweeper.params.optimizer.lr=choice(0.05, 1e12)")
    assert result.returncode == 0, result.stderr
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="digits", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    by_lr = {t.params["optimizer.lr"]: t for t in study.trials}
    assert by_lr[0.05].state == TrialState.COMPLETE
    assert by_lr[1e12].state == TrialState.PRUNED and by_lr[1e12].user_attrs["status"] == "diverged"
    assert by_lr[1e12].user_attrs["stop_reason"].startswith("pruned: training diverged")
    assert re.search(r"2 trial\(s\): 1 complete, 1 pruned, 0 failed", result.stderr + result.stdout)


def test_the_readme_demo_runs_as_written_and_quietly(tmp_path):
    import re

    from helpers import ROOT, run_block

    readme = (ROOT / "README.md").read_text()
    (install, demo) = re.search(r"python -m pip install '\.\[mlp\]' && (python -m sweep\.train [^\n]+)", readme).group(0, 1)
    result = run_block({}, demo, tmp_path)  # the package is installed already: the sweep part of the command
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert not [line for line in out.splitlines() if re.search(r"warning", line, re.I)], out[-3000:]
    assert "Sweep done: 12 trial(s)" in out and list(tmp_path.glob("multirun/*/*/report.html"))
