"""What Hydra loads of sweep: the sweeper and launcher classes, and (through sweep.settings) their configs.

Hydra 1.3 finds plugins only in the `hydra_plugins` namespace and only classes defined there, so these thin
classes live here; Hydra 1.4 also finds them through the package's entry points. Loading this module imports
neither Optuna nor Ray nor torch: the sweeper's implementation is imported when a sweep starts, and each
launcher imports its engine when it starts its first trial.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra.plugins.sweeper import Sweeper

from sweep import settings as _configs
from sweep.errors import one_line
from sweep.launchers import pool as _pool
from sweep.launchers import ray_pool as _ray_pool
from sweep.launchers import slurm_pool as _slurm_pool

_configs.register()


def _launcher_init(launcher, implementation: type, settings: dict) -> None:
    """A launcher's constructor as Hydra calls it: a typo (+hydra.launcher.foo=1) or a bad value is one error line."""
    one_line(lambda: implementation.__init__(launcher, **settings))


class OptunaSweeper(Sweeper):
    """hydra/sweeper=sweep: Optuna, with pruning, asynchronous trials, resume and a report."""

    def __init__(self, **settings: Any) -> None:
        from sweep.sweeper.core import SweepImpl

        # Hydra calls these three: a user's mistake ends here as one `error:` line, not a traceback.
        self.impl = one_line(lambda: SweepImpl(**settings))

    def setup(self, *, hydra_context, task_function, config) -> None:
        one_line(lambda: self.impl.setup(hydra_context=hydra_context, task_function=task_function, config=config))

    def sweep(self, arguments: list[str]) -> None:
        return one_line(lambda: self.impl.sweep(arguments))


class SweepSearchPath(SearchPathPlugin):
    """The plugin's YAML configs (the pruner group), after the app's own, so the app's presets win."""

    def manipulate_search_path(self, search_path) -> None:
        search_path.append(provider="sweep", path="pkg://sweep.plugin_conf")


class PoolLauncher(_pool.PoolLauncher):
    """hydra/launcher=pool: worker processes on this machine, pinned to GPUs when it has them."""

    def __init__(self, **settings: Any) -> None:
        _launcher_init(self, _pool.PoolLauncher, settings)


class RayPoolLauncher(_ray_pool.RayPoolLauncher):
    """hydra/launcher=ray_pool: one Ray task per trial, on a local Ray or an existing cluster."""

    def __init__(self, **settings: Any) -> None:
        _launcher_init(self, _ray_pool.RayPoolLauncher, settings)


class SlurmPoolLauncher(_slurm_pool.SlurmPoolLauncher):
    """hydra/launcher=slurm_pool: one SLURM job per trial through submitit."""

    def __init__(self, **settings: Any) -> None:
        _launcher_init(self, _slurm_pool.SlurmPoolLauncher, settings)


__all__ = ["OptunaSweeper", "PoolLauncher", "RayPoolLauncher", "SlurmPoolLauncher", "SweepSearchPath"]
