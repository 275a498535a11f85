"""sweep: an Optuna sweeper for any Hydra app (pruning, trials that start as soon as a worker is free, resume,
crash safety, a report), and the Hydra-configured MLP training it began with.

In a task:  `trial = sweep.trial()`, then `trial.report(value, step)` and `trial.should_prune()`.
"""

from sweep.errors import UserError
from sweep.sweeper.task import LocalTrial, previous_run_dir, trial

__all__ = ["LocalTrial", "UserError", "previous_run_dir", "trial"]
