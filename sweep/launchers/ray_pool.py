"""The Ray launcher: one Ray task per trial, on a local Ray or an existing cluster, with one future per trial so the
sweeper refills the moment any trial ends, on any node.

Trials reach the study through its storage (SQLite on one machine, PostgreSQL across machines). A task is never
retried by Ray: a dead worker or node fails only its own trial, and hydra.sweeper.retries decides. Stopping the
sweep (Ctrl-C, SIGTERM) cancels the running tasks, forcefully, so no Ray task keeps training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import socket
import threading
from concurrent.futures import Future
from typing import Any, Sequence

from sweep.errors import UserError, first_line
from sweep.checks import validate
from sweep.redact import literal_password, redact
from sweep.launchers.job import Payload, run_job
from sweep.launchers.protocol import AsyncLauncher, Outcome, WorkerDied, announce, cpu_cores, slots_for
from sweep.settings import RayPoolLauncherConf

log = logging.getLogger(__name__)


class RayPoolLauncher(AsyncLauncher):
    def __init__(self, **settings: Any) -> None:
        validate("hydra.launcher", RayPoolLauncherConf, settings, "hydra/launcher=ray_pool")
        if importlib.util.find_spec("ray") is None:
            raise UserError("hydra/launcher=ray_pool needs Ray, which is not installed here: pip install 'sweep[ray]'")
        conf = RayPoolLauncherConf(**settings)
        self.address, self.console = conf.address, conf.console
        self.cpus, self.gpus = conf.num_cpus_per_trial, conf.num_gpus_per_trial
        self.connect_timeout = conf.connect_timeout
        self._refs: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self._started_ray = False
        self._remote = None
        self._watchdog = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from omegaconf import OmegaConf

        written = OmegaConf.to_container(config.hydra.launcher, resolve=False).get("address")
        if isinstance(written, str) and literal_password(written):
            raise UserError(f"hydra.launcher.address={redact(written)!r} holds a password, which would be saved in "
                            "every run's hydra.yaml; make the whole password ${oc.env:VAR}")
        self.config = config
        self._payload = Payload.of(hydra_context, config, task_function)

    def start(self, n_jobs: int | None, at_most: int | None = None) -> None:
        """Join (or start) Ray; the slots are what the sweeper asks, within what the cluster's resources fit now."""
        import ray

        if self._remote is not None:
            return
        if not ray.is_initialized():
            why = _unreachable(self.address)
            if why:  # Ray itself would retry for minutes
                raise UserError(f"hydra.launcher.address={redact(str(self.address))!r}: no Ray cluster answers there ({why}); "
                                "start one with `ray start --head` and give its address, or set address=null for a "
                                "local Ray")
            # address=null means a Ray of this sweep's own ("local"), even where another Ray runs on the machine.
            options: dict[str, Any] = dict(address=self.address or "local", include_dashboard=False,
                                           log_to_driver=self.console == "terminal", configure_logging=False)
            if self.address is None:
                options["num_cpus"] = cpu_cores()
                self._watchdog = _watch_local_ray()  # the Ray this sweep starts ends with it, however it ends
            try:
                self._init(ray, options)
            except UserError:
                raise
            except Exception as e:  # nothing listens there, or a version mismatch
                raise UserError(f"hydra.launcher.address={redact(str(self.address))!r}: cannot reach a Ray cluster there "
                                f"({redact(first_line(e))}); start one with `ray start --head`, or set address=null for a "
                                "local Ray") from None
            finally:
                os.environ.pop(OWNER, None)  # Ray's processes carry it; what the sweep starts later does not
            self._started_ray = True
            if self._watchdog is not None:
                try:
                    self._watchdog.stdin.write(f"node {ray.get_runtime_context().get_node_id()}\n".encode())
                    self._watchdog.stdin.flush()
                except (OSError, ValueError):
                    pass
        resources = ray.cluster_resources()
        fits = min(resources.get("CPU", 0) / self.cpus if self.cpus else math.inf,
                   resources.get("GPU", 0) / self.gpus if self.gpus else math.inf)
        self.slots = slots_for(n_jobs, max(1, int(fits)) if fits < math.inf else cpu_cores(), at_most)
        if self.cpus and resources.get("CPU", 0) < self.cpus:  # Ray would wait for such a node forever
            raise UserError(f"hydra.launcher.num_cpus_per_trial={self.cpus:g}: the Ray cluster has "
                            f"{resources.get('CPU', 0):g} CPU(s); lower it or join a larger cluster")
        if self.gpus and resources.get("GPU", 0) < self.gpus:
            raise UserError(f"hydra.launcher.num_gpus_per_trial={self.gpus}: the Ray cluster has "
                            f"{resources.get('GPU', 0):g} GPU(s); lower it or join a cluster with GPUs")
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        log.info("Ray: %d node(s), %g CPU(s), %g GPU(s); %d trial(s) at a time, %g CPU and %g GPU each",
                 nodes, resources.get("CPU", 0), resources.get("GPU", 0), self.slots, self.cpus, self.gpus)
        self._payload_ref = ray.put(self._payload)
        # max_retries=0: a lost worker fails its trial, and the sweeper's retries (not Ray's) decide what follows.
        self._remote = ray.remote(_ray_job).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0,
                                                     retry_exceptions=False)

    def _init(self, ray, options: dict) -> None:
        """ray.init; joining a cluster, within connect_timeout: a port that accepts and never answers would hold
        ray.init forever, so it runs in a thread the sweep stops waiting for."""
        if self.address is None:
            ray.init(**options)
            return
        outcome: dict[str, BaseException] = {}

        def join() -> None:
            try:
                ray.init(**options)
            except BaseException as e:
                outcome["error"] = e

        quiet = logging.getLogger("ray")  # "SIGTERM handler is not set ..." from a thread that is not the main one
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        thread = threading.Thread(target=join, daemon=True, name="ray-init")
        thread.start()
        thread.join(self.connect_timeout)
        quiet.setLevel(level)
        if thread.is_alive():
            _mute_native_stderr()  # Ray's own threads go on retrying, and logging, until the process exits
            raise UserError(f"hydra.launcher.address={redact(str(self.address))!r}: no answer from a Ray cluster "
                            f"there within hydra.launcher.connect_timeout={self.connect_timeout:g} s; check the "
                            "address (ray status on the head node prints it)")
        if "error" in outcome:
            raise outcome["error"]

    def submit(self, overrides: Sequence[str], job_idx: int) -> Future:
        announce(job_idx, overrides)
        ref = self._remote.remote(self._payload_ref, job_idx, list(overrides), self.console)
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._refs[ref] = future
        ref.future().add_done_callback(lambda done: self._resolve(ref, done, future))
        return future

    def _resolve(self, ref, done: Future, future: Future) -> None:
        with self._lock:
            self._refs.pop(ref, None)
        if future.done():
            return
        try:
            future.set_result(done.result())
        except Exception as e:
            future.set_exception(_as_worker_death(e))

    def shutdown(self, kill: bool = False) -> None:
        import ray

        with self._lock:
            refs = list(self._refs)
        for ref in refs:
            try:
                ray.cancel(ref, force=True)  # the worker process ends: nothing keeps training
            except Exception as e:
                log.warning("Ray task not cancelled: %s", first_line(e))
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=30)
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        if self._watchdog is not None:
            self._watchdog.stdin.close()  # it ends whatever of this sweep's Ray is left, then itself
            self._watchdog.wait(timeout=30)
            self._watchdog = None
        self._started_ray, self._remote, self.slots = False, None, 0


OWNER = "SWEEP_RAY_OWNER"  # set in the environment of every process of a Ray this sweep starts
WATCHDOG = """
import os, re, select, signal, sys, time
token, sweep = sys.argv[1], sys.argv[2]
me, mark = str(os.getpid()), f"SWEEP_RAY_OWNER={token}".encode()
SESSION = re.compile(rb"session_[0-9]{4}-[0-9_-]+")


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def scan():
    # pid -> (parent, environment, command line)
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid not in (me, sweep):
            stat = read(f"/proc/{pid}/stat")
            if stat:
                found[pid] = (stat.rsplit(b")", 1)[1].split()[1].decode(), read(f"/proc/{pid}/environ").split(b"\\0"),
                              read(f"/proc/{pid}/cmdline"))
    return found


def files(pid):
    try:
        return [os.readlink(f"/proc/{pid}/fd/{fd}").encode() for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return []


# While the sweep runs: the node id it sends once Ray is up, and the name of its Ray's session (its folder in Ray's
# temp dir), read from the command lines of the processes carrying the token. A Ray agent may start just as the
# raylet dies, and Ray rewrites its processes' titles over their environment: what it has open names the session.
nodes, sessions, data = set(), set(), b""
while True:
    ready = select.select([0], [], [], None if sessions else 0.5)[0]
    if ready:
        chunk = os.read(0, 4096)
        if not chunk:
            break  # the sweep closed its end, or died
        data += chunk
        nodes = {f"RAY_NODE_ID={line.split()[1].decode()}".encode() for line in data.splitlines() if line.startswith(b"node ")}
    else:
        for pid, (ppid, env, cmd) in scan().items():
            if mark in env:
                sessions.update(SESSION.findall(cmd))


def doomed():
    procs, roots = scan(), set()
    for pid, (ppid, env, cmd) in procs.items():
        ray = cmd.startswith(b"ray::") or b"/ray/" in cmd  # not, say, a user's tail -f of Ray's logs
        if mark in env or nodes.intersection(env) or ray and sessions and (any(s in cmd for s in sessions) or any(
                s in path for path in files(pid) for s in sessions)):
            roots.add(pid)
    found, grew = set(roots), True
    while grew:  # and every descendant of theirs (workers)
        grew = False
        for pid, (ppid, _, _) in procs.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return found


for _ in range(50):  # again until none is left: a process being started while the others die is caught next time
    found = doomed()
    for pid in found:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass
    if not found:
        break
    time.sleep(0.2)
"""


def _watch_local_ray():
    """A small process that outlives the sweep: when the sweep's end of its pipe closes (the sweep stopped, or was
    killed), it ends every process of the Ray this sweep started: those carrying the sweep's token or the node's id in
    their environment, those holding files in the Ray session's folder, and their descendants. Linux only: elsewhere,
    None."""
    import os
    import subprocess
    import sys
    import uuid

    if not os.path.isdir("/proc"):
        return None
    token = uuid.uuid4().hex
    os.environ[OWNER] = token  # until Ray's processes have started (see start)
    return subprocess.Popen([sys.executable, "-c", WATCHDOG, token, str(os.getpid())], stdin=subprocess.PIPE,
                            start_new_session=True)


def _mute_native_stderr() -> None:
    """Point file descriptor 2 at /dev/null for what C++ threads still write, keeping Python's sys.stderr (our one
    error line) on the terminal."""
    import os
    import sys

    try:
        sys.stderr.flush()
        keep = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
        sys.stderr = os.fdopen(keep, "w", buffering=1)
    except OSError:
        pass


def _unreachable(address: str | None) -> str | None:
    """Why nothing listens at a cluster's host:port, or None (None too for a local Ray and for auto)."""
    if address is None or address == "auto":
        return None
    host, _, port = address.split("://", 1)[-1].rpartition("@")[2].rpartition(":")
    if not port.isdigit():
        return "expected auto or host:port"
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def _as_worker_death(e: BaseException) -> BaseException:
    """Ray's words for a lost worker, node or task, as the reason the trial failed."""
    import ray.exceptions as rex

    lost = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.OutOfMemoryError,
            rex.TaskCancelledError, rex.ObjectLostError, rex.OwnerDiedError)
    if isinstance(e, lost):
        return WorkerDied(f"Ray worker lost: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e) else ''}")
    return e


_payloads: dict[bytes, Payload] = {}  # in a Ray worker process: the sweep's payload, unpickled once


def _ray_job(payload: bytes, idx: int, overrides: list[str], console: str) -> Outcome:
    import cloudpickle
    import ray

    key = hashlib.blake2b(payload, digest_size=16).digest()
    if key not in _payloads:
        _payloads.clear()
        _payloads[key] = cloudpickle.loads(payload)
    return run_job(_payloads[key], idx, overrides, console, node=ray.get_runtime_context().get_node_id())


__all__ = ["RayPoolLauncher"]
