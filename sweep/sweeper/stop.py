"""hydra.sweeper.stop: when the whole sweep is done before n_trials (as Ray's ExperimentPlateauStopper and W&B's
metric.target do). Running trials finish; no new one starts; the summary says why.

    stop: {target: 0.98}    the best value reached 0.98 (at least, or at most when minimizing)
    stop: {trials: 20}      20 finished trials in a row without a better value
    stop: {seconds: 600}    600 s without a better value
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial, TrialState

from sweep.checks import check, integer, number, seconds
from sweep.errors import UserError

RULES = {"target": number(), "trials": integer(low=1), "seconds": seconds()}


@dataclass
class StopRule:
    maximize: bool
    target: float | None = None
    trials: int | None = None
    seconds: float | None = None
    best: float | None = None
    since: int = 0  # finished trials since the best improved
    best_at: float = field(default_factory=time.monotonic)

    @classmethod
    def of(cls, settings: dict | None, directions: list[str]) -> "StopRule | None":
        if not settings:
            return None
        unknown = sorted(set(settings) - set(RULES))
        if unknown:
            raise UserError(f"hydra.sweeper.stop.{unknown[0]} is not a stop rule; the rules are {', '.join(RULES)}")
        if len(directions) > 1:
            raise UserError("hydra.sweeper.stop: a multi-objective study has no single best value to stop on")
        for key, value in settings.items():
            check(f"hydra.sweeper.stop.{key}", value, RULES[key])
        return cls(directions[0] == "maximize", **settings)

    def judge(self, trial: FrozenTrial) -> str | None:
        """Why the sweep should stop now that `trial` has finished, or None."""
        if trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value):
            better = self.best is None or (trial.value > self.best if self.maximize else trial.value < self.best)
            if better:
                self.best, self.since, self.best_at = trial.value, 0, time.monotonic()
            else:
                self.since += 1
        elif trial.state.is_finished():
            self.since += 1
        if self.target is not None and self.best is not None and (
                self.best >= self.target if self.maximize else self.best <= self.target):
            return f"hydra.sweeper.stop.target={self.target:g} reached ({self.best:g})"
        if self.trials is not None and self.since >= self.trials:
            return f"hydra.sweeper.stop.trials: {self.since} trials without a better value"
        if self.seconds is not None and time.monotonic() - self.best_at >= self.seconds:
            return f"hydra.sweeper.stop.seconds: {time.monotonic() - self.best_at:.0f} s without a better value"
        return None
