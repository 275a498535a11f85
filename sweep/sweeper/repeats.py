"""hydra.sweeper.repeats: a noisy objective makes the best trial partly luck. Once the search is done, the best
`repeats` configurations run `repeats` times in all, each run with another seed in hydra.sweeper.seed_key, and
the report ranks them by their mean with its spread.

A repeat is an ordinary trial of the study, made when a worker is free for it, with its configuration's parameters
and two user attributes: the trial it repeats and its seed. So a repeat lives and dies like any trial (heartbeats,
retries), and the next sweep on the study finds the repeats already there and runs only the missing ones: nothing
lost, nothing run twice.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from sweep.attrs import REPEAT_OF, SEED

DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)  # a FAIL one runs again


@dataclass(frozen=True)
class Repeat:
    origin: int  # the trial whose configuration runs again
    params: dict
    distributions: dict
    seed: int


def seeds(base: object, repeats: int) -> list[int]:
    """The seeds of the extra runs: after the configured one when it is an integer, else 1, 2, ..."""
    start = base if isinstance(base, int) and not isinstance(base, bool) else 0
    return [start + i for i in range(1, repeats)]


def plan(trials: list[FrozenTrial], maximize: bool, repeats: int, base_seed: object) -> list[Repeat]:
    """The runs still missing for the best `repeats` configurations that are not repeats themselves."""
    if repeats < 2:
        return []
    origins = [t for t in trials if t.state == TrialState.COMPLETE and REPEAT_OF not in t.user_attrs
               and t.value is not None and math.isfinite(t.value)]
    origins.sort(key=lambda t: (-t.value if maximize else t.value, t.number))
    have: dict[int, set] = {}
    for t in trials:
        if t.user_attrs.get(REPEAT_OF) is not None and t.state in DONE:
            have.setdefault(t.user_attrs[REPEAT_OF], set()).add(t.user_attrs.get(SEED))
    return [Repeat(t.number, dict(t.params), dict(t.distributions), s) for t in origins[:repeats]
            for s in seeds(base_seed, repeats) if s not in have.get(t.number, set())]


def ranking(trials: list[FrozenTrial], maximize: bool) -> list[dict]:
    """Each repeated configuration with the mean, spread and count of its completed runs (the first run included),
    best mean first."""
    by_number = {t.number: t for t in trials}
    rows = []
    for origin in sorted({t.user_attrs.get(REPEAT_OF) for t in trials} & set(by_number)):
        values = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None and (
            t.number == origin or t.user_attrs.get(REPEAT_OF) == origin)]
        if values:
            rows.append({"trial": origin, "mean": statistics.fmean(values),
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0, "runs": len(values),
                         "first run": by_number[origin].value, "params": dict(by_number[origin].params)})
    rows.sort(key=lambda r: (-r["mean"] if maximize else r["mean"], r["trial"]))
    return rows
