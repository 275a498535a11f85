"""The SLURM launcher: one submitit job per trial, with a future per job, so the allocation stays busy: the next
trial is submitted the moment any job ends, not when a whole array does.

A job that is preempted, times out or is killed fails its trial with SLURM's reason; hydra.sweeper.retries then
queues it again, and an app that keeps a last.pt (sweep.train does) resumes from it. submitit's local executor
(executor: local) runs the same jobs as processes on this machine, for laptops and tests.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import shutil
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Sequence

from sweep.errors import UserError, first_line
from sweep.checks import validate
from sweep.launchers.job import Payload, run_job
from sweep.launchers.protocol import AsyncLauncher, Outcome, WorkerDied, announce, slots_for
from sweep.settings import SlurmPoolLauncherConf

log = logging.getLogger(__name__)
COMMON = {"timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name"}  # submitit's own
POLL_SECONDS = 1.0  # how often running jobs are checked (submitit caches SLURM's answers itself)


class SlurmPoolLauncher(AsyncLauncher):
    def __init__(self, **settings: Any) -> None:
        validate("hydra.launcher", SlurmPoolLauncherConf, settings, "hydra/launcher=slurm_pool")
        if importlib.util.find_spec("submitit") is None:
            raise UserError("hydra/launcher=slurm_pool needs submitit, which is not installed here: "
                            "pip install 'sweep[slurm]'")
        conf = {**vars(SlurmPoolLauncherConf()), **settings}
        conf.pop("_target_", None)
        self.executor_name, self.folder = conf.pop("executor"), conf.pop("submitit_folder")
        self.settings = {k: v for k, v in conf.items() if v is not None}
        self._jobs: dict[Any, tuple[Future, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._executor, self.slots = None, 0
        self._watcher: threading.Thread | None = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        self._payload = Payload.of(hydra_context, config, task_function)

    def start(self, n_jobs: int | None, at_most: int | None = None) -> None:
        import submitit
        from omegaconf import OmegaConf

        if self._executor is not None:
            return
        self.slots = slots_for(n_jobs, None, at_most)
        name = self.executor_name
        if name == "slurm" and shutil.which("srun") is None:
            raise UserError("hydra.launcher.executor=slurm: this machine has no SLURM (no srun on the PATH); run "
                            "the sweep on a SLURM login node, or set hydra.launcher.executor=local")
        folder = self.folder or str(Path(str(self.config.hydra.sweep.dir)) / ".submitit" / "%j")
        # Job folders of this sweep alone: submitit's local executor names jobs by process id, and a result file
        # left in a reused sweep folder under an id that comes round again would be unpickled as a new job's result.
        token = uuid.uuid4().hex[:12]
        folder = folder.replace("%j", f"{token}-%j") if "%j" in folder else str(Path(folder) / f"{token}-%j")
        # No requeueing by submitit: a timed-out or preempted job fails its trial, and the sweeper's retries decide.
        executor = submitit.AutoExecutor(folder=folder, cluster=name, **{f"{name}_max_num_timeout": 0})
        params = {}
        for key, value in self.settings.items():
            value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            if key in COMMON:
                params[key] = value
            elif name == "slurm":
                params[f"slurm_{key}"] = value
            elif key not in ("signal_delay_s", "additional_parameters", "srun_args") and value not in ({}, []):
                log.warning("hydra.launcher.%s applies to SLURM only; the local executor ignores it", key)
        try:
            executor.update_parameters(**params)
        except Exception as e:
            raise UserError(f"hydra/launcher=slurm_pool: {first_line(e)}") from None
        self._executor = executor
        self._stop.clear()  # started again after a shutdown (Hydra's basic sweeper, batch after batch)
        log.info("submitit %s executor: one job per trial, %d at a time; job files in %s", name, self.slots,
                 folder.replace("%j", "<job id>"))
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="slurm-pool-watch")
        self._watcher.start()

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            sweep_pid = os.getpid() if self.executor_name == "local" else None
            with _ctrl_c_ignored_by_children(self.executor_name == "local"):
                job = self._executor.submit(_submitit_job, self._payload, job_idx, list(overrides), sweep_pid)
        except Exception as e:  # sbatch refused it: a bad partition, no such account
            future.set_exception(UserError(f"hydra/launcher=slurm_pool: the job was not accepted: {first_line(e)}"))
            return future
        announce(job_idx, overrides, f" (job {job.job_id})")
        with self._lock:
            self._jobs[job] = (future, job_idx)
        return future

    def _watch(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            with self._lock:
                jobs = list(self._jobs.items())
            for job, (future, idx) in jobs:
                try:
                    if not job.done():
                        continue
                except Exception as e:  # sacct unreachable for a moment: ask again next round
                    log.debug("job %s state unknown: %s", job.job_id, first_line(e))
                    continue
                with self._lock:
                    self._jobs.pop(job, None)
                try:
                    future.set_result(job.result())
                except Exception as e:  # timed out, preempted, cancelled, killed: the job never answered
                    state = getattr(job, "state", "UNKNOWN")
                    why = first_line(e).split(" has not produced any output")[0]
                    future.set_exception(WorkerDied(f"{self.executor_name} job {job.job_id} ended {state}: {why}"[:300]))

    def shutdown(self, kill: bool = False) -> None:
        with self._lock:
            jobs = list(self._jobs.items())
            self._jobs.clear()
        for job, (future, _) in jobs:
            try:
                job.cancel(check=False)
            except Exception as e:
                log.warning("job %s not cancelled: %s", job.job_id, first_line(e))
            if not future.done():
                future.set_exception(WorkerDied("the sweep stopped; job cancelled"))
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self._executor, self.slots = None, 0


def _submitit_job(payload: bytes, idx: int, overrides: list[str], sweep_pid: int | None = None) -> Outcome:
    import cloudpickle

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's: it cancels its jobs itself
    if sweep_pid is not None:  # a local job: it ends with the sweep, however the sweep ends
        _die_with(sweep_pid)
    return run_job(cloudpickle.loads(payload), idx, overrides, "file")


@contextlib.contextmanager
def _ctrl_c_ignored_by_children(local: bool):
    """submitit's local executor starts a controller process per job in the sweep's process group, so a Ctrl-C in
    the terminal reaches it too and it prints a KeyboardInterrupt traceback. Started with Ctrl-C ignored (inherited
    through fork and exec), it leaves Ctrl-C to the sweep, which cancels its jobs itself."""
    if not local or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:  # a killed sweep whose parent has not reaped it yet is a zombie
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _die_with(pid: int) -> None:
    def watch() -> None:
        while _alive(pid):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="sweep-watch").start()


__all__ = ["SlurmPoolLauncher"]
