"""The sweeper: hydra-optuna-sweeper's search-space syntax and settings, extended with what its users miss.

- a task reports intermediate values through `sweep.trial()`, so a pruner can stop it (it raises optuna.TrialPruned);
- a trial that raises, returns no number, or loses its worker is recorded FAIL with the reason, and the sweep goes on;
- the study lives in storage and a rerun resumes it without replaying configurations;
- with the pool launcher a new trial starts as soon as any worker is free, not when a whole batch is done;
- running trials get heartbeats, so a killed sweep's trials are marked FAIL (and retried) by the next one.

It knows nothing of the application: what a trial is worth comes from its return value and its reports.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_method, instantiate

# hydra-optuna-sweeper's implementation gives us its search-space parsing, samplers and trial configuration.
# It is private API: tests/test_upstream.py fails when the parts used here change.
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sweep import atomic
from sweep import storage as st
from sweep import task
from sweep.errors import UserError, first_line
from sweep.launcher import WorkerDied, job_error

log = logging.getLogger(__name__)
SAMPLER_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
PRUNER_TARGETS = ("optuna.pruners.*",)
FAIL_REASON = "fail_reason"  # user attr of a FAIL trial: why, in one line


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _seconds(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v))


def _directions(direction) -> list[str]:
    items = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    names = [getattr(d, "name", d) for d in items]  # hydra-optuna-sweeper's Direction enum, or a string
    if not names or any(n not in ("minimize", "maximize") for n in names):
        raise UserError(f"hydra.sweeper.direction={OmegaConf.to_container(direction) if isinstance(direction, ListConfig) else direction!r} "
                        "is invalid: expected minimize, maximize, or a list of them (one per objective)")
    return names


def quote(value: str) -> str:
    """A string as a Hydra override value, whatever it holds (quotes, spaces, ${...})."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("${", "\\${") + "'"


class SweepImpl(OptunaSweeperImpl):
    def __init__(self, sampler: Any, direction: Any = "minimize", storage: Any = None, study_name: str | None = None,
                 n_trials: Any = 20, n_jobs: Any = 2, max_failure_rate: Any = 0.0,
                 custom_search_space: str | None = None, params: DictConfig | None = None, pruner: Any = None,
                 metric_names: Any = None, check: str | None = None, timeout: Any = None, time_budget: Any = None,
                 retries: Any = 0, heartbeat_interval: Any = 30, grace_period: Any = 120, report: Any = True,
                 enqueue: Any = None) -> None:
        for key, value, ok, allowed in [
            ("n_trials", n_trials, _integer(n_trials) and n_trials >= 1, "an integer >= 1"),
            ("n_jobs", n_jobs, _integer(n_jobs) and n_jobs >= 1, "an integer >= 1"),
            ("max_failure_rate", max_failure_rate, isinstance(max_failure_rate, (int, float))
             and not isinstance(max_failure_rate, bool) and 0 <= max_failure_rate <= 1, "a number in [0, 1]"),
            ("retries", retries, _integer(retries) and retries >= 0, "an integer >= 0"),
            ("timeout", timeout, _seconds(timeout), "null or seconds > 0"),
            ("time_budget", time_budget, _seconds(time_budget), "null or seconds > 0"),
            ("heartbeat_interval", heartbeat_interval, _integer(heartbeat_interval) and heartbeat_interval >= 1,
             "an integer >= 1 (seconds)"),
            ("grace_period", grace_period, _integer(grace_period) and grace_period >= 1, "an integer >= 1 (seconds)"),
            ("report", report, isinstance(report, bool), "true or false"),
            ("study_name", study_name, study_name is None or (isinstance(study_name, str) and study_name.strip() != ""),
             "null or a non-empty name"),
        ]:
            if not ok:
                raise UserError(f"hydra.sweeper.{key}={value!r} is invalid: expected {allowed}")
        self.directions = _directions(direction)
        names = OmegaConf.to_container(metric_names) if isinstance(metric_names, ListConfig) else metric_names
        if isinstance(names, str):
            names = [names]
        if names is not None and (not isinstance(names, list) or len(names) != len(self.directions)
                                  or not all(isinstance(n, str) and n for n in names)):
            raise UserError(f"hydra.sweeper.metric_names={names!r} is invalid: expected one name per objective "
                            f"({len(self.directions)}), e.g. [val_accuracy]")
        self.metric_names = names
        self.sampler_cfg = sampler
        try:
            sampler_obj = instantiate(sampler, _execution_whitelist_=SAMPLER_TARGETS)
        except Exception as e:
            target = sampler.get("_target_") if isinstance(sampler, DictConfig) else sampler
            hint = "; pip install cmaes" if "cmaes" in str(e).lower() else ""
            raise UserError(f"hydra/sweeper/sampler ({target}) cannot be created: {first_line(e)}{hint}") from None
        try:
            super().__init__(sampler_obj, direction, storage, study_name, n_trials, n_jobs, max_failure_rate,
                             custom_search_space, params)
        except Exception as e:  # custom_search_space names something that does not import
            raise UserError(f"hydra.sweeper.custom_search_space={custom_search_space!r}: {first_line(e)}") from None
        try:
            self.pruner = instantiate(pruner, _execution_whitelist_=PRUNER_TARGETS) if pruner else optuna.pruners.NopPruner()
        except Exception as e:
            raise UserError(f"hydra.sweeper.pruner is invalid: {first_line(e)}") from None
        self.pruner_cfg = pruner
        self.check = check
        self.retries, self.heartbeat_interval, self.grace_period = retries, heartbeat_interval, grace_period
        self.write_report, self.timeout, self.time_budget = report, timeout, time_budget
        items = OmegaConf.to_container(enqueue, resolve=True) if OmegaConf.is_config(enqueue) else (enqueue or [])
        if not isinstance(items, list) or not all(isinstance(e, dict) for e in items):
            raise UserError(f"hydra.sweeper.enqueue={items!r} is invalid: expected a list of {{param: value}} mappings")
        self.enqueue = items

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage")
        self.spec = st.parse(self.storage, base=Path(os.getcwd()))
        st.refuse_saved_password(raw, self.spec)
        self.saved_storage = st.saved_form(raw, self.spec)
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if self.spec.kind == "memory" and hasattr(self.launcher, "submit"):
            raise UserError("hydra.sweeper.storage=null keeps the study in this process's memory, which the pool "
                            "launcher's worker processes cannot reach; set a storage URL "
                            "(e.g. sqlite:///multirun/studies/NAME.db) or use hydra/launcher=basic")

    # ------------------------------------------------------------ search space

    def _search_space(self, arguments: list[str]):
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config() + list(arguments)
        try:
            space, fixed, fixed_overrides = create_params_from_overrides(params_conf)
        except Exception as e:
            raise UserError(f"hydra.sweeper.params is invalid: {first_line(e)}") from None
        for name in fixed:
            space.pop(name, None)
        return space, fixed, fixed_overrides

    def _check_search_space(self, space, fixed, fixed_overrides) -> None:
        """Compose the configs at the edges of the space (and run the app's check, if it names one), so that
        mistakes surface before the first trial, not in it."""
        check = None
        if self.check:
            try:
                check = get_method(self.check)
            except Exception as e:
                raise UserError(f"hydra.sweeper.check={self.check!r} cannot be imported: {first_line(e)}") from None

        def edge(d, high: bool):
            if isinstance(d, CategoricalDistribution):
                return d.choices[-1 if high else 0]
            return d.high if high else d.low

        probes = [{k: edge(d, False) for k, d in space.items()}, {k: edge(d, True) for k, d in space.items()}]
        for name, d in space.items():  # every choice of every categorical, the rest at their low end
            if isinstance(d, CategoricalDistribution):
                probes += [{**probes[0], name: c} for c in d.choices]
        seen = set()
        for probe in probes:
            key = json.dumps(probe, sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            overrides = [f"{k}={v}" for k, v in {**probe, **fixed}.items()] + list(fixed_overrides)
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                if check is not None:
                    check(cfg)
            except UserError as e:
                raise UserError(f"hydra.sweeper.params: a trial with {probe} would fail: {e}") from None
            except Exception as e:
                raise UserError(f"hydra.sweeper.params: {first_line(e)}") from None

    # ------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> None:
        start = getattr(self.launcher, "start", None)
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)  # `kill` stops the sweep as Ctrl-C does: cleanly
        try:
            if start is not None:
                start()  # workers warm up while the space is checked and the study opened
            space, fixed, fixed_overrides = self._search_space(arguments)
            self._check_search_space(space, fixed, fixed_overrides)
            self._sweep(space, fixed, fixed_overrides)
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
            if hasattr(self.launcher, "shutdown"):
                self.launcher.shutdown(kill=True)

    def _sweep(self, space, fixed, fixed_overrides) -> None:
        is_grid = isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler
        if is_grid:
            try:
                grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
            except ValueError as e:
                raise UserError(f"hydra/sweeper/sampler=grid: {e} (use choice() or range(), not interval())") from None
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))

        lock = st.lock_sqlite(self.spec)  # noqa: F841  (held until the sweep ends)
        backend = st.open_storage(self.spec, heartbeat_interval=self.heartbeat_interval, grace_period=self.grace_period)
        self.watch = st.FileWatch(self.spec)
        study = self._open_study(backend, is_grid)
        task.register(study)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(sweep_dir / "study.json", json.dumps(
            {"storage": self.saved_storage, "study_name": study.study_name, "directions": self.directions}) + "\n")

        numbers: list[int] = []
        interrupted, lost, ended = False, None, False
        self.progress = Progress(self.n_trials, self.n_jobs, self.directions, study)
        try:
            self._run_trials(study, space, fixed, fixed_overrides, numbers)
            ended = True
        except KeyboardInterrupt:
            interrupted = True
            log.warning("Interrupted: stopping the workers and marking their trials FAIL")
        except (*st.errors(), LostStorage) as e:
            lost = e
        finally:
            _ignore_interrupts()  # a second Ctrl-C must not cut the clean-up short
            self._stop_heartbeats()
            if hasattr(self.launcher, "shutdown"):
                self.launcher.shutdown(kill=not ended)  # idle workers finish; busy ones would never
        task.unregister(study)
        if lost is not None:
            raise UserError(
                f"lost the study's storage {self.spec} ({first_line(lost) if not isinstance(lost, LostStorage) else lost}); "
                "finished trials are saved there. Once it is back, rerun the same command to resume: trials left "
                "running are marked FAIL after hydra.sweeper.grace_period seconds")
        self._finish(study, numbers, sweep_dir, interrupted)

    def _open_study(self, backend, is_grid: bool) -> optuna.Study:
        try:
            study = optuna.create_study(study_name=self.study_name, storage=backend, sampler=self.sampler,
                                        pruner=self.pruner, directions=self.directions, load_if_exists=True)
        except ValueError as e:  # an existing study with other directions
            raise UserError(f"hydra.sweeper.direction: {e}") from None
        if [d.name.lower() for d in study.directions] != self.directions:
            raise UserError(f"hydra.sweeper.direction={self.directions} does not match study {study.study_name!r}, "
                            f"which is {[d.name.lower() for d in study.directions]}; use another study_name")
        if self.metric_names and study.metric_names != self.metric_names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(self.metric_names)
        self._fail_stale(study)
        done_before = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.FAIL, TrialState.RUNNING)))
        for params in self.enqueue:  # known-good starting points; skipped when the study already has them
            study.enqueue_trial(params, skip_if_exists=True)
        seed = self.sampler_cfg.get("seed") if isinstance(self.sampler_cfg, DictConfig) else None
        if done_before and seed is not None and not is_grid:
            # A resumed study with a seeded sampler would otherwise replay the first run's configurations.
            study.sampler = instantiate(self.sampler_cfg, seed=seed + done_before, _execution_whitelist_=SAMPLER_TARGETS)
        log.info("Study %r in %s: %d earlier trial(s); adding %d, %d at a time%s", study.study_name, self.spec,
                 done_before, self.n_trials, self.n_jobs,
                 " (in memory: it ends with this sweep and cannot be resumed)" if self.spec.kind == "memory" else "")
        return study

    def _fail_stale(self, study: optuna.Study) -> None:
        """Mark trials whose sweep stopped sending heartbeats FAIL, with that reason, and queue their retries."""
        backend = study._storage
        if not st.heartbeats(backend):
            return
        for trial_id in st.stale_trial_ids(backend, study._study_id):
            try:
                backend.set_trial_user_attr(trial_id, FAIL_REASON, "worker stopped sending heartbeats")
                if not backend.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another sweep got there first
            if self.retries:
                RetryHeartbeatStaleTrialCallback(self.retries, inherit_intermediate_values=True)(
                    study, backend.get_trial(trial_id))

    def _start_heartbeats(self, study: optuna.Study, inflight: dict) -> None:
        backend = study._storage
        self._beating = threading.Event()
        if not st.heartbeats(backend):
            return

        def beat():
            while not self._beating.wait(self.heartbeat_interval):
                try:
                    for trial in list(inflight.values()):
                        backend.record_heartbeat(trial._trial_id)
                except st.errors() as e:  # the main loop reports a lost database; keep trying meanwhile
                    log.warning("heartbeat not recorded: %s", first_line(e))

        threading.Thread(target=beat, daemon=True, name="optuna-heartbeat").start()

    def _stop_heartbeats(self) -> None:
        if getattr(self, "_beating", None) is not None:
            self._beating.set()

    def _ask(self, study: optuna.Study, space, fixed, fixed_overrides) -> tuple[optuna.trial.Trial, tuple[str, ...]]:
        self._fail_stale(study)  # another worker may have died since the last ask
        with warnings.catch_warnings():  # we send the heartbeats Optuna's warning says only optimize() sends
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        if st.heartbeats(study._storage):
            study._storage.record_heartbeat(trial._trial_id)
        if self.time_budget:
            study._storage.set_trial_system_attr(trial._trial_id, task.DEADLINE_ATTR, self._budget_ends)
        try:
            overrides = self._configure_trials([trial], space, fixed, fixed_overrides)[0]
        except Exception as e:  # custom_search_space raised
            study.tell(trial, state=TrialState.FAIL)
            raise UserError(f"hydra.sweeper.custom_search_space: {first_line(e)}") from None
        # The job finds its trial through its environment (hydra.job.env_set), where sweep.trial() reads it: the
        # trial's number, the study's name, and its storage when the URL holds no password (else the job reads
        # hydra.sweeper.storage from its own config, which keeps a password as ${oc.env:...}).
        env = {task.TRIAL_ENV: str(trial.number), task.STUDY_ENV: study.study_name}
        if self.spec.url is not None and not self.spec.has_password:
            env[task.STORAGE_ENV] = self.spec.url
        return trial, tuple(overrides) + tuple(f"+hydra.job.env_set.{k}={quote(v)}" for k, v in env.items())

    def _run_trials(self, study, space, fixed, fixed_overrides, numbers: list[int]) -> None:
        submit = getattr(self.launcher, "submit", None)
        inflight: dict[Any, optuna.trial.Trial] = {}
        self._start_heartbeats(study, inflight)
        self.failures: list[str] = []
        deadline = time.monotonic() + min(self.timeout or math.inf, self.time_budget or math.inf)
        self._budget_ends = time.time() + (self.time_budget or math.inf)  # wall clock: workers may be other machines
        self.progress.deadline = deadline if deadline < math.inf else None
        while len(numbers) < self.n_trials or inflight:
            self._check_storage()
            over_budget = len(self.failures) > self.max_failure_rate * self.n_trials or time.monotonic() > deadline
            batch = []
            while not over_budget and len(numbers) < self.n_trials and len(inflight) + len(batch) < self.n_jobs:
                trial, overrides = self._ask(study, space, fixed, fixed_overrides)
                numbers.append(trial.number)
                batch.append((trial, overrides))
                self.progress.started(trial.number)
            if submit is not None:  # asynchronous: refill as soon as any trial ends
                for trial, overrides in batch:
                    inflight[submit(overrides, trial.number)] = trial
                if not inflight:
                    break
                done, _ = wait(list(inflight), timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    trial = inflight.pop(future)
                    try:
                        ret = future.result()
                    except Exception as e:  # WorkerDied
                        ret = e
                    self._tell(study, trial, ret)
            else:  # a batch launcher (basic, joblib, submitit) waits for the whole batch
                if not batch:
                    break
                for trial, _ in batch:
                    inflight[trial.number] = trial
                for run in _consecutive(batch):  # job numbers are trial numbers, as Hydra prints them
                    returns = self.launcher.launch([o for _, o in run], initial_job_idx=run[0][0].number)
                    for (trial, _), ret in zip(run, returns):
                        inflight.pop(trial.number)
                        self._tell(study, trial, ret)

    def _check_storage(self) -> None:
        problem = self.watch.check()
        if problem:
            raise LostStorage(problem)

    def _values(self, value) -> tuple[list[float] | None, str | None]:
        """The objective values a task returned, or why they cannot be used."""
        n = len(self.directions)
        items = list(value) if isinstance(value, (list, tuple, ListConfig)) else None
        if n == 1 and items is not None and len(items) == 1:
            items = None
            value = list(value)[0]
        try:
            values = [float(v) for v in items] if items is not None else [float(value)]
        except (TypeError, ValueError):
            expected = "a number" if n == 1 else f"a sequence of {n} numbers"
            return None, f"the task returned {value!r}, expected {expected}"
        if len(values) != n:
            return None, (f"the task returned {tuple(values)!r}, expected {n} value(s): hydra.sweeper.direction "
                          f"has {n} objective(s)")
        if not all(math.isfinite(v) for v in values):
            return None, f"the task returned {value!r}, not a finite number"
        return values, None

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn | BaseException) -> None:
        error = ret if isinstance(ret, BaseException) else (job_error(ret) if ret.status != JobStatus.COMPLETED else None)
        if error is None:
            values, problem = self._values(ret.return_value)
            if problem is None:
                _tell_once(study, trial, values=values)
                self.progress.ended(trial.number, TrialState.COMPLETE, values)
                return
            error = ValueError(problem)
        if isinstance(error, optuna.TrialPruned):
            frozen = study._storage.get_trial(trial._trial_id)
            if task.STOP_REASON not in frozen.user_attrs:  # raised without asking should_prune()
                trial.set_user_attr(task.STOP_REASON, f"pruned: {error}" if str(error) else "pruned by the task")
            _tell_once(study, trial, state=TrialState.PRUNED)
            self.progress.ended(trial.number, TrialState.PRUNED, None,
                                study._storage.get_trial(trial._trial_id).user_attrs.get(task.STOP_REASON))
            return
        reason = first_line(error)[:500]
        try:
            trial.set_user_attr(FAIL_REASON, reason)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        _tell_once(study, trial, state=TrialState.FAIL)
        self.failures.append(reason)
        self.progress.ended(trial.number, TrialState.FAIL, None, reason)
        if isinstance(error, WorkerDied) and self.retries:
            RetryHeartbeatStaleTrialCallback(self.retries, inherit_intermediate_values=True)(
                study, study._storage.get_trial(trial._trial_id))

    # ------------------------------------------------------------ the end

    def _finish(self, study: optuna.Study, numbers: list[int], sweep_dir: Path, interrupted: bool) -> None:
        launched = set(numbers)
        if interrupted:  # never leave the trials of a stopped sweep RUNNING
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.number in launched:
                    try:
                        study._storage.set_trial_user_attr(t._trial_id, FAIL_REASON, "sweep interrupted")
                        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        pass
        trials = study.get_trials(deepcopy=False)
        mine = [t for t in trials if t.number in launched]
        count = {s: sum(t.state == s for t in mine) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        summary = (f"Sweep {'interrupted' if interrupted else 'done'}: {len(mine)} trial(s): "
                   f"{count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
                   f"{count[TrialState.FAIL]} failed")
        max_resource = self.pruner_cfg.get("max_resource") if isinstance(self.pruner_cfg, DictConfig) else None
        saved = pruning_savings(trials, mine, max_resource)
        if saved is not None:
            summary += f"; pruning saved {saved[0]} of {saved[1]} steps ({100 * saved[0] / max(saved[1], 1):.0f}%)"

        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        results = None
        if complete and len(self.directions) == 1:
            best = study.best_trial
            log.info("Best parameters: %s", best.params)
            log.info("Best value: %s (trial %d)", best.value, best.number)
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        elif complete:
            front = study.best_trials
            log.info("Pareto front: %d trial(s)", len(front))
            for t in front:
                log.info("    trial %d: values %s, params %s", t.number, t.values, t.params)
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in front]}
        if results is not None:
            try:
                atomic.write_text(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
            except OSError as e:
                log.warning("optimization_results.yaml not written: %s", first_line(e))
        if self.write_report and trials:
            try:
                from sweep.report import print_top, write_report

                print_top(write_report(study, sweep_dir))
            except Exception as e:  # a full disk or a broken plot must not cost the user the sweep's results
                log.warning("report not written: %s", first_line(e))
        log.info(summary)
        if interrupted:
            raise UserError("sweep interrupted; rerun the same command to resume the study")
        if len(self.failures) > self.max_failure_rate * self.n_trials:
            raise UserError(
                f"{len(self.failures)} of {len(numbers)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate} of n_trials={self.n_trials} allows; first failure: {self.failures[0]}")
        if not complete:
            if self.time_budget and count[TrialState.PRUNED]:
                raise UserError(f"no trial completed within hydra.sweeper.time_budget={self.time_budget} seconds; "
                                "raise it or shorten the trials")
            raise UserError("no trial completed; see the failures above")


class LostStorage(Exception):
    pass


def pruning_savings(trials, mine, max_resource=None) -> tuple[int, int] | None:
    """(steps the pruner saved, steps the finished trials would have taken), or None when a trial's full length is
    unknown. A full length is the pruner's max_resource when it has one, else the longest completed trial's.
    Trials the time budget stopped saved nothing: they were cut short, not judged."""
    full = max_resource
    if not _integer(full):
        lengths = [max(t.intermediate_values) for t in trials if t.state == TrialState.COMPLETE and t.intermediate_values]
        full = max(lengths) if lengths else None
    if full is None:
        return None
    saved = total = 0
    for t in mine:
        steps = max(t.intermediate_values, default=0)
        judged = t.state == TrialState.PRUNED and t.user_attrs.get(task.STOP_REASON, "").startswith("pruned")
        if t.state == TrialState.COMPLETE or judged:
            total += max(full, steps)
            saved += max(full, steps) - steps if judged else 0
    return saved, total


def _consecutive(batch: list) -> list[list]:
    runs: list[list] = []
    for item in batch:
        if runs and item[0].number == runs[-1][-1][0].number + 1:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _tell_once(study: optuna.Study, trial: optuna.trial.Trial, **kw) -> None:
    try:
        study.tell(trial, skip_if_finished=True, **kw)
    except RuntimeError as e:  # GridSampler calls study.stop() once the grid is exhausted; the tell itself went through
        if "Study.stop" not in str(e):
            raise


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _ignore_interrupts() -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def note(signum, frame):
        log.warning("Already stopping: cleaning up, then exiting")

    signal.signal(signal.SIGINT, note)
    signal.signal(signal.SIGTERM, note)


class Progress:
    """One line per finished trial: where the sweep stands, the best so far, and how long is left."""

    def __init__(self, n_trials: int, n_jobs: int, directions: list[str], study: optuna.Study):
        self.n_trials, self.n_jobs, self.directions = n_trials, n_jobs, directions
        self.start = time.monotonic()
        self.deadline: float | None = None
        self.running: set[int] = set()
        self.counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        self.best: tuple[float, int] | None = None
        if len(directions) == 1:
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                self._consider(t.value, t.number)

    def _consider(self, value: float, number: int) -> None:
        better = self.best is None or (value > self.best[0] if self.directions[0] == "maximize" else value < self.best[0])
        if better:
            self.best = (value, number)

    def started(self, number: int) -> None:
        self.running.add(number)

    def ended(self, number: int, state: TrialState, values: list[float] | None, why: str | None = None) -> None:
        self.running.discard(number)
        self.counts[state] += 1
        if state == TrialState.COMPLETE and len(self.directions) == 1:
            self._consider(values[0], number)
        done = sum(self.counts.values())
        what = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "FAILED"}[state]
        result = ", ".join(f"{v:.6g}" for v in values) if values else (why or "")
        elapsed = time.monotonic() - self.start
        parts = [f"[{done:>{len(str(self.n_trials))}}/{self.n_trials}] trial {number} {what}: {result}",
                 f"running {len(self.running)}, pruned {self.counts[TrialState.PRUNED]}, "
                 f"failed {self.counts[TrialState.FAIL]}"]
        if self.best is not None:
            parts.append(f"best {self.best[0]:.6g} (trial {self.best[1]})")
        left = self._eta(done, elapsed)
        parts.append(f"{_clock(elapsed)} elapsed" + (f", ~{_clock(left)} left" if left is not None else ""))
        log.info(" | ".join(parts))

    def _eta(self, done: int, elapsed: float) -> float | None:
        if done == 0 or done >= self.n_trials:
            return None
        left = (self.n_trials - done) * elapsed / done  # trials so far ran n_jobs at a time, as the rest will
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - time.monotonic()))
        return left


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"
