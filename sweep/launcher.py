"""A Hydra launcher that runs trials in a pool of worker processes and hands back one future per trial,
so the sweeper can start the next trial the moment any worker is free (instead of waiting for a batch)."""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher._core import execute_job  # the same per-job body joblib's launcher runs
from joblib.externals.loky import get_reusable_executor
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class PoolLauncher(Launcher):
    def __init__(self, n_jobs: int = 1, threads_per_job: int | None = None) -> None:
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise SystemExit(f"error: hydra.launcher.n_jobs={n_jobs!r} is invalid: expected an integer >= 1")
        self.n_jobs = n_jobs
        # k workers x threads <= cores, so parallel trials don't fight over the same cores.
        self.threads = threads_per_job or max(1, cpu_cores() // n_jobs)
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._executor = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def _start(self) -> None:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        self._executor = get_reusable_executor(
            max_workers=self.n_jobs, initializer=_limit_threads, initargs=(self.threads,), reuse=False)
        log.info("pool of %d worker process(es), %d torch thread(s) each", self.n_jobs, self.threads)

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        """Start one job; the future's result is its JobReturn."""
        if self._executor is None:
            self._start()
        log.info("\t#%d : %s", job_idx, " ".join(filter_overrides(overrides)))
        return self._executor.submit(execute_job, job_idx, list(overrides), self.hydra_context, self.config,
                                     self.task_function, 0, Singleton.get_state(), False)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        futures = [self.submit(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        return [f.result() for f in futures]

    def shutdown(self, kill: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=not kill, kill_workers=kill)
            self._executor = None


