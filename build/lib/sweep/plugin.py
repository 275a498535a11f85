"""What Hydra sees of sweep: the sweeper and launcher classes, and their configs in Hydra's ConfigStore.

Hydra imports this module at start-up (pyproject's `hydra.plugins` entry points), so it stays light: the
implementation, and Optuna with it, is imported only when a sweep starts. After `pip install`, any Hydra app can
pick the sweeper with one defaults line:

    defaults:
      - override hydra/sweeper: sweep        # hydra/sweeper/sampler=tpe|random|grid|..., hydra/sweeper/pruner=...
      - override hydra/launcher: pool        # optional: trials in worker processes, refilled as each one ends
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# The sampler group (hydra/sweeper/sampler=tpe|random|cmaes|grid|gp|qmc|nsgaii|nsgaiii) is hydra-optuna-sweeper's;
# importing its config module registers it even where Hydra's plugin scan has not reached it yet.
import hydra_plugins.hydra_optuna_sweeper.config  # noqa: F401
from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import MISSING

from sweep.errors import UserError
from sweep.launcher import PoolLauncher, PoolLauncherConf


@dataclass
class SweeperConf:
    """hydra-optuna-sweeper's settings, with the same meanings and defaults, then ours."""

    _target_: str = "sweep.plugin.OptunaSweeper"
    defaults: list = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    sampler: Any = MISSING
    direction: Any = "minimize"  # minimize | maximize, or a list of them for a multi-objective study
    storage: Any = None  # null: in memory (cannot resume); sqlite:///path.db, journal:///path.log, postgresql://...
    study_name: Optional[str] = None  # null: Optuna makes one up; same name + same storage = the same study
    n_trials: Any = 20  # trials this invocation adds (a resumed study gets this many more)
    n_jobs: Any = 2  # trials in flight at once
    max_failure_rate: Any = 0.0  # stop once more than this share of n_trials has failed (0..1)
    params: Optional[Dict[str, Any]] = None  # the search space: key: choice(...) | range(...) | interval(...) | tag(log, ...)
    custom_search_space: Optional[str] = None  # a function (cfg, trial) that suggests more parameters
    # ---- sweep's own
    pruner: Any = MISSING  # hydra/sweeper/pruner=none|median|halving|hyperband
    metric_names: Optional[List[str]] = None  # names of the objectives, shown by the report and optuna-dashboard
    check: Optional[str] = None  # a function (cfg) run on configs at the edges of the space before any trial
    timeout: Any = None  # seconds after which no new trial starts (running ones finish); null: no limit
    time_budget: Any = None  # seconds for the whole sweep: then running trials stop at their next report
    retries: Any = 0  # times a trial whose worker died is run again (resuming from its checkpoint, if it has one)
    heartbeat_interval: Any = 30  # seconds between liveness marks of running trials (database storage)
    grace_period: Any = 120  # seconds without one after which another sweep marks a running trial FAIL
    report: Any = True  # write report.html, report.csv and plots into the sweep directory at the end
    enqueue: Any = field(default_factory=list)  # configurations to try first: [{key: value, ...}, ...]


@dataclass
class NoPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"  # every trial runs to its end


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"  # stop a trial below the median of earlier ones at its step
    n_startup_trials: Any = 5  # trials that finish before any is pruned
    n_warmup_steps: Any = 0  # steps every trial reports before it can be pruned
    interval_steps: Any = 1
    n_min_trials: Any = 1


@dataclass
class HalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"  # asynchronous successive halving (ASHA)
    min_resource: Any = "auto"  # steps before the first rung; auto: from the first finished trial
    reduction_factor: Any = 4  # keep the top 1/reduction_factor at each rung
    min_early_stopping_rate: Any = 0
    bootstrap_count: Any = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"  # several halving brackets of different aggressiveness
    min_resource: Any = 1  # steps before the first rung of the most aggressive bracket
    max_resource: Any = "auto"  # a trial's full length in steps; auto: the first finished trial's
    reduction_factor: Any = 3
    bootstrap_count: Any = 0


_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="sweep", node=SweeperConf, provider="sweep")
for _name, _node in [("none", NoPrunerConf), ("median", MedianPrunerConf), ("halving", HalvingPrunerConf),
                     ("hyperband", HyperbandPrunerConf)]:
    _store.store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="sweep")
_store.store(group="hydra/launcher", name="pool", node=PoolLauncherConf, provider="sweep")


def _one_line(call):
    """Our mistakes-by-the-user become one `error:` line; Hydra would print a traceback for anything else."""
    try:
        return call()
    except UserError as e:
        raise SystemExit(f"error: {e}") from None


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from sweep.sweeper import SweepImpl

        self.impl = _one_line(lambda: SweepImpl(**settings))

    def setup(self, *, hydra_context, task_function, config) -> None:
        _one_line(lambda: self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config))

    def sweep(self, arguments: list[str]) -> None:
        return _one_line(lambda: self.impl.sweep(arguments))


__all__ = ["OptunaSweeper", "PoolLauncher"]
