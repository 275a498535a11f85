"""A sampler that learns from every epoch: TPE fitted on the trials' values at one budget, pruned trials included.

Optuna's TPE ranks a pruned trial below every completed one, whatever it reached before it was stopped
(optuna#4211); with halving, most trials are pruned, and the model learns only from the few survivors. BOHB's
answer (Falkner et al., 2018): fit the model at the largest budget (step) that enough trials reached, on each
trial's best value up to that budget, so a trial stopped there counts as much as one that went on. Early on that
budget is a low rung; it rises as trials get further.

With `rungs="across"` every finished trial counts at the largest step it reached, scored by where it stood there
among the trials that reached that step too (a quantile, 1 = best): a model across budgets in the spirit of
Hyper-Tune and MOBSTER, on the same view. With `rungs="last"` every finished trial counts with its best value up
to the last step it reached, as Ray Tune's OptunaSearch tells TPE a stopped trial's last result.

Built on Optuna's public API: the wrapped sampler sees an in-memory study of those values instead of the sweep's.
"""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from collections import Counter
from typing import Any

import optuna
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState


class BudgetSampler(BaseSampler):
    """`sampler` (default: TPE with `constant_liar`) fitted at the largest step at least `min_trials` trials reported.

    Without intermediate values (an app that never reports) it is the wrapped sampler on the study itself."""

    def __init__(self, sampler: BaseSampler | None = None, *, min_trials: int = 10, constant_liar: bool = True,
                 rungs: str = "top", **tpe: Any) -> None:
        """`tpe`: TPESampler's own arguments (seed, n_startup_trials, ...), for the TPE made when `sampler` is None."""
        with warnings.catch_warnings():  # Optuna 4 calls constant_liar experimental; the choice is ours, not the user's
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            self._base = sampler or TPESampler(constant_liar=constant_liar, **tpe)
        if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 1:
            raise ValueError(f"min_trials={min_trials!r}: expected an integer >= 1")
        if rungs not in ("top", "across", "last"):
            raise ValueError(f"rungs={rungs!r}: expected top, across or last")
        self._min_trials, self._rungs = min_trials, rungs
        self._views: dict[int, tuple[optuna.Study, FrozenTrial]] = {}

    def reseed_rng(self) -> None:
        self._base.reseed_rng()

    def budget(self, trials: list[FrozenTrial]) -> int | None:
        """The step the model is fitted at: the largest one at least min_trials finished trials reported."""
        reached = Counter(max(t.intermediate_values) for t in trials if t.intermediate_values)
        count = 0
        for step in sorted(reached, reverse=True):
            count += reached[step]  # a trial that reached a step has a value up to every earlier one
            if count >= self._min_trials:
                return step
        return None

    def _view(self, study: optuna.Study, trial: FrozenTrial) -> tuple[optuna.Study, FrozenTrial]:
        """The study the wrapped sampler sees, and the trial being sampled as a trial of that study (samplers write
        notes on it, and constant_liar leaves it out by its number)."""
        if trial.number in self._views:
            return self._views[trial.number]
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        step = self.budget(finished)
        if step is None or len(study.directions) > 1:
            self._views = {trial.number: (study, trial)}
            return study, trial
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        view = _quiet_study("maximize" if self._rungs == "across" else study.direction)
        if self._rungs == "across":
            scored = _quantiles(finished, maximize)
        elif self._rungs == "last":
            scored = _at_last(finished, maximize)
        else:
            scored = _at_budget(finished, step, maximize)
        for t, value in scored:
            view.add_trial(optuna.trial.create_trial(params=t.params, distributions=t.distributions, value=value))
        # The running ones, for constant_liar; a trial asha paused is one too (it may go on): counted instead with its
        # value at its rung, it ended no higher on the synthetic curves (docs/benchmarks.md, "Tried ... not taken").
        for t in trials:
            if t.state == TrialState.RUNNING and t.number != trial.number and t.params:
                view.add_trial(optuna.trial.create_trial(
                    params=t.params, distributions=t.distributions, state=TrialState.RUNNING))
        view.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING))  # stands for the trial being sampled
        self._views = {trial.number: (view, view.get_trials(deepcopy=False)[-1])}
        return self._views[trial.number]

    def infer_relative_search_space(self, study, trial):
        # The space is the sweep's own: a view is rebuilt for every trial, and samplers cache the space per study.
        return self._base.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return self._base.sample_relative(*self._view(study, trial), search_space)

    def sample_independent(self, study, trial, param_name, param_distribution) -> Any:
        return self._base.sample_independent(*self._view(study, trial), param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._views.pop(trial.number, None)
        self._base.after_trial(study, trial, state, values)


def _best_up_to(t: FrozenTrial, step: int, maximize: bool) -> float | None:
    values = [v for s, v in t.intermediate_values.items() if s <= step and math.isfinite(v)]
    return (max if maximize else min)(values) if values else None


def _at_budget(trials: list[FrozenTrial], step: int, maximize: bool) -> list[tuple[FrozenTrial, float]]:
    """BOHB: each trial that reached `step`, with its best value up to it."""
    found = [(t, _best_up_to(t, step, maximize)) for t in trials if max(t.intermediate_values, default=-1) >= step]
    return [(t, v) for t, v in found if v is not None]


def _at_last(trials: list[FrozenTrial], maximize: bool) -> list[tuple[FrozenTrial, float]]:
    """Ray Tune's OptunaSearch, nearly: each trial with its best value up to the last step it reached."""
    found = [(t, _best_up_to(t, max(t.intermediate_values), maximize)) for t in trials if t.intermediate_values]
    return [(t, v) for t, v in found if v is not None]


def _quantiles(trials: list[FrozenTrial], maximize: bool) -> list[tuple[FrozenTrial, float]]:
    """Across budgets: each trial at the largest step it reached, scored by the share of the trials that reached that
    step whose best up to it was worse (ties count half): 1 is the best there, 0 the worst."""
    better = max if maximize else min

    def best_so_far(a: float | None, b: float | None) -> float | None:  # a non-finite value is no value
        return b if a is None else a if b is None else better(a, b)

    reached = []  # (trial, its last step, its steps in order, its best value up to each of them)
    for t in trials:
        if t.intermediate_values:
            steps = sorted(t.intermediate_values)
            values = (v if math.isfinite(v) else None for v in (t.intermediate_values[s] for s in steps))
            reached.append((t, steps[-1], steps, list(itertools.accumulate(values, best_so_far))))
    peers: dict[int, list[float]] = {}  # step -> the sorted bests up to it of the trials that reached it
    for step in {last for _, last, _, _ in reached}:
        at = [(bisect.bisect_right(steps, step), bests) for _, last, steps, bests in reached if last >= step]
        peers[step] = sorted(bests[i - 1] for i, bests in at if i and bests[i - 1] is not None)
    scored = []
    for t, step, _, bests in reached:
        mine, values = bests[-1], peers[step]
        if mine is None or len(values) < 2:
            continue
        below, above = bisect.bisect_left(values, mine), bisect.bisect_right(values, mine)
        worse = below if maximize else len(values) - above
        scored.append((t, (worse + 0.5 * (above - below - 1)) / (len(values) - 1)))
    return scored


def _quiet_study(direction) -> optuna.Study:
    """An in-memory study, without the line Optuna logs for each one made: a view is made per trial."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(direction=direction, storage=optuna.storages.InMemoryStorage())
    finally:
        optuna.logging.set_verbosity(level)
