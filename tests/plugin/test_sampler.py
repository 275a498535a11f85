"""The budget sampler: TPE fitted on every trial's value at the largest epoch enough trials reached, pruned ones too."""

from __future__ import annotations

import math
import random

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from helpers import assert_one_line_error, run_app, trials
from sweep.attrs import PAUSED
from sweep.sweeper.sampler import BudgetSampler, _quantiles

SPACE = {"x": FloatDistribution(0.0, 1.0)}


class Seen(optuna.samplers.RandomSampler):
    """A sampler that keeps the trials of the study it was asked with."""

    def __init__(self):
        super().__init__(seed=0)
        self.seen = []

    def sample_independent(self, study, trial, param_name, param_distribution):
        self.seen = [(t.state, t.params.get("x"), t.value) for t in study.get_trials(deepcopy=False)
                     if t.number != trial.number]
        return super().sample_independent(study, trial, param_name, param_distribution)


def _trial(x: float, curve: list[float], state=TrialState.COMPLETE):
    return create_trial(params={"x": x}, distributions=SPACE, state=state,
                        value=max(curve) if state == TrialState.COMPLETE else None,
                        intermediate_values=dict(enumerate(curve, start=1)))


def test_pruned_trials_count_at_the_largest_epoch_enough_trials_reached():
    seen = Seen()
    study = optuna.create_study(direction="maximize", sampler=BudgetSampler(seen, min_trials=4))
    study.add_trial(_trial(0.1, [0.2, 0.3, 0.4, 0.5]))                  # finished: 4 epochs
    study.add_trial(_trial(0.2, [0.25, 0.35, 0.45, 0.46]))
    study.add_trial(_trial(0.3, [0.6, 0.7], TrialState.PRUNED))         # a fast start, stopped at epoch 2
    study.add_trial(_trial(0.4, [0.1, 0.15, 0.05], TrialState.PRUNED))  # reached epoch 3; its best by then counts
    study.add_trial(_trial(0.5, [0.05], TrialState.PRUNED))             # stopped before the budget: left out
    study.add_trial(create_trial(params={"x": 0.6}, distributions=SPACE, state=TrialState.RUNNING))
    study.ask(SPACE)
    # Only 2 trials reached epoch 4 and 3 reached epoch 3, so the model is fitted at epoch 2, where 4 are.
    assert BudgetSampler(min_trials=4).budget(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
    assert sorted(seen.seen, key=lambda s: s[1]) == [
        (TrialState.COMPLETE, 0.1, 0.3), (TrialState.COMPLETE, 0.2, 0.35), (TrialState.COMPLETE, 0.3, 0.7),
        (TrialState.COMPLETE, 0.4, 0.15), (TrialState.RUNNING, 0.6, None)]  # the running one, for constant_liar


def test_a_trial_asha_paused_is_left_to_constant_liar_as_a_running_one():
    seen = Seen()
    study = optuna.create_study(direction="maximize", sampler=BudgetSampler(seen, min_trials=2))
    study.add_trial(_trial(0.1, [0.2, 0.3, 0.4, 0.5]))
    study.add_trial(_trial(0.2, [0.25, 0.35], TrialState.PRUNED))
    study.add_trial(create_trial(params={"x": 0.3}, distributions=SPACE, state=TrialState.RUNNING,
                                 intermediate_values={1: 0.9}, system_attrs={PAUSED: 1}))
    study.ask(SPACE)
    assert sorted(seen.seen, key=lambda s: s[1]) == [
        (TrialState.COMPLETE, 0.1, 0.3), (TrialState.COMPLETE, 0.2, 0.35), (TrialState.RUNNING, 0.3, None)]


def test_the_budget_rises_as_trials_get_further_and_minimizing_keeps_the_lowest_value():
    seen = Seen()
    study = optuna.create_study(direction="minimize", sampler=BudgetSampler(seen, min_trials=2))
    study.add_trial(_trial(0.1, [0.9, 0.5, 0.7], TrialState.PRUNED))
    study.add_trial(_trial(0.2, [0.8, 0.6, 0.4, 0.3], TrialState.PRUNED))
    study.add_trial(_trial(0.3, [0.4], TrialState.PRUNED))
    study.ask(SPACE)
    assert sorted(seen.seen, key=lambda s: s[1]) == [(TrialState.COMPLETE, 0.1, 0.5), (TrialState.COMPLETE, 0.2, 0.4)]


def test_across_rungs_every_trial_counts_by_where_it_stood_at_its_last_epoch():
    seen = Seen()
    study = optuna.create_study(direction="minimize", sampler=BudgetSampler(seen, min_trials=2, rungs="across"))
    study.add_trial(_trial(0.1, [0.9, 0.5, 0.7], TrialState.PRUNED))  # at epoch 3: worse than 0.2's 0.4
    study.add_trial(_trial(0.2, [0.8, 0.6, 0.4, 0.3]))                # at epoch 4: alone there, so it is not scored
    study.add_trial(_trial(0.3, [0.4], TrialState.PRUNED))            # at epoch 1: best of the three there
    study.ask(SPACE)
    # The view maximizes a quantile among the trials that reached the same epoch: 1 best, 0 worst.
    assert sorted(seen.seen, key=lambda s: s[1]) == [(TrialState.COMPLETE, 0.1, 0.0), (TrialState.COMPLETE, 0.3, 1.0)]


def test_last_rungs_every_trial_counts_with_its_best_value_by_its_last_epoch():
    seen = Seen()
    study = optuna.create_study(direction="minimize", sampler=BudgetSampler(seen, min_trials=2, rungs="last"))
    study.add_trial(_trial(0.1, [0.9, 0.5, 0.7], TrialState.PRUNED))  # stopped at epoch 3, its best by then
    study.add_trial(_trial(0.2, [0.8, 0.6, 0.4, 0.3]))                # finished
    study.add_trial(_trial(0.3, [math.nan], TrialState.PRUNED))       # diverged at once: nothing to count
    study.add_trial(_trial(0.4, [0.4], TrialState.PRUNED))            # stopped at epoch 1
    study.ask(SPACE)
    assert sorted(seen.seen, key=lambda s: s[1]) == [
        (TrialState.COMPLETE, 0.1, 0.5), (TrialState.COMPLETE, 0.2, 0.3), (TrialState.COMPLETE, 0.4, 0.4)]


def test_the_plugins_budget_sampler_models_the_parameters_together():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sweep.settings import BudgetSamplerConf

    sampler = instantiate(OmegaConf.structured(BudgetSamplerConf))
    study = optuna.create_study(sampler=sampler)
    for x in (0.2, 0.4):
        study.add_trial(create_trial(params={"x": x, "y": x}, distributions={**SPACE, "y": SPACE["x"]}, value=x))
    assert set(sampler.infer_relative_search_space(study, study.trials[-1])) == {"x", "y"}  # multivariate TPE


def test_an_unknown_rungs_is_refused():
    with pytest.raises(ValueError, match="rungs='bottom': expected top, across or last"):
        BudgetSampler(rungs="bottom")


@pytest.mark.parametrize("maximize", [True, False])
def test_across_rungs_scores_agree_with_their_definition_on_random_curves(maximize):
    # The scores are computed from sorted values per epoch (a sweep asks for them before every trial); here they
    # are checked against the definition, trial by trial: the share of the trials that reached its last epoch
    # whose best up to it was worse, ties counting half. Gaps, late starts and non-finite values included.
    rng = random.Random(0)
    better = max if maximize else min
    for _ in range(100):
        curves = []
        for _ in range(rng.randint(0, 40)):
            steps = sorted(rng.sample(range(1, 12), rng.randint(0, 8)))
            curves.append({s: rng.choice([math.nan, math.inf, round(rng.random(), 1)]) if rng.random() < 0.1
                           else round(rng.random(), 1) for s in steps})
        found = [create_trial(params={"x": 0.5}, distributions=SPACE, state=TrialState.PRUNED, intermediate_values=c)
                 for c in curves]
        for i, t in enumerate(found):
            t.number = i

        def best(c, step):
            values = [v for s, v in c.items() if s <= step and math.isfinite(v)]
            return better(values) if values else None

        expected = []
        for i, c in enumerate(curves):
            if not c:
                continue
            last = max(c)
            peers = [v for d in curves if d and max(d) >= last and (v := best(d, last)) is not None]
            mine = best(c, last)
            if mine is None or len(peers) < 2:
                continue
            worse = sum((v < mine) if maximize else (v > mine) for v in peers) + 0.5 * (peers.count(mine) - 1)
            expected.append((i, worse / (len(peers) - 1)))
        got = [(t.number, score) for t, score in _quantiles(found, maximize)]
        assert [(i, pytest.approx(v)) for i, v in expected] == got


def test_without_reported_epochs_the_wrapped_sampler_sees_the_study_itself():
    seen = Seen()
    study = optuna.create_study(sampler=BudgetSampler(seen, min_trials=1))
    study.add_trial(create_trial(params={"x": 0.5}, distributions=SPACE, value=1.0))
    study.add_trial(create_trial(params={"x": 0.7}, distributions=SPACE, state=TrialState.PRUNED))
    study.ask(SPACE)
    assert seen.seen == [(TrialState.COMPLETE, 0.5, 1.0), (TrialState.PRUNED, 0.7, None)]


def test_a_sweep_with_the_budget_sampler_and_halving_learns_from_its_pruned_trials(tmp_path):
    result = run_app("--multirun", "hydra/sweeper/sampler=budget", "hydra.sweeper.sampler.min_trials=3",
                     "hydra.sweeper.sampler.n_startup_trials=3", "hydra/sweeper/pruner=halving", "epochs=8",
                     "hydra.sweeper.n_trials=12", "hydra.sweeper.n_jobs=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = trials(tmp_path / "multirun" / "studies" / "curve.db", "curve")
    assert len(found) == 12 and {t.state for t in found} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert len({t.params["lr"] for t in found}) == 12
    assert "created in memory" not in result.stdout + result.stderr  # the sampler's views are made quietly


@pytest.mark.parametrize("setting, named, allowed", [("min_trials=0", "min_trials=0", "integer >= 1"),
                                                     ("rungs=bottom", "rungs='bottom'", "top, across or last")])
def test_a_bad_budget_setting_is_one_line_naming_the_sampler(tmp_path, setting, named, allowed):
    result = run_app("--multirun", "hydra/sweeper/sampler=budget", f"hydra.sweeper.sampler.{setting}", cwd=tmp_path)
    assert_one_line_error(result, "hydra/sweeper/sampler", named, allowed)
