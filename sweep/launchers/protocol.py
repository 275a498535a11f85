"""The one launcher protocol the sweeper's scheduler drives, whatever runs the trials.

    start(n_jobs, at_most)   start workers; the launcher answers with its `slots` (trials it runs at once)
    submit(overrides, num)   one trial -> a Future resolved with an Outcome, or raising WorkerDied
    flush()                  the scheduler has submitted all it can for now
    shutdown(kill=False)     let running trials finish, or (kill) end them now, leaving nothing running

Who decides how many trials run at once: the sweeper (hydra.sweeper.n_jobs, never more than n_trials) asks, and the
launcher answers with its slots, which may be fewer where it has a fixed capacity (the pool's GPUs x trials_per_gpu,
a Ray cluster's CPUs). n_jobs null asks for the launcher's whole capacity (DEFAULT_JOBS where it has no limit).

The pool (processes on this machine), Ray and SLURM implement it with one future per trial, so the next trial starts
the moment any one ends. Any other Hydra launcher (basic, joblib, ...) is seen through BatchAdapter, where the trials
submitted together run as one launch() call and each batch waits for its slowest trial.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)
DEFAULT_JOBS = 2  # trials at once where neither the user nor the launcher's capacity says (upstream's n_jobs)


@dataclass
class Outcome:
    """What came back from one job, and where and when it ran."""

    ret: JobReturn
    node: str = ""  # Ray's node id under Ray, else the host name
    gpus: str = ""  # the CUDA_VISIBLE_DEVICES the job was given, "" for none
    started: float | None = None  # unix time the job started in its worker
    seconds: float | None = None  # the job's own wall time


class JobFuture(Future):
    """A job's future, which also knows where the job runs ({node, gpus}) as soon as its launcher does."""

    def __init__(self) -> None:
        super().__init__()
        self.where: dict[str, str] = {}


class WorkerDied(Exception):
    """The worker running a trial (a process, a Ray worker or node, a SLURM job) ended without answering. It is the
    worker's loss, not the configuration's: the trial FAILs with this reason and hydra.sweeper.retries applies."""

    def __init__(self, why: str, node: str = "", gpus: str = ""):
        super().__init__(why)
        self.node, self.gpus = node, gpus


@runtime_checkable
class TrialLauncher(Protocol):
    slots: int
    in_sweep_process: bool  # its trials run in the sweep's own process, so an in-memory study reaches them

    def start(self, n_jobs: int | None, at_most: int | None = None) -> None: ...

    def submit(self, overrides: Sequence[str], number: int) -> Future: ...

    def flush(self) -> None: ...

    def shutdown(self, kill: bool = False) -> None: ...


def announce(number: int, overrides: Sequence[str], note: str = "") -> None:
    """The line every launcher logs for a trial it starts: the job's own overrides, not the sweeper's hydra.* ones."""
    shown = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]
    log.info("\t#%d : %s%s", number, " ".join(shown), note)


def slots_for(n_jobs: int | None, capacity: int | None, at_most: int | None = None) -> int:
    """The protocol's rule: what the sweeper asks (None: the launcher's capacity), within that capacity, and never
    more than the trials to run (at_most)."""
    slots = (capacity or DEFAULT_JOBS) if n_jobs is None else min(n_jobs, capacity) if capacity else n_jobs
    return max(1, min(slots, at_most) if at_most else slots)


class AsyncLauncher(Launcher):
    """Base of the launchers that implement TrialLauncher themselves (pool, ray_pool, slurm_pool). It also gives them
    Hydra's batch interface, for other sweepers (Hydra's basic one): workers started for one batch serve the next
    ones, and stop once no batch has come for IDLE_SECONDS (or when the process exits)."""

    slots: int = 0
    in_sweep_process = False
    IDLE_SECONDS = 3.0

    def flush(self) -> None:
        pass  # every submitted trial is on its way already

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        idle = getattr(self, "_idle", None)
        if idle is not None:
            idle.cancel()
            idle.join()
        if not self.slots:
            self.start(None)
            _keep(self)
        futures = [self.submit(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        returns = []
        for overrides, future in zip(job_overrides, futures):
            try:
                returns.append(future.result().ret)
            except WorkerDied as e:
                returns.append(JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=e))
        self._idle = threading.Timer(self.IDLE_SECONDS, self.release)
        self._idle.daemon = True
        self._idle.start()
        return returns

    def release(self) -> None:
        """Stop the workers kept between batches, if they are still up."""
        idle = getattr(self, "_idle", None)
        if idle is not None and idle is not threading.current_thread():
            idle.cancel()
        with _kept_lock:
            if self.slots:
                self.shutdown()
            _kept.discard(self)


_kept: "weakref.WeakSet[AsyncLauncher]" = weakref.WeakSet()  # launchers holding workers between Hydra batches
_kept_lock = threading.RLock()
_at_exit = False


def _keep(launcher: AsyncLauncher) -> None:
    global _at_exit
    with _kept_lock:
        if not _at_exit:
            atexit.register(release_kept)
            _at_exit = True
        _kept.add(launcher)


def release_kept() -> None:
    """Stop every launcher's workers kept between Hydra batches: at exit, or where a host process (a notebook, a
    test) is done with them."""
    for launcher in list(_kept):
        launcher.release()


class BatchAdapter:
    """Any Hydra launcher, seen through the protocol: trials submitted together run as one launch() call when the
    scheduler flushes them, so the batch waits for its slowest trial. Where they run is this machine, unless the
    launcher says otherwise; whether they share the sweep's process is the launcher's own affair (Hydra's basic one
    does)."""

    def __init__(self, launcher: Launcher):
        self.launcher = launcher
        self.slots = 0
        self.in_sweep_process = type(launcher).__name__ == "BasicLauncher"
        self._pending: list[tuple[list[str], int, Future]] = []

    def start(self, n_jobs: int | None, at_most: int | None = None) -> None:
        self.slots = slots_for(n_jobs, None, at_most)

    def submit(self, overrides: Sequence[str], number: int) -> Future:
        future: Future = Future()
        self._pending.append((list(overrides), number, future))
        return future

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for run in _consecutive(pending):  # job numbers are trial numbers, as Hydra prints them
            started = time.time()
            returns = self.launcher.launch([o for o, _, _ in run], initial_job_idx=run[0][1])
            for (_, _, future), ret in zip(run, returns):
                future.set_result(Outcome(ret, node=socket.gethostname(), gpus=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                                          started=started, seconds=None))

    def shutdown(self, kill: bool = False) -> None:
        for _, _, future in self._pending:
            future.cancel()
        self._pending = []


def _consecutive(jobs: list) -> list[list]:
    runs: list[list] = []
    for job in jobs:
        if runs and job[1] == runs[-1][-1][1] + 1:
            runs[-1].append(job)
        else:
            runs.append([job])
    return runs


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["DEFAULT_JOBS", "AsyncLauncher", "BatchAdapter", "JobFuture", "Outcome", "TrialLauncher", "WorkerDied",
           "announce", "cpu_cores", "slots_for"]
