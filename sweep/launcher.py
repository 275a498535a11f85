"""The pool launcher: trials run in worker processes, and the sweeper gets one future per trial, so the next trial
starts the moment any worker is free instead of when the slowest trial of a batch ends.

Each worker is a process of its own with a thread here that feeds it. A worker that dies (out of memory, kill -9)
fails only its own trial, with the signal as the reason, and is replaced; the others go on. Workers die with the
sweep: each holds the read end of a pipe whose only write end is the sweep's, and kills itself when that closes,
which the kernel does however the sweep ends. Ctrl-C belongs to the sweep, which then stops its workers, so
workers ignore SIGINT.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher

log = logging.getLogger(__name__)


@dataclass
class PoolLauncherConf:
    _target_: str = "sweep.launcher.PoolLauncher"
    n_jobs: Any = "${oc.select:hydra.sweeper.n_jobs,1}"  # worker processes, one trial each
    threads_per_job: Any = None  # CPU threads per worker (torch, OpenMP, BLAS); null: cores / n_jobs
    console: Optional[str] = "file"  # file: what a trial prints goes to its run's console.log | terminal


class WorkerDied(Exception):
    """The worker process running a trial ended without answering."""


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class PoolLauncher(Launcher):
    def __init__(self, n_jobs: Any = 1, threads_per_job: Any = None, console: Any = "file") -> None:
        for key, value, ok, allowed in [
            ("n_jobs", n_jobs, isinstance(n_jobs, int) and not isinstance(n_jobs, bool) and n_jobs >= 1,
             "an integer >= 1"),
            ("threads_per_job", threads_per_job, threads_per_job is None or (
                isinstance(threads_per_job, int) and not isinstance(threads_per_job, bool) and threads_per_job >= 1),
             "null or an integer >= 1"),
            ("console", console, console in ("file", "terminal"), "file or terminal"),
        ]:
            if not ok:
                raise SystemExit(f"error: hydra.launcher.{key}={value!r} is invalid: expected {allowed}")
        self.n_jobs = n_jobs
        # k workers x threads <= cores, so parallel trials don't fight over the same cores.
        self.threads = threads_per_job or max(1, cpu_cores() // n_jobs)
        self.console = console
        self._jobs: queue.Queue = queue.Queue()
        self._slots: list[threading.Thread] = []
        self._workers: dict[int, Any] = {}  # slot -> (process, connection)
        self._lock = threading.Lock()
        self._closing = False
        self._ctx = None
        self._lifeline = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        import cloudpickle
        from hydra.core.singleton import Singleton

        self.config = config
        self._task_module = sys.modules.get(getattr(task_function, "__module__", ""), None)
        # Sent once to each worker, which unpickles it (importing the task's modules) before its first trial.
        self._payload = cloudpickle.dumps((hydra_context, config, task_function, Singleton.get_state(), self.threads))

    def start(self) -> None:
        """Start the workers; they warm up (imports, torch) while the sweeper prepares its first trials."""
        if self._slots:
            return
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Starting %d worker process(es), %d CPU thread(s) each; trials start as soon as one is free",
                 self.n_jobs, self.threads)
        for slot in range(self.n_jobs):
            thread = threading.Thread(target=self._serve, args=(slot,), daemon=True, name=f"pool-slot-{slot}")
            thread.start()
            self._slots.append(thread)

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        """Queue one job; the future's result is its JobReturn, or WorkerDied."""
        self.start()
        shown = [o for o in overrides if not o.lstrip("+~").startswith("hydra.")]  # the job's own overrides
        log.info("\t#%d : %s", job_idx, " ".join(shown))
        future: Future = Future()
        self._jobs.put((future, job_idx, list(overrides)))
        return future

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        futures = [self.submit(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        return [f.result() for f in futures]

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers: let them finish their trial, or (kill) end them now."""
        if not self._slots:
            return
        self._closing = True
        for _ in self._slots:
            self._jobs.put(None)
        with self._lock:
            workers = list(self._workers.values())
        if kill and self._lifeline is not None:
            self._lifeline[1].close()  # every worker ends itself at once
        for proc, conn in workers:
            if kill and proc.is_alive():
                proc.kill()
        for thread in self._slots:
            thread.join(timeout=None if not kill else 10)
        for proc, _ in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if self._lifeline is not None:
            self._lifeline[1].close()
            self._lifeline = None
        self._slots = []

    # ------------------------------------------------------------ the thread that feeds one worker

    def _context(self):
        import multiprocessing as mp

        # Workers share the cores: OpenMP threads that sleep while they wait, instead of spinning, keep a busy
        # machine from slowing every trial several times over (bench/threads.py). An explicit setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # Not fork: a forked copy of a process with threads (torch's, ours) can deadlock. A fork server starts
        # clean, imports the task's module once, and forks each worker from there: one slow import, not n_jobs.
        if "forkserver" not in mp.get_all_start_methods():
            return mp.get_context("spawn")
        ctx = mp.get_context("forkserver")
        module = getattr(self._task_module, "__name__", None)
        ctx.set_forkserver_preload([module] if module else [])  # "__main__" for a task defined in a script
        # A worker forked from the server re-runs a `python -m` main module that the server already imported,
        # and runpy warns about it on the terminal; the server's interpreter flags are copied from ours.
        if "ignore::RuntimeWarning:runpy" not in sys.warnoptions:
            sys.warnoptions.append("ignore::RuntimeWarning:runpy")
        return ctx

    def _spawn(self, slot: int):
        with self._lock:
            if self._ctx is None:
                self._ctx = self._context()
            if self._lifeline is None:
                self._lifeline = self._ctx.Pipe(duplex=False)  # (read end for the workers, write end kept here)
        ctx = self._ctx
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(there, self._lifeline[0]), name=f"sweep-worker-{slot}",
                           daemon=False)
        proc.start()
        there.close()
        here.send_bytes(self._payload)
        with self._lock:
            self._workers[slot] = (proc, here)
        return proc, here

    def _serve(self, slot: int) -> None:
        from multiprocessing.connection import wait

        proc, conn = self._spawn(slot)
        while True:
            job = self._jobs.get()
            if job is None:
                break
            future, idx, overrides = job
            if not future.set_running_or_notify_cancel():
                continue
            if not proc.is_alive():  # died while idle: start a fresh one for this job
                proc, conn = self._spawn(slot)
            try:
                conn.send((idx, overrides, self.console))
                wait([conn, proc.sentinel])
                future.set_result(conn.recv())
            except (EOFError, OSError) as e:
                proc.join(timeout=5)
                code = proc.exitcode
                why = (f"worker died: signal {-code}" if code is not None and code < 0
                       else f"worker exited with code {code}" if code is not None else f"worker lost ({e})")
                future.set_exception(WorkerDied(why))
                if not self._closing:
                    log.warning("Trial #%d: %s; starting a new worker", idx, why)
                    proc, conn = self._spawn(slot)
        try:
            conn.send(None)  # finish and exit
        except OSError:
            pass


# ------------------------------------------------------------ the worker process


def _die_with_sweep(lifeline) -> None:
    """End this process when the sweep ends, however it ends: the lifeline's write end closes with the sweep."""
    def watch() -> None:
        try:
            lifeline.poll(None)  # readable only at end of file: nobody writes to it
        finally:
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="lifeline").start()
    if sys.platform.startswith("linux"):  # and with the process that started it (a fork server, or the sweep)
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker_main(conn, lifeline) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    _die_with_sweep(lifeline)
    import cloudpickle

    hydra_context, config, task_function, singleton_state, threads = cloudpickle.loads(conn.recv_bytes())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # for anything the task starts
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    while True:
        message = conn.recv()
        if message is None:
            return
        idx, overrides, console = message
        try:
            ret = _run_job(hydra_context, config, task_function, singleton_state, idx, overrides, console)
        except Exception as e:  # the job's config would not compose: the trial fails, the worker stays
            from hydra.core.utils import JobStatus

            ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=e)
        conn.send(_picklable(ret))


def _run_job(hydra_context, config, task_function, singleton_state, idx: int, overrides: list[str],
             console: str) -> JobReturn:
    """One job, as Hydra's own launchers run it: the job's config, its output folder, then the task."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals
    from omegaconf import OmegaConf, open_dict

    setup_globals()
    Singleton.set_state(singleton_state)
    job_config = hydra_context.config_loader.load_sweep_config(config, overrides)
    with open_dict(job_config):
        job_config.hydra.job.id = f"{job_config.hydra.job.name}_{idx}"
        job_config.hydra.job.num = idx
    HydraConfig.instance().set_config(job_config)
    if console != "file":
        return run_job(hydra_context=hydra_context, task_function=task_function, config=job_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    run_dir = Path(OmegaConf.select(job_config, "hydra.sweep.dir")) / str(OmegaConf.select(job_config, "hydra.sweep.subdir"))
    run_dir.mkdir(parents=True, exist_ok=True)
    with _output_to(run_dir / "console.log") as out:
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=job_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        error = job_error(ret)
        if error is not None:  # the sweep shows one line; the whole story stays with the run
            import traceback

            out.write("".join(traceback.format_exception(error)))
    return ret


class _output_to:
    """Point this process's stdout and stderr (the file descriptors, so C code and tqdm follow) into a file."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self.file = open(self.path, "a", buffering=1)
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self.file

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.file.close()
        return False


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed job raised. JobReturn.return_value would re-raise it after printing to stderr;
    Hydra has no public read of it, so this is the one place that reaches for the private field."""
    value = getattr(ret, "_return_value", None)
    return value if isinstance(value, BaseException) else None


def _picklable(ret: JobReturn) -> JobReturn:
    """A JobReturn the sweep can unpickle: an exception that will not pickle becomes its one-line description."""
    import pickle

    from sweep.errors import first_line

    try:
        pickle.loads(pickle.dumps(ret))
        return ret
    except Exception:
        value = ret._return_value
        ret._return_value = RuntimeError(first_line(value)) if isinstance(value, BaseException) else repr(value)
        return ret


__all__ = ["PoolLauncher", "PoolLauncherConf", "WorkerDied", "cpu_cores", "job_error"]
