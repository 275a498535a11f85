"""The job a worker runs, whatever engine it lives in (a pool process, a Ray worker, a SLURM job): the sweep's
payload, sent once per worker, and one trial run as Hydra's own launchers run it."""

from __future__ import annotations

import copy
import marshal
import os
import socket
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from sweep.launchers.protocol import Outcome


@dataclass
class Payload:
    """What every worker needs to run jobs: sent once per worker (pickled with cloudpickle, so a task defined in
    a script's __main__ travels too)."""

    hydra_context: Any
    config: Any
    task_function: Any
    singleton_state: Any
    # in a worker: configs composed once, and the config groups under each folder (job_config_of)
    composed: dict = field(default_factory=dict, repr=False)
    groups: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, hydra_context, config, task_function) -> bytes:
        import io

        import cloudpickle
        from hydra.core.singleton import Singleton

        class KeepFilenames(cloudpickle.Pickler):
            """cloudpickle 3.1 renames the code of functions it ships by value to <dynamic-code>: with marshal, a
            worker's traceback still names the task's own file and lines (workers run this Python)."""

            def reducer_override(self, obj):
                if isinstance(obj, types.CodeType):
                    return marshal.loads, (marshal.dumps(obj),)
                return super().reducer_override(obj)

        str(config.hydra.sweep.dir)  # resolved once here, so ${now:...} names the same folder in every worker
        buffer = io.BytesIO()
        KeepFilenames(buffer).dump(cls(hydra_context, config, task_function, Singleton.get_state()))
        return buffer.getvalue()


def run_job(payload: Payload, idx: int, overrides: list[str], console: str, node: str = "") -> Outcome:
    """One job, as Hydra's own launchers run it (the job's config, its output folder, then the task), with what
    it prints kept in the run's console.log unless console is `terminal`."""
    started = time.time()
    where = dict(node=node or socket.gethostname(), gpus=os.environ.get("CUDA_VISIBLE_DEVICES", ""), started=started)
    with _restored():
        ret = _run(payload, idx, overrides, console)
    return Outcome(_picklable(ret), seconds=time.time() - started, **where)


class _restored:
    """A worker runs trial after trial: what one trial changes in its process (the standard streams, the working
    directory, the environment) is put back before the next."""

    def __enter__(self):
        self.streams = (sys.stdin, sys.stdout, sys.stderr)
        self.cwd, self.env = os.getcwd(), dict(os.environ)

    def __exit__(self, *exc):
        sys.stdin, sys.stdout, sys.stderr = self.streams
        try:
            os.chdir(self.cwd)
        except OSError:
            pass
        if dict(os.environ) != self.env:
            os.environ.clear()
            os.environ.update(self.env)
        return False


def _run(payload: Payload, idx: int, overrides: list[str], console: str) -> JobReturn:
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job as hydra_run_job
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf, open_dict

    try:
        # A worker of another engine (Ray) may start elsewhere: the sweep's relative paths are the sweep's.
        home = OmegaConf.select(payload.config, "hydra.runtime.cwd")
        if home and os.path.isdir(home) and os.getcwd() != home:
            os.chdir(home)
        setup_globals()
        Singleton.set_state(payload.singleton_state)
        job_config = job_config_of(payload, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.id = f"{job_config.hydra.job.name}_{idx}"
            job_config.hydra.job.num = idx
        HydraConfig.instance().set_config(job_config)

        def run():
            return hydra_run_job(hydra_context=payload.hydra_context, task_function=payload.task_function,
                                 config=job_config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")

        if console != "file":
            ret = run()
        else:
            run_dir = Path(str(OmegaConf.select(job_config, "hydra.sweep.dir"))) / str(
                OmegaConf.select(job_config, "hydra.sweep.subdir"))
            run_dir.mkdir(parents=True, exist_ok=True)
            with _output_to(run_dir / "console.log") as out:
                ret = run()
                error = job_error(ret)
                if error is not None:  # the sweep shows one line; the whole story stays with the run
                    out.write(_story(error))
    except Exception as e:  # the job's config would not compose, or its folder cannot be made: the trial fails
        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=e)
    return ret


def _story(error: BaseException) -> str:
    """What a failed job leaves in its console.log: the traceback, or one line for a trial the pruner stopped or
    paused (a decision, not a fault)."""
    import traceback

    import optuna

    whole = not isinstance(error, optuna.TrialPruned)
    return "".join(traceback.format_exception(error) if whole else traceback.format_exception_only(error))


def job_config_of(payload: Payload, overrides: list[str]) -> Any:
    """The job's config, as Hydra's load_sweep_config composes it.

    Hydra composes every job from scratch: ~100 ms here, most of an instant trial's time in its worker. But a sweep's
    jobs differ in the values of its parameters (and in the trial's environment variables), and Hydra sets those on
    the composed config after composing. So a config is composed once per choice of config groups, and each job's
    values are set on a copy as Hydra sets them. Anything else, and any value Hydra would reject, goes to Hydra's own
    call. tests/plugin/test_private_api.py compares both ways."""
    from omegaconf import OmegaConf, open_dict

    loader, master = payload.hydra_context.config_loader, payload.config
    try:
        split = _split_overrides(payload, overrides)
    except Exception:  # Hydra says what is wrong with them, as Hydra words it
        split = None
    if split is None:
        return loader.load_sweep_config(master, overrides)
    parsed, groups, dirname = split
    base = payload.composed.get(groups)
    if base is None:
        if len(payload.composed) >= 16:  # a sweep over many group choices: keep the latest
            payload.composed.pop(next(iter(payload.composed)))
        base = payload.composed[groups] = loader.load_sweep_config(master, list(groups))
    config = copy.deepcopy(base)
    try:
        for o in parsed:
            if o.input_line in groups:
                continue
            if o.is_add():  # Hydra adds a value only where there is none
                if OmegaConf.select(config, o.key_or_group, throw_on_missing=False) is not None:
                    raise KeyError(o.key_or_group)
                OmegaConf.update(config, o.key_or_group, o.value(), merge=True, force_add=True)
            else:
                OmegaConf.update(config, o.key_or_group, o.value(), merge=True)
    except Exception:
        return loader.load_sweep_config(master, overrides)
    task = [o for o in parsed if not o.is_hydra_override()]
    with open_dict(config.hydra):
        config.hydra.overrides.task = []
        for o in parsed:  # appended as Hydra does (a line may hold an interpolation: never resolved here)
            (config.hydra.overrides.hydra if o.is_hydra_override() else config.hydra.overrides.task).append(o.input_line)
        if dirname is not None:  # Hydra 1.3 writes the folder name when it composes; 1.4 resolves it when read
            options = config.hydra.job.config.override_dirname
            config.hydra.job.override_dirname = dirname(overrides=task, exclude_keys=list(options.exclude_keys),
                                                        item_sep=options.item_sep, kv_sep=options.kv_sep)
    OmegaConf.copy_cache(from_config=master, to_config=config)
    return config


def _split_overrides(payload: Payload, overrides: list[str]):
    """(the parsed overrides, those that choose a config group, Hydra 1.3's folder-name function or None), or None
    where the job's config has to be Hydra's own composition: only `key=value` on the app's config or a config group,
    and `+hydra.job.env_set.NAME=value`, are set on a composed config."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from omegaconf import OmegaConf

    master, loader = payload.config, payload.hydra_context.config_loader
    if OmegaConf.select(master, "hydra.aliases"):  # Hydra 1.4's aliases rename keys on the way in
        return None
    dirname = None
    if not OmegaConf.is_interpolation(master.hydra.job, "override_dirname"):
        try:  # the one private piece: Hydra 1.3's own function for hydra.job.override_dirname
            from hydra._internal.config_loader_impl import get_overrides_dirname as dirname
        except ImportError:
            return None
    env_copy = set(master.hydra.job.env_copy)
    parsed = OverridesParser.create().parse_overrides(overrides)
    groups = []
    for o in parsed:
        if (o.package is not None or o.is_sweep_override() or getattr(o, "is_value_path", False)
                or o.type not in (OverrideType.CHANGE, OverrideType.ADD)):
            return None
        key, value = o.key_or_group, o.value()
        if o.is_hydra_override():  # a trial's environment is set when the job runs; nothing else may change
            name = key[len("hydra.job.env_set."):]
            if not key.startswith("hydra.job.env_set.") or "." in name or name in env_copy or not isinstance(value, str):
                return None
            continue
        if o.type is not OverrideType.CHANGE:
            return None
        parent, _, name = key.rpartition("/")
        if parent not in payload.groups:
            payload.groups[parent] = set(loader.list_groups(parent))
        if name in payload.groups[parent]:
            if isinstance(value, dict):  # Hydra merges a dict into the config even where a group has the name
                return None
            groups.append(o.input_line)
    return parsed, tuple(groups), dirname


class _output_to:
    """Point this process's stdout and stderr (the file descriptors, so C code and tqdm follow) into a file."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self.streams = [sys.stdout, sys.stderr]  # flushed on the way out even if the task replaced them
        for stream in self.streams:
            stream.flush()
        self.file = open(self.path, "a", buffering=1)
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return self.file

    def __exit__(self, *exc):
        for stream in self.streams:
            stream.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.file.close()
        return False


# JobReturn.return_value re-raises a failed job's exception after printing to stderr, and Hydra has no public way
# to read or replace what a job returned: these two are the only places that touch the private field
# (tests/plugin/test_private_api.py fails if it changes).


def job_value(ret: JobReturn) -> Any:
    return getattr(ret, "_return_value", None)


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed job raised, or None."""
    value = job_value(ret)
    return value if isinstance(value, BaseException) else None


def _replace_value(ret: JobReturn, value: Any) -> None:
    ret._return_value = value


def _picklable(ret: JobReturn) -> JobReturn:
    """A JobReturn the sweep can unpickle, a failure with its traceback and causes (tblib). Configs whose structured
    types will not pickle (Hydra 1.3 re-imports plugin modules, so a class may not be its module's any more) travel
    as plain configs; an exception or return value that will not pickle becomes its one-line description (the
    sweeper only needs numbers)."""
    import pickle

    from omegaconf import OmegaConf
    from tblib import pickling_support

    from sweep.errors import first_line

    error = job_error(ret)
    while error is not None:
        pickling_support.install(error)
        error = error.__cause__ or error.__context__
    for attempt in ("as is", "plain configs", "described"):
        try:
            pickle.loads(pickle.dumps(ret))
            return ret
        except Exception:
            if attempt == "as is":
                for name in ("cfg", "hydra_cfg"):
                    value = getattr(ret, name, None)
                    if OmegaConf.is_config(value):
                        setattr(ret, name, OmegaConf.create(OmegaConf.to_container(value, resolve=False)))
            else:
                value = job_value(ret)
                _replace_value(ret, RuntimeError(first_line(value)) if isinstance(value, BaseException) else repr(value))
    return ret


__all__ = ["Payload", "job_error", "run_job"]
