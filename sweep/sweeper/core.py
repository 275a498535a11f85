"""The sweeper: hydra-optuna-sweeper's settings and search-space syntax, on Optuna's public ask-and-tell API, with
what its users have asked for since 2021:

- a task reports intermediate values through `sweep.trial()`, so a pruner can stop it;
- a trial that raises, returns no number, or loses its worker is recorded FAIL with the reason, and the sweep goes on;
- the study lives in storage, and a rerun resumes it without replaying configurations;
- with an asynchronous launcher (pool, Ray, SLURM) a new trial starts as soon as any worker is free;
- running trials get heartbeats, so a killed sweep's trials are marked FAIL (and retried) by the next one.

It knows nothing of the application: a trial's worth comes from its return value and its reports. The parts:
SearchSpace (space.py), StudyHandle (study.py), the Scheduler loop over a launcher (scheduler.py, launcher.py),
and the summary (summary.py).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from dataclasses import MISSING as MISSING_FIELD
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import CategoricalDistribution

from sweep import atomic
from sweep.sweeper import storage as st
from sweep.sweeper import signals, task
from sweep.attrs import SEED, STORAGE_ENV, STUDY_ENV, TRIAL_ENV
from sweep.errors import Interrupted, UserError, first_line, shorten
from sweep.redact import redact
from sweep.launchers.protocol import BatchAdapter, TrialLauncher
from sweep.checks import names, plain as _plain, validate
from sweep.settings import PRUNER_TARGETS, SAMPLER_TARGETS, SweeperConf, build, made
from sweep.sweeper.space import SearchSpace, quote
from sweep.sweeper.stop import StopRule
from sweep.sweeper.repeats import plan as plan_repeats
from sweep.sweeper.study import warm_trials

log = logging.getLogger(__name__)
_ABSENT = object()


def directions_of(direction: Any) -> list[str]:
    items = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    names = [getattr(d, "name", d) for d in items]  # hydra-optuna-sweeper's Direction enum, or a string
    if not names or any(n not in ("minimize", "maximize") for n in names):
        raise UserError(f"hydra.sweeper.direction={_plain(direction)!r} is invalid: expected minimize, maximize, "
                        "or a list of them (one per objective)")
    return names


class GuardedTask:
    """The app's task, with sys.exit turned into a failure: a trial that exits is FAIL with the code, never left
    RUNNING, and never takes the sweep (or a worker) down with it."""

    def __init__(self, task_function):
        self.__wrapped__ = task_function

    def __call__(self, cfg):
        try:
            return self.__wrapped__(cfg)
        except SystemExit as e:
            raise RuntimeError(f"the task called sys.exit({e.code!r})") from None


class SweepImpl:
    def __init__(self, **settings: Any) -> None:
        validate("hydra.sweeper", SweeperConf, settings, "the sweep sweeper")
        conf = {f.name: f.default if f.default is not MISSING_FIELD else f.default_factory()
                for f in dataclasses.fields(SweeperConf) if f.name in names(SweeperConf)}
        conf.update(sampler=None, pruner=None)  # Hydra's config groups fill these
        conf.update(settings)
        self._init(**conf)

    def _init(self, sampler: Any, direction: Any, storage: Any, study_name: Any, n_trials: int, n_jobs: int | None,
              max_failure_rate: float, params: Any, custom_search_space: Any, pruner: Any, metric_names: Any,
              check: Any, timeout: Any, time_budget: Any, retries: int, heartbeat_interval: int, grace_period: int,
              report: bool | str, enqueue: Any, callbacks: Any, stop: Any, warm_start: Any, tracker: Any = None,
              repeats: int = 1, seed_key: str = "seed") -> None:
        self.directions = directions_of(direction)
        names = _plain(metric_names)
        if isinstance(names, str):
            names = [names]
        if names is not None and (not isinstance(names, list) or len(names) != len(self.directions)
                                  or not all(isinstance(n, str) and n for n in names)):
            raise UserError(f"hydra.sweeper.metric_names={names!r} is invalid: expected one name per objective "
                            f"({len(self.directions)}), e.g. [val_accuracy]")
        items = _plain(enqueue) or []
        if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
            raise UserError(f"hydra.sweeper.enqueue={items!r} is invalid: expected a list of {{param: value}} mappings")
        self.sampler_cfg = sampler
        self.sampler = build(sampler, SAMPLER_TARGETS, "hydra/sweeper/sampler")
        self.pruner_cfg = pruner
        self.pruner = build(pruner, PRUNER_TARGETS, "hydra/sweeper/pruner") if pruner else None
        self.extend = _resolve(custom_search_space, "hydra.sweeper.custom_search_space")
        self.check = _resolve(check, "hydra.sweeper.check")
        self.callbacks = _callbacks(callbacks)
        self.tracker = made(tracker, "hydra.sweeper.tracker") if tracker else None
        self.stop = StopRule.of(_plain(stop), self.directions)
        if repeats > 1 and len(self.directions) > 1:
            raise UserError(f"hydra.sweeper.repeats={repeats}: a multi-objective study has no single best "
                            "configurations to repeat; use repeats=1")
        self.repeats, self.seed_key = repeats, seed_key
        self.warm_start = _plain(warm_start)
        if self.warm_start is not None:
            unknown = sorted(set(self.warm_start) - {"storage", "study_name"})
            if unknown or not all(isinstance(self.warm_start.get(k), str) for k in ("storage", "study_name")):
                raise UserError("hydra.sweeper.warm_start is invalid: expected {storage: URL, study_name: NAME}"
                                + (f"; {unknown[0]} is not a key of it" if unknown else ""))
        self.storage, self.study_name, self.metric_names, self.enqueue = storage, study_name, names, items
        self.params = _plain(params) or {}
        self.n_trials, self.n_jobs, self.max_failure_rate, self.retries = n_trials, n_jobs, max_failure_rate, retries
        self.timeout, self.time_budget, self.write_report = timeout, time_budget, report
        self._signals: dict | None = None  # the host's signal handlers, from setup until the sweep ends
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        try:
            launcher = Plugins.instance().instantiate_launcher(
                config=config, hydra_context=hydra_context, task_function=GuardedTask(task_function))
        except Exception as e:  # Hydra wraps what the launcher's constructor raised
            cause = e.__cause__ if isinstance(e.__cause__, UserError) else None
            if cause is not None:
                raise cause from None
            raise UserError(f"hydra/launcher ({OmegaConf.select(config, 'hydra.launcher._target_')}) cannot be "
                            f"created: {first_line(e)}") from None
        self.runner = launcher if isinstance(launcher, TrialLauncher) else BatchAdapter(launcher)
        # The workers start first: their imports (the task's module, torch) are the longest wait before the first
        # trial, so they run while the storage setting is read (SQLAlchemy's import) and the space is checked.
        storage = st.text_of(config)
        self._signals = signals.take()
        try:
            self.runner.start(self.n_jobs, at_most=self.n_trials)
            self.spec = st.parse(storage, base=Path(os.getcwd()))
            if self.spec.kind == "memory" and not self.runner.in_sweep_process:
                raise UserError("hydra.sweeper.storage=null keeps the study in this process's memory, which the "
                                f"workers of hydra/launcher={_choice(config, 'hydra/launcher') or type(launcher).__name__}"
                                " cannot reach; set a storage URL (sqlite:///multirun/studies/NAME.db on one machine, "
                                "postgresql://... across machines) or use hydra/launcher=basic")
        except BaseException as e:
            signals.ignore()
            self.runner.shutdown(kill=True)
            signals.give_back(self._signals)
            if isinstance(e, KeyboardInterrupt):
                raise Interrupted("interrupted before the first trial started; nothing was run") from None
            raise

    # ------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> None:
        self.handle = None
        _quick_exit()
        saved, self._signals = self._signals, None  # taken by setup
        with signals.owned(saved):
            try:
                self.runner.start(self.n_jobs, at_most=self.n_trials)  # started by setup; again after a shutdown
                signals.stop_on_sigterm()  # again: an engine's start-up (Ray) may have taken SIGTERM for itself
                return self._sweep(arguments)
            except KeyboardInterrupt:
                raise Interrupted("interrupted before the first trial started; nothing was run") from None
            finally:
                signals.ignore()  # a second Ctrl-C must not cut the clean-up short
                self.runner.shutdown(kill=True)

    def _sweep(self, arguments: list[str]) -> None:
        from sweep.sweeper.scheduler import Limits, LostStorage, Scheduler
        from sweep.sweeper.study import StudyHandle
        from sweep.sweeper.summary import Progress, finish, plots_later

        space = SearchSpace.parse(self.params, arguments)
        n_trials = self.n_trials
        if isinstance(self.sampler, functools.partial):  # grid: the sampler needs the space
            grid = space.grid()
            self.sampler = self.sampler(grid)
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))
        self._check_edges(space)
        base_seed = self._base_seed(space) if self.repeats > 1 else None

        warm = warm_trials(self.warm_start, space.distributions) if self.warm_start else []
        lock = st.lock_sqlite(self.spec)  # noqa: F841  (held until the sweep ends)
        self.handle = handle = StudyHandle(
            self.spec, self.study_name, self.directions, self.sampler, self.pruner, self.metric_names,
            self.heartbeat_interval, self.grace_period, self.retries)
        earlier = handle.open(self.enqueue, self.sampler_cfg)
        handle.check_space(space.distributions)  # before any trial: a changed kind would fail inside Optuna's ask
        if warm and not earlier:  # a new study starts from what the other one learned
            earlier = handle.add_trials(warm)
            log.info("Warm start: %d completed trial(s) of study %r added", earlier, self.warm_start["study_name"])
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self._claim(sweep_dir, handle, earlier)
        task.register(handle.study, handle.backend)
        callbacks = list(self.callbacks)
        if self.tracker is not None:  # its parent run exists before any trial looks for it
            _tracker_call(self.tracker.start, handle.study)
            callbacks.insert(0, ("hydra.sweeper.tracker", self.tracker))
        n_jobs = self.runner.slots
        log.info("Study %r in %s: %d earlier trial(s); adding %d, %d at a time%s", handle.study.study_name,
                 self.spec, earlier, n_trials, n_jobs,
                 " (in memory: it ends with this sweep and cannot be resumed)" if self.spec.kind == "memory" else "")

        limits = Limits(n_trials, n_jobs, self.max_failure_rate, self.timeout, self.time_budget, self.retries,
                        grace=self.grace_period)
        scheduler = Scheduler(handle, self.runner, limits, space.distributions, functools.partial(self._job, space),
                              Progress(n_trials, self.directions, handle.study), st.FileWatch(self.spec),
                              callbacks=callbacks, stop=self.stop,
                              repeats=functools.partial(plan_repeats, maximize=self.directions[0] == "maximize",
                                                        repeats=self.repeats, base_seed=base_seed)
                              if self.repeats > 1 else None,
                              last_running=functools.partial(
                                  _warm_up_report, plots=not plots_later(self.write_report, self.spec.saved))
                              if self.write_report else None)
        interrupted, lost, ended, started = False, None, False, time.monotonic()
        try:
            scheduler.run()
            ended = True
        except KeyboardInterrupt:
            interrupted = True
            log.warning("Interrupted: stopping the trials and marking them FAIL")
        except (*st.errors(), LostStorage) as e:
            lost = e
        finally:
            signals.ignore()
            if interrupted:  # before the workers stop: a job that ended meanwhile is told as it ended
                scheduler.settle()
            handle.stop_heartbeats()
            self.runner.shutdown(kill=not ended)  # idle workers finish; busy ones would never
            task.unregister(handle.study)
            if self.tracker is not None:
                try:
                    self.tracker.end(handle.study, interrupted=not ended)
                except Exception as e:  # the results are saved: a tracker that cannot close is a warning
                    log.warning("hydra.sweeper.tracker could not end its run: %s", redact(first_line(e)))
        if lost is not None:
            raise UserError(
                f"lost the study's storage {self.spec} ({first_line(lost) if not isinstance(lost, LostStorage) else lost}); "
                "finished trials are saved there. Once it is back, rerun the same command to resume: trials left "
                "running are marked FAIL after hydra.sweeper.grace_period seconds")
        if interrupted:
            scheduler.record_running()
            handle.stop_interrupted(sorted({*scheduler.asked, *scheduler.paused}), "sweep interrupted")
        max_resource = self.pruner_cfg.get("max_resource") if isinstance(self.pruner_cfg, DictConfig) else None
        try:
            finish(handle.study, self.directions, scheduler.asked + scheduler.adopted, sweep_dir, interrupted=interrupted,
                   failures=scheduler.failures, max_failure_rate=self.max_failure_rate, n_trials=n_trials,
                   time_budget=self.time_budget, max_resource=max_resource, report=self.write_report,
                   storage=self.spec.saved, started=started, stopped=scheduler.stopped)
        except UserError as e:
            if interrupted:
                raise Interrupted(str(e)) from None
            raise

    def _job(self, space: SearchSpace, trial) -> list[str]:
        """A trial's overrides: its parameters (and the custom search space's), the fixed values, and the
        environment through which the job's sweep.trial() finds its trial."""
        if self.extend is not None:
            try:
                self.extend(self.config, trial)
            except (SystemExit, Exception) as e:
                raise UserError(f"hydra.sweeper.custom_search_space: {first_line(e)}") from None
        overlap = sorted(set(trial.params) & set(space.fixed))
        if overlap:
            raise UserError(f"{overlap[0]} is both fixed and suggested by hydra.sweeper.custom_search_space")
        env = {TRIAL_ENV: str(trial.number), STUDY_ENV: self.handle.study.study_name}
        if self.spec.saved is not None:  # no secret in it: each job reads that from its own environment
            env[STORAGE_ENV] = st.to_env(self.spec.saved)
        seed = trial.user_attrs.get(SEED)  # a repeat (hydra.sweeper.repeats), maybe queued by an earlier sweep
        return (space.overrides(trial.params, {} if seed is None else {self.seed_key: seed})
                + [f"+hydra.job.env_set.{k}={quote(v)}" for k, v in env.items()])

    def _base_seed(self, space: SearchSpace) -> Any:
        """The seed of a configuration's first run, which its repeats count up from: the command line's, or the
        config's. A swept or missing seed key is one line."""
        key = self.seed_key
        if key in space.distributions:
            raise UserError(f"hydra.sweeper.seed_key={key} is swept by hydra.sweeper.params; hydra.sweeper.repeats "
                            "reruns configurations with other seeds, so the seed must not be a parameter")
        if key in space.fixed:  # as the user wrote it on the command line
            try:
                return int(space.fixed[key])
            except ValueError:
                return None
        found = OmegaConf.select(self.config, key, default=_ABSENT, throw_on_missing=False)
        if found is _ABSENT:
            raise UserError(f"hydra.sweeper.seed_key={key}: the app's config has no such key, and "
                            f"hydra.sweeper.repeats={self.repeats} sets it to rerun the best configurations with other "
                            "seeds; set hydra.sweeper.seed_key to the key that seeds a run (sweep.train: trainer.seed)")
        return found

    def _check_edges(self, space: SearchSpace) -> None:
        """Compose the configs at the edges of the space (and run the app's check, if it names one), so mistakes
        surface before the first trial, not in it. Every choice of a config group is composed (one may not exist);
        each choice of a plain value is checked on the low config with that value set, which costs no composition."""
        loader = self.hydra_context.config_loader

        def is_group(key: str) -> bool:
            try:
                return bool(loader.get_group_options(key.lstrip("+~")))
            except Exception:  # not a group
                return False

        low = None
        for probe in space.edges(every_choice=is_group):
            cfg = self._compose_probe(space, probe)
            low = low if low is not None else (probe, cfg)
            self._run_check(cfg, probe)
        if self.check is None or low is None:
            return
        for key, d in space.distributions.items():
            if not isinstance(d, CategoricalDistribution) or is_group(key):
                continue
            for choice in d.choices:
                probe = {**low[0], key: choice}
                cfg = low[1].copy()
                try:
                    OmegaConf.update(cfg, key.lstrip("+"), choice, force_add=key.startswith("+"))
                except Exception as e:  # a value the config's schema refuses
                    raise UserError(f"hydra.sweeper.params: a trial with {shorten(str(probe), 300)} cannot be composed: "
                                    f"{first_line(e)}") from None
                self._run_check(cfg, probe)

    def _compose_probe(self, space: SearchSpace, probe: dict) -> DictConfig:
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, space.overrides(probe))
        except Exception as e:  # an unknown key, a value of the wrong type: Hydra names it
            if _interrupted(e):  # Ctrl-C inside Hydra's code can surface as another error raised while handling it
                raise KeyboardInterrupt from None
            raise UserError(f"hydra.sweeper.params: a trial with {shorten(str(probe), 300)} cannot be composed: "
                            f"{first_line(e)}") from None

    def _run_check(self, cfg: DictConfig, probe: dict) -> None:
        if self.check is None:
            return
        try:
            self.check(cfg)
        except UserError as e:
            raise UserError(f"hydra.sweeper.params: a trial with {shorten(str(probe), 300)} would fail: {e}") from None
        except SystemExit as e:
            raise UserError(f"hydra.sweeper.check called sys.exit({e.code!r}) on a trial with {shorten(str(probe), 300)}") from None

    def _claim(self, sweep_dir: Path, handle, earlier: int) -> None:
        """Make the sweep folder this study's: two studies in one folder would overwrite each other's runs."""
        record = {"storage": self.spec.saved, "study_name": handle.study.study_name, "directions": self.directions}
        try:
            sweep_dir.mkdir(parents=True, exist_ok=True)
            mine = atomic.create_text(sweep_dir / "study.json", json.dumps(record) + "\n")
        except OSError as e:
            raise UserError(f"hydra.sweep.dir={sweep_dir}: cannot write there ({e.strerror or first_line(e)})") from None
        if mine:
            return
        try:
            other = json.loads((sweep_dir / "study.json").read_text())
        except (OSError, ValueError):
            other = {}
        if isinstance(other, dict) and other.get("study_name") == record["study_name"] and \
                st.same(other.get("storage"), record["storage"]):
            return  # the same study again: its trial numbers, and so its run folders, never repeat
        if not earlier and self.spec.kind != "memory" and not handle.study.get_trials(deepcopy=False):
            handle.delete_if_empty()
        raise UserError(f"hydra.sweep.dir={sweep_dir} holds the runs of another study "
                        f"({other.get('study_name') if isinstance(other, dict) else '?'}); its run folders would be "
                        "overwritten. Give this sweep its own hydra.sweep.dir")


def _interrupted(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


def _choice(config: DictConfig, group: str) -> str | None:
    return OmegaConf.select(config, "hydra.runtime.choices", default={}).get(group)


_exit_registered = False


def _quick_exit() -> None:
    """When the interpreter exits: the garbage collector leaves the objects of the sweep's imports and its study
    alone (gc.freeze), so the command ends at once; its last collections took half a second of a sweep's 0.8 s exit
    on a 2-core machine. A host process that goes on after the sweep is unaffected."""
    global _exit_registered
    if not _exit_registered:
        import atexit
        import gc

        atexit.register(gc.freeze)  # before the interpreter's last collections; after what was registered later
        _exit_registered = True


def _warm_up_report(plots: bool) -> None:
    """While the last trials run: the report's imports (with what its plots draw with, when this process draws
    them), so the sweep ends sooner after them."""
    try:
        from sweep.sweeper.report import warm_up

        if plots:
            warm_up()
    except Exception as e:  # an optional head start: the report, guarded the same way, says what broke at the end
        log.debug("report warm-up: %s", e)


def _tracker_call(call, study) -> None:
    try:
        call(study)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"hydra.sweeper.tracker cannot start the sweep's run: {redact(first_line(e))}") from None


def _callbacks(items: Any) -> list[tuple[str, Any]]:
    """hydra.sweeper.callbacks, made before the first trial: one that cannot be made is one line naming it."""
    found = []
    for i, item in enumerate(items or []):
        target, setting = item.get("_target_"), f"hydra.sweeper.callbacks[{i}]"
        callback = made(item, setting)
        if not callable(callback):
            raise UserError(f"{setting}._target_={target} is not callable as callback(study, trial)")
        found.append((f"{setting} ({target})", callback))
    return found


def _resolve(path: Any, setting: str):
    """A function named by a dotted path, e.g. my_app.search.extend."""
    if path is None:
        return None
    if not isinstance(path, str) or not path.strip():
        raise UserError(f"{setting}={path!r} is invalid: expected a dotted path to a function, e.g. my_app.check")
    from hydra.utils import get_method

    try:
        return get_method(path)
    except Exception as e:
        raise UserError(f"{setting}={path!r} cannot be imported: {first_line(e)}") from None
