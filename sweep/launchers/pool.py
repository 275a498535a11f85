"""The pool launcher: trials run in worker processes on this machine, and the sweeper gets one future per trial, so
the next trial starts the moment any worker is free instead of when the slowest trial of a batch ends.

On a machine with GPUs each worker is pinned to one GPU with CUDA_VISIBLE_DEVICES (its trial sees it as cuda:0),
and no GPU carries more than trials_per_gpu trials at once. A worker that dies (out of memory, kill -9) fails only
its own trial, with the signal as the reason, and a new worker takes its slot (and its GPU). Workers die with the
sweep: each holds the read end of a pipe whose only write end is the sweep's, and kills itself when that closes,
which the kernel does however the sweep ends. Ctrl-C belongs to the sweep, which then stops its workers.
"""

from __future__ import annotations

import inspect
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Sequence

from sweep.errors import UserError
from sweep.checks import validate
from sweep.launchers.job import Payload, run_job
from sweep.launchers.protocol import AsyncLauncher, JobFuture, Outcome, WorkerDied, announce, cpu_cores, slots_for
from sweep.settings import PoolLauncherConf

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """The CUDA GPUs this process may use, without importing a framework: CUDA_VISIBLE_DEVICES when set, else what
    nvidia-smi lists; none on a machine without NVIDIA's driver."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


_pools_running = 0  # pools in this process that may be using multiprocessing's fork server
_pools_lock = threading.Lock()


def _stop_fork_server() -> None:
    """End multiprocessing's fork server and resource tracker once no pool needs them, so nothing of a sweep outlives
    it (in a notebook or a test process the server would keep the task's imports in memory; either restarts on
    demand). The server is killed, not asked to exit: it holds nothing to save, a sweep that stops while its workers
    warm up ends at once instead of after the server's imports, and a server that imported torch took 1.5 s to exit.
    multiprocessing has no public call for this; tests/plugin/test_private_api.py fails if it changes."""
    from multiprocessing import forkserver, resource_tracker

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for helper in (server, getattr(resource_tracker, "_resource_tracker", None)):
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            stop()


class PoolLauncher(AsyncLauncher):
    def __init__(self, **settings: Any) -> None:
        validate("hydra.launcher", PoolLauncherConf, settings, "hydra/launcher=pool")
        conf = PoolLauncherConf(**settings)
        self.trials_per_gpu, self.threads_per_job, self.console = conf.trials_per_gpu, conf.threads_per_job, conf.console
        self.gpus = None if conf.gpus is None else [str(g) for g in conf.gpus]
        self._jobs: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._workers: dict[int, Any] = {}  # slot -> (process, connection)
        self._lock = threading.Lock()
        self._closing = False
        self._ctx = None
        self._lifeline = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        task = inspect.unwrap(task_function)  # the app's own function, not the sweeper's guard around it
        self._task_module = sys.modules.get(getattr(task, "__module__", ""), None)
        self._payload = Payload.of(hydra_context, config, task_function)

    def start(self, n_jobs: int | None, at_most: int | None = None) -> None:
        """Start the workers: as many as the sweeper asks, within len(gpus) x trials_per_gpu on GPUs. They warm up
        (imports, the task's module) while the sweeper prepares."""
        global _pools_running
        if self._threads:
            return
        self.plan(n_jobs, at_most)
        folder = Path(str(self.config.hydra.sweep.dir))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"hydra.sweep.dir={folder}: cannot create it ({e.strerror})") from None
        with _pools_lock:
            _pools_running += 1
        self._prepare()
        on = (f" on GPU(s) {','.join(sorted(set(self.slot_gpus), key=str))}, "
              f"{self.trials_per_gpu} trial(s) per GPU" if any(self.slot_gpus) else "")
        log.info("Starting %d worker process(es)%s, %d CPU thread(s) each; trials start as soon as one is free",
                 self.slots, on, self.threads)
        for slot in range(self.slots):
            thread = threading.Thread(target=self._serve, args=(slot,), daemon=True, name=f"pool-slot-{slot}")
            thread.start()
            self._threads.append(thread)

    def plan(self, n_jobs: int | None, at_most: int | None = None) -> None:
        """The slots, the GPU of each, and the threads of each worker."""
        gpus = visible_gpus() if self.gpus is None else self.gpus
        self.slots = slots_for(n_jobs, len(gpus) * self.trials_per_gpu if gpus else None, at_most)
        # Round-robin: with fewer workers than GPU slots, the trials still spread over the GPUs; on CPUs no trial
        # piles onto a GPU it was not given.
        self.slot_gpus = [gpus[i % len(gpus)] for i in range(self.slots)] if gpus else [""] * self.slots
        # Workers share the cores: k workers x threads <= cores, so parallel trials don't fight over them.
        self.threads = self.threads_per_job or max(1, cpu_cores() // self.slots)

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        """Queue one job; the future's result is its Outcome, or WorkerDied."""
        announce(job_idx, overrides)
        future = JobFuture()
        self._jobs.put((future, job_idx, list(overrides)))
        return future

    def shutdown(self, kill: bool = False) -> None:
        global _pools_running
        if not self._threads:
            return
        self._closing = True
        while True:  # jobs nobody took: cancelled, not run
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        with self._lock:
            workers = list(self._workers.values())
            if kill and self._lifeline is not None:
                self._lifeline[1].close()  # every worker ends itself at once
                self._lifeline = None
        for proc, _ in workers:
            if kill and proc.is_alive():
                _kill_group(proc.pid)  # the worker and whatever its trial started
                proc.kill()
        if kill and self._ctx is not None and self._ctx.get_start_method() == "forkserver":
            with _pools_lock:
                alone = _pools_running == 1
            if alone:  # a worker still starting would hold its thread until the server's imports end
                _stop_fork_server()
        for thread in self._threads:
            thread.join(timeout=None if not kill else 10)
        for proc, _ in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        with self._lock:
            if self._lifeline is not None:
                self._lifeline[1].close()
                self._lifeline = None
        self._threads = []
        self.slots = 0
        self._closing = False
        with _pools_lock:
            _pools_running -= 1
            if _pools_running == 0 and self._ctx is not None and self._ctx.get_start_method() == "forkserver":
                _stop_fork_server()
        self._ctx = None

    # ------------------------------------------------------------ the thread that feeds one worker

    def _context(self):
        import multiprocessing as mp

        # Workers share the cores: OpenMP threads that sleep while they wait, instead of spinning, keep a busy
        # machine from slowing every trial several times over (bench/threads.py). An explicit setting wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # Not fork: a forked copy of a process with threads (torch's, ours) can deadlock. A fork server starts
        # clean, imports the task's module once, and forks each worker from there: one slow import, not one per
        # worker.
        if "forkserver" not in mp.get_all_start_methods():
            return mp.get_context("spawn")
        ctx = mp.get_context("forkserver")
        module = getattr(self._task_module, "__name__", None)
        # The task's module, what it names in SWEEP_PRELOAD (what its task imports when it runs: docs/launchers.md),
        # and what every job needs: Optuna and the storage's database layer, imported once. A torch task's first
        # optimizer imports torch._dynamo (1.3 s on this project's machine): once, here, too.
        named = [m for m in getattr(self._task_module, "SWEEP_PRELOAD", ()) if isinstance(m, str)]
        heavy = ["torch._dynamo"] if "torch" in sys.modules else []
        ctx.set_forkserver_preload(list(dict.fromkeys(
            m for m in ("sweep.launchers.quiet", module, *named, "sweep.launchers.job", "sweep.sweeper.task",
                        "sweep.sweeper.storage", "optuna", "sqlalchemy", "cloudpickle", "tblib", *heavy) if m)))
        # A worker forked from the server re-runs a `python -m` main module that the server already imported,
        # and runpy warns about it on the terminal; the server's interpreter flags are copied from ours.
        if "ignore::RuntimeWarning:runpy" not in sys.warnoptions:
            sys.warnoptions.append("ignore::RuntimeWarning:runpy")
        return ctx

    def _prepare(self) -> None:
        """The fork server (and multiprocessing's resource tracker) start with Ctrl-C ignored, as the workers they
        fork will be: a Ctrl-C during their start-up is the sweep's to handle, not a traceback of theirs."""
        with self._lock:
            if self._ctx is None:
                self._ctx = self._context()
            if self._lifeline is None:
                self._lifeline = self._ctx.Pipe(duplex=False)  # (read end for the workers, write end kept here)
        if self._ctx.get_start_method() == "forkserver" and threading.current_thread() is threading.main_thread():
            from multiprocessing import forkserver

            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited through fork and exec
            try:
                forkserver.ensure_running()
            finally:
                signal.signal(signal.SIGINT, previous)

    def _spawn(self, slot: int):
        with self._lock:
            if self._closing and self._lifeline is None:
                raise WorkerDied("the sweep is stopping")
            if self._ctx is None or self._lifeline is None:
                raise WorkerDied("the pool was not started")
            lifeline = self._lifeline[0]
        here, there = self._ctx.Pipe()
        settings = (self.slot_gpus[slot], self.threads)
        proc = self._ctx.Process(target=_worker_main, args=(there, lifeline, settings),
                                 name=f"sweep-worker-{slot}", daemon=False)
        proc.start()
        there.close()
        here.send_bytes(self._payload)
        with self._lock:
            self._workers[slot] = (proc, here)
        return proc, here

    def _serve(self, slot: int) -> None:
        from multiprocessing.connection import wait

        gpus = self.slot_gpus[slot]
        try:
            proc, conn = self._spawn(slot)
        except Exception as e:  # cannot start a process at all: every job this slot takes fails with the reason
            proc, conn, broken = None, None, e
        else:
            broken = None
        while True:
            job = self._jobs.get()
            if job is None:
                break
            future, idx, overrides = job
            if not future.set_running_or_notify_cancel():
                continue
            if broken is not None:
                future.set_exception(WorkerDied(f"no worker process could be started: {broken}", gpus=gpus))
                continue
            if not proc.is_alive():  # died while idle: start a fresh one for this job
                proc, conn = self._spawn(slot)
            future.where = {"node": socket.gethostname(), "gpus": gpus}
            try:
                conn.send((idx, overrides, self.console))
                wait([conn, proc.sentinel])
                if not conn.poll(0):  # the worker ended without answering (its children may still hold the pipe)
                    raise EOFError("no answer")
                future.set_result(conn.recv())
            except (EOFError, OSError) as e:
                _kill_group(proc.pid)  # what the dead worker's trial started goes with it
                proc.join(timeout=5)
                code = proc.exitcode
                why = (f"worker died: signal {-code}" if code is not None and code < 0
                       else f"worker exited with code {code}" if code is not None else f"worker lost ({e})")
                future.set_exception(WorkerDied(why, gpus=gpus))
                if not self._closing:
                    log.warning("Trial #%d: %s; starting a new worker%s", idx, why, f" on GPU {gpus}" if gpus else "")
                    try:
                        proc, conn = self._spawn(slot)
                    except WorkerDied:
                        break
        try:
            if conn is not None:
                conn.send(None)  # finish and exit
        except OSError:
            pass


# ------------------------------------------------------------ the worker process


def _kill_group(pid: int) -> None:
    """SIGKILL a worker's process group: the worker leads its own, which its trial's children join."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _die_with_sweep(lifeline) -> None:
    """End this process, and what its trials started, when the sweep ends, however it ends: the lifeline's write end
    closes with the sweep."""
    def watch() -> None:
        try:
            lifeline.poll(None)  # readable only at end of file: nobody writes to it
        finally:
            _kill_group(os.getpid())
            os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True, name="lifeline").start()
    if sys.platform.startswith("linux"):  # and with the process that started it (a fork server, or the sweep)
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _worker_main(conn, lifeline, settings) -> None:
    os.setpgrp()  # a group of its own, so stopping the worker also stops the processes its trials start
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_sweep(lifeline)
    gpus, threads = settings
    # Before anything can initialise CUDA: the trial sees its GPU (and only it) as cuda:0.
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)  # for anything the task starts
    if "torch" in sys.modules:  # the fork server imported the task's module, and torch with it
        sys.modules["torch"].set_num_threads(threads)
    import cloudpickle

    try:
        payload = cloudpickle.loads(conn.recv_bytes())
        while True:
            message = conn.recv()
            if message is None:
                return
            idx, overrides, console = message
            outcome: Outcome = run_job(payload, idx, overrides, console)
            conn.send(outcome)
    except (EOFError, ConnectionError):  # the sweep dropped our pipe (it is stopping): nobody is left to tell
        return


__all__ = ["PoolLauncher", "visible_gpus"]
