"""Asynchronous successive halving with promotion (ASHA, Li et al., 2020): `hydra/sweeper/pruner=asha`.

Rungs sit at steps min_resource * reduction_factor**k. A trial reaching a rung goes on when its value there is in
the top 1/reduction_factor of the values every trial reported at that rung so far (Optuna's halving rule); otherwise
it pauses: its task saves its state and ends, the trial stays RUNNING with the step it paused at, and its worker
takes other work. Whenever a worker is free, the sweep promotes the best paused trial that is now in the top
1/reduction_factor of its rung (later trials did worse), and resumes it from its checkpoint; only when none
qualifies does it start a new trial. Halving alone stops such a trial for good, however the rung fills later.

A task opts in by asking `sweep.trial().checkpoint_dir` (where to keep its state) and loading its state when
`sweep.trial().resuming`; a task that never asks cannot pause, and its trials stop as with plain halving.
"""

from __future__ import annotations

import math

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sweep.attrs import PAUSED, PROMOTED


class PromotingHalving(optuna.pruners.BasePruner):
    """The rung rule of Optuna's SuccessiveHalvingPruner, with promotion of paused trials (see the module)."""

    def __init__(self, min_resource: int = 1, reduction_factor: int = 4, min_early_stopping_rate: int = 0) -> None:
        for name, value, low in (("min_resource", min_resource, 1), ("reduction_factor", reduction_factor, 2),
                                 ("min_early_stopping_rate", min_early_stopping_rate, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}={value!r}: expected an integer >= {low}")
        self.min_resource, self.reduction_factor = min_resource, reduction_factor
        self.min_early_stopping_rate = min_early_stopping_rate

    def rung_of(self, step: int) -> int | None:
        """The rung index a step is, or None: rungs are min_resource * reduction_factor**(rate + k)."""
        if step < self.min_resource:
            return None
        k = round(math.log(step / self.min_resource, self.reduction_factor))
        if k < self.min_early_stopping_rate or self.min_resource * self.reduction_factor ** k != step:
            return None
        return k

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or self.rung_of(step) is None:
            return False
        if step <= (trial.system_attrs.get(PROMOTED) or -1):  # promoted past this rung already
            return False
        others = [t.intermediate_values[step] for t in study.get_trials(deepcopy=False)
                  if t.number != trial.number and step in t.intermediate_values]
        return not self.in_top(trial.intermediate_values[step], others, study.direction)

    def in_top(self, value: float, others: list[float], direction: StudyDirection) -> bool:
        """Optuna's halving rule: within the top len(all) // reduction_factor (the best one while fewer report).
        Li et al. let none go on while fewer report; measured on the synthetic curves (bench/curves.py, 10 seeds),
        that pausing of the first trials lost on crossing curves (`late`: 0.40 and 0.47 against 0.52 and 0.56)."""
        if math.isnan(value):
            return False
        everyone = sorted([value, *(v for v in others if not math.isnan(v))],
                          reverse=direction == StudyDirection.MAXIMIZE)
        keep = max(len(everyone) // self.reduction_factor, 1)
        cut = everyone[keep - 1]
        return value >= cut if direction == StudyDirection.MAXIMIZE else value <= cut

    def promotable(self, trials: list[FrozenTrial], paused: dict[int, int], direction: StudyDirection) -> int | None:
        """The paused trial to resume now: from the highest rung down, the best one whose value at its rung is in the
        top 1/reduction_factor of everything reported there (unlike a new arrival, it never passes alone)."""
        maximize = direction == StudyDirection.MAXIMIZE
        for step in sorted(set(paused.values()), reverse=True):
            values = {t.number: t.intermediate_values[step] for t in trials if step in t.intermediate_values
                      and not math.isnan(t.intermediate_values[step])}
            keep = len(values) // self.reduction_factor
            if keep == 0:
                continue
            top = sorted(values, key=values.get, reverse=maximize)[:keep]
            waiting = [n for n in top if paused.get(n) == step]
            if waiting:
                return waiting[0]
        return None


def paused_step(trial: FrozenTrial) -> int | None:
    """The step a RUNNING trial is paused at, or None."""
    step = trial.system_attrs.get(PAUSED)
    return step if trial.state == TrialState.RUNNING and isinstance(step, int) else None
