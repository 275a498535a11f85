"""Every bad setting is one `error:` line naming the setting and what is allowed, with exit code 2, before any trial
runs and before any study is created."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from helpers import assert_one_line_error, run_app
from sweep.errors import UserError
from sweep.sweeper.space import SearchSpace


@pytest.mark.parametrize("args, fragments", [
    (["hydra.launcher.gpus=abc"], ["hydra.launcher.gpus='abc' is invalid", "a list of device ids such as [0,1]"]),
    (["hydra.launcher.gpus=[0,-1]"], ["hydra.launcher.gpus=[0, -1] is invalid"]),
    (["hydra.launcher.trials_per_gpu=0"], ["hydra.launcher.trials_per_gpu=0 is invalid: expected an integer >= 1"]),
    (["+hydra.launcher.foo=1"], ["hydra.launcher.foo is not a setting of hydra/launcher=pool", "trials_per_gpu"]),
    (["+hydra.launcher.n_jobs=3"], ["hydra.launcher.n_jobs is not a setting", "hydra.sweeper.n_jobs"]),
    (["hydra/launcher=slurm_pool", "hydra.launcher.mem_gb=lots"], ["hydra.launcher.mem_gb='lots' is invalid"]),
    (["+hydra.sweeper.foo=1"], ["hydra.sweeper.foo is not a setting of the sweep sweeper", "n_trials"]),
    (["hydra.sweeper.direction=sideways"], ["hydra.sweeper.direction='sideways' is invalid"]),
    (["hydra.sweeper.storage=null"], ["hydra.sweeper.storage=null", "hydra/launcher=pool cannot reach"]),
    (["lr=interval(1.0, 0.1)"], ["lr=interval(1.0, 0.1) is invalid: its low end 1.0 is above its high end 0.1"]),
    (["width=choice(8,16)", "width=choice(32)"], ["width is given twice on the command line"]),
    (["nosuchkey=choice(1,2)"], ["hydra.sweeper.params: a trial with", "nosuchkey"]),
])
def test_bad_settings_on_the_command_line(tmp_path, args, fragments):
    result = run_app("--multirun", *args, cwd=tmp_path)
    assert_one_line_error(result, *fragments)
    assert not list(tmp_path.glob("multirun/studies/*.db"))  # not even a study was created


@pytest.mark.parametrize("settings, fragment", [
    ({"direction": ["maximize", "up"]}, "hydra.sweeper.direction"),
    ({"n_trials": 0}, "hydra.sweeper.n_trials=0 is invalid"),
    ({"n_jobs": True}, "hydra.sweeper.n_jobs=True is invalid"),
    ({"max_failure_rate": 2}, "hydra.sweeper.max_failure_rate=2 is invalid"),
    ({"time_budget": -1}, "hydra.sweeper.time_budget=-1 is invalid"),
    ({"metric_names": ["a", "b"]}, "one name per objective"),
    ({"enqueue": [1]}, "hydra.sweeper.enqueue"),
    ({"params": [1, 2]}, "hydra.sweeper.params=[1, 2] is invalid"),
    ({"sampler": {"_target_": "os.system"}}, "hydra/sweeper/sampler._target_='os.system' is not allowed"),
    ({"pruner": {"_target_": "builtins.eval"}}, "hydra/sweeper/pruner._target_='builtins.eval' is not allowed"),
    ({"sampler": {"_target_": "optuna.samplers.TPESampler", "bogus": 1}}, "hydra/sweeper/sampler (optuna.samplers"),
    ({"custom_search_space": "no.such.function"}, "hydra.sweeper.custom_search_space='no.such.function' cannot be"),
    ({"check": "no.such.function"}, "hydra.sweeper.check='no.such.function' cannot be imported"),
    ({"study_name": " "}, "hydra.sweeper.study_name=' ' is invalid"),
    ({"report": "later"}, "hydra.sweeper.report='later' is invalid: expected true, false or wait"),
])
def test_bad_sweeper_settings_are_named(settings, fragment):
    from sweep.sweeper.core import SweepImpl

    settings = {"sampler": {"_target_": "optuna.samplers.RandomSampler"}, **settings}
    settings = {k: OmegaConf.create(v) if isinstance(v, dict) else v for k, v in settings.items()}
    with pytest.raises(UserError, match=re.escape(fragment)):
        SweepImpl(**settings)


@pytest.mark.parametrize("line, fragment", [
    ("lr=tag(log, interval(0, 1))", "lr=tag(log, interval(0, 1)) is invalid: a log scale needs a low end above 0"),
    ("lr=tag(log, interval(-1, 1))", "a log scale needs a low end above 0, not -1"),
    ("width=range(5, 1)", "width=range(5, 1) is invalid: range(5, 1, step=1) holds no value"),
    ("width=range(1, 5, step=0)", "width=range(1, 5, step=0) is invalid: range() needs a non-zero step"),
    ("lr=tag(foo, interval(0.1, 1))", "unknown tag 'foo'; the sweeper knows tag(log, ...)"),
    ("lr=choice()", "lr="),
])
def test_search_space_mistakes_name_their_key(line, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)) as e:
        SearchSpace.parse(None, [line])
    assert "hydra.sweeper.params" in str(e.value)


def test_a_huge_value_never_makes_a_huge_error_line():
    from sweep.errors import shorten

    line = shorten("x" * 1_500_000)
    assert len(line) < 600 and line.endswith("(1500000 characters)")


def test_values_that_would_change_type_in_an_override_are_quoted():
    space = SearchSpace.parse(None, ["a=choice('true', 'x y', plain, 1, 0.5)"])
    assert space.overrides({"a": "true"}) == ["a='true'"]
    assert space.overrides({"a": "x y"}) == ["a='x y'"]
    assert space.overrides({"a": "plain"}) == ["a=plain"]
    assert space.overrides({"a": 0.5}) == ["a=0.5"]


def test_ray_and_submitit_missing_are_named(monkeypatch):
    import importlib.util

    from sweep.launchers.ray_pool import RayPoolLauncher
    from sweep.launchers.slurm_pool import SlurmPoolLauncher

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("ray", "submitit") else real(name, *a))
    with pytest.raises(UserError, match=re.escape("pip install 'sweep[ray]'")):
        RayPoolLauncher()
    with pytest.raises(UserError, match=re.escape("pip install 'sweep[slurm]'")):
        SlurmPoolLauncher(executor="local")
    with pytest.raises(UserError, match=re.escape("hydra.launcher.num_gpus_per_trial=-1 is invalid")):
        RayPoolLauncher(num_gpus_per_trial=-1)
    with pytest.raises(UserError, match=re.escape("hydra.launcher.executor='pbs' is invalid")):
        SlurmPoolLauncher(executor="pbs")
