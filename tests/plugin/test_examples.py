"""The sweeper as any Hydra app sees it: hydra-optuna-sweeper's own scenarios (its example apps and the cases of
its plugin test file, restated here against our sweeper), the trial API, and multi-objective studies.
tests/extras/test_upstream.py runs the same scenarios against hydra-optuna-sweeper side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

import sweep
from helpers import EXAMPLES, GRID, report_page, run_app
from sweep.sweeper.space import SearchSpace


def run_example(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_app(*args, cwd=cwd, script=EXAMPLES / script, timeout=600)


def results(sweep_dir: Path):
    return OmegaConf.load(sweep_dir / "optimization_results.yaml")


@pytest.mark.parametrize("override, expected", [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
    ("key=range(1,3)", IntDistribution(1, 2)),  # Hydra's range excludes its end, Optuna's includes it
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1)),
])
def test_search_space_syntax_means_what_it_means_upstream(override, expected):
    actual = SearchSpace.parse(None, [override]).distributions["key"]
    if isinstance(expected, CategoricalDistribution):
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


@pytest.mark.parametrize("overrides, space, fixed", [
    (["key=choice(1,2)"], {"key": CategoricalDistribution([1, 2])}, {}),
    (["key=5"], {}, {"key": "5"}),
    (["key1=choice(1,2)", "key2=5"], {"key1": CategoricalDistribution([1, 2])}, {"key2": "5"}),
    (["key1=choice(1,2)", "key2=5", "key3=range(1,3)"],
     {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 2)}, {"key2": "5"}),
])
def test_plain_values_fix_a_key_and_sweeps_search_it(overrides, space, fixed):
    got = SearchSpace.parse(None, overrides)
    assert (got.distributions, got.fixed) == (space, fixed)


@pytest.mark.parametrize("with_commandline", [True, False])
def test_sphere_example(tmp_path, with_commandline):
    storage = f"sqlite:///{tmp_path / 'sphere.db'}"
    args = ["--multirun", f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
            "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=sphere-test",
            "hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.seed=123", "~z"]
    if with_commandline:
        args += ["x=choice(0, 1, 2)", "y=0"]  # y fixed: out of the space
    result = run_example("sphere.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = results(tmp_path / "out")
    best = optuna.load_study(study_name="sphere-test", storage=storage).best_trial
    assert found.name == "optuna" and found.best_params["x"] == best.params["x"] and found.best_value == best.value
    if with_commandline:
        assert "y" not in found.best_params and "y" not in best.params
    else:
        assert found.best_params["y"] == best.params["y"]
    # TPE's search quality, as upstream checks it: the 95th percentile over 1000 seeds.
    assert found.best_value <= 2.27


@pytest.mark.parametrize("n_trials", [10, 1])
def test_grid_sampler(tmp_path, n_trials):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "grid.yaml").write_text(GRID.format(sweeper="sweep"))
    result = run_example("sphere.py", "--multirun", f"--config-dir={conf}", "--config-name=grid",
                         f"hydra.sweep.dir={tmp_path / 'out'}", f"hydra.sweeper.n_trials={n_trials}",
                         "hydra.sweeper.n_jobs=1", f"hydra.sweeper.storage=sqlite:///{tmp_path / 'grid.db'}",
                         cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = results(tmp_path / "out")
    x, y, z = found.best_params["x"], found.best_params["y"], found.best_params["z"]
    if n_trials >= 8:  # the whole grid: 2 x 2 x 2
        assert found.best_value == 1 and abs(x) == 1 and y == 0
    else:
        assert x in (-1, 1) and y in (-1, 0)
    assert z in ("foo", "bar")


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


@pytest.mark.parametrize("with_commandline", [True, False])
def test_multi_objective_example_writes_a_pareto_front(tmp_path, with_commandline):
    args = ["--multirun", f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.job.chdir=True", "hydra.sweeper.n_trials=20",
            "hydra.sweeper.n_jobs=1", "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123"]
    if with_commandline:
        args += ["x=range(0, 5)", "y=range(0, 3)"]
    result = run_example("multi_objective.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = results(tmp_path / "out")
    assert found.name == "optuna" and len(found.solutions) >= 2
    steps = {0} if with_commandline else {0, 0.5}
    for a in found.solutions:
        assert a.params["x"] % 1 in steps and a.params["y"] % 1 in steps
        assert all(not _dominates(list(b["values"]), list(a["values"])) for b in found.solutions)
    table = pd.read_csv(tmp_path / "out" / "report.csv")
    assert {"f1", "f2", "pareto"} <= set(table.columns)
    assert table["pareto"].sum() == len(found.solutions) and table["pareto"].iloc[: len(found.solutions)].all()
    assert "Pareto front" in report_page(tmp_path / "out")
    assert (tmp_path / "out" / "pareto.png").stat().st_size > 10_000


def test_custom_search_space_example(tmp_path):
    result = run_example("custom_search_space.py", "--multirun", f"hydra.sweep.dir={tmp_path / 'out'}",
                         "hydra.job.chdir=True", "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=1",
                         "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=123",
                         "max_z_difference_from_x=0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    best = results(tmp_path / "out").best_params
    assert abs(best["x"] - best["z"]) <= 0.3 and 0 <= best["+w"] <= 1


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failure_rate(tmp_path, max_failure_rate):
    result = run_example("sphere.py", "--multirun", f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.job.chdir=True",
                         "hydra.sweeper.n_trials=20", "hydra.sweeper.n_jobs=2", "hydra/sweeper/sampler=random",
                         "hydra.sweeper.sampler.seed=123", f"hydra.sweeper.max_failure_rate={max_failure_rate}",
                         "+error=true", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    log = result.stdout + result.stderr
    failed = log.count("FAILED: RuntimeError: cfg.error is True")
    if max_failure_rate < 1.0:  # stops once more than half of n_trials failed, naming the task's error
        assert 10 < failed < 20 and "max_failure_rate" in result.stderr.strip().splitlines()[-1]
        assert "RuntimeError: cfg.error is True" in result.stderr.strip().splitlines()[-1]
    else:  # every trial runs; the sweep ends without a completed one
        assert failed == 20 and result.stderr.strip().splitlines()[-1] == "error: no trial completed; see the failures above"


def test_an_empty_search_space_runs_the_config_as_it_is(tmp_path):
    result = run_example("sphere.py", "--multirun", f"hydra.sweep.dir={tmp_path / 'out'}", "hydra.sweeper.n_trials=3",
                         "hydra.sweeper.params=null", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert results(tmp_path / "out").best_value == 2  # x=1, y=1
    assert len(pd.read_csv(tmp_path / "out" / "report.csv")) == 3


def test_a_task_that_returns_the_wrong_shape_fails_with_the_reason(tmp_path):
    result = run_example("multi_objective.py", "--multirun", f"hydra.sweep.dir={tmp_path / 'out'}",
                         "hydra.sweeper.n_trials=2", "hydra.sweeper.direction=minimize",
                         "hydra.sweeper.metric_names=null", cwd=tmp_path)
    assert result.returncode != 0
    assert "returned (37.0, 24.25), expected 1 value(s)" in result.stderr.strip().splitlines()[-1]


def test_outside_a_sweep_trial_is_a_quiet_stand_in():
    trial = sweep.trial()
    trial.report(0.5, 1)
    trial.set_user_attr("note", "x")
    assert trial.should_prune() is False and trial.number is None and trial.user_attrs == {"note": "x"}
    assert sweep.previous_run_dir(trial) is None


def test_inside_a_sweep_trial_reports_to_the_running_study(tmp_path):
    """The in-process launcher with in-memory storage: the task reaches the live study directly."""
    app = tmp_path / "app.py"
    app.write_text('''
import hydra, optuna, sweep

@hydra.main(config_path=None, config_name=None, **({"version_base": None} if hydra.__version__.startswith("1.3") else {}))
def main(cfg):
    trial = sweep.trial()
    assert trial is sweep.trial() and trial.params == {"+x": cfg.x}
    for step in range(1, 4):
        trial.report(cfg.x * step, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("seen", trial.number)
    return float(cfg.x)

if __name__ == "__main__":
    main()
''')
    result = subprocess.run(
        [sys.executable, str(app), "--multirun", "+x=range(0,6)", "hydra/sweeper=sweep", "hydra.sweeper.n_trials=6",
         "hydra.sweeper.direction=maximize", "hydra/sweeper/sampler=grid", "hydra/sweeper/pruner=median",
         "hydra.sweeper.pruner.n_startup_trials=1", f"hydra.sweep.dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(tmp_path / "out" / "report.csv")
    assert len(table) == 6 and {"steps", "value"} <= set(table.columns)
    assert table["value"].tolist() == sorted(table["value"].tolist(), reverse=True)  # maximize: best first
    assert "learning_curves.png" in report_page(tmp_path / "out")


def test_a_minimize_study_is_ranked_and_plotted_the_right_way_round(tmp_path):
    from sweep.sweeper import report

    study = optuna.create_study(direction="minimize")
    for loss in (3.0, 1.0, 2.0):
        trial = study.ask({"lr": FloatDistribution(1e-3, 1.0, log=True)})
        for step in range(1, 4):
            trial.report(loss + 1 / step, step)
        study.tell(trial, loss)
    table = report.write_report(study, tmp_path)
    assert table["value"].tolist() == [1.0, 2.0, 3.0]
    assert report.best_so_far(study.trials, maximize=False)["best"].tolist() == [3.0, 1.0, 1.0]
    from sweep.sweeper.summary import pruning_savings

    assert pruning_savings(study.trials, study.trials) == (0, 9)
    assert pruning_savings(study.trials, study.trials, max_resource=5) == (0, 15)
