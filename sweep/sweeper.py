"""The sweeper: hydra-optuna-sweeper's search-space syntax and settings, extended with what its users miss.

- each trial reports validation accuracy per epoch to its Optuna trial, so a pruner can stop it;
- a trial that raises or diverges is recorded FAIL with its reason, and the sweep goes on;
- the study lives in storage (SQLite by default) and a rerun resumes it without replaying configurations;
- with the pool launcher a new trial starts as soon as any worker is free, not when a whole batch is done;
- running trials send heartbeats, so a killed sweep's trials are marked FAIL (and retried) by the next one.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import math
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

log = logging.getLogger(__name__)
_SAMPLER_TARGETS = ("hydra_plugins.hydra_optuna_sweeper.*", "optuna.samplers.*")
_PRUNER_TARGETS = ("optuna.pruners.*",)
DEADLINE_ATTR = "sweep:deadline"  # trial system attr: when the sweep's time_budget ends, for the worker to check


def redact(url: str) -> str:
    """The storage URL with any password masked, for logs and saved files."""
    if "://" in url and not url.startswith(("journal:", "sqlite:")):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 retries: int = 0, read_only: bool = False) -> optuna.storages.BaseStorage:
    """Optuna storage for an RDB URL (sqlite:///..., postgresql://...) or journal:///path/to/file.log.

    read_only: never create tables or folders (the report must not modify what it reads).
    """
    callback = RetryHeartbeatStaleTrialCallback(max_retry=retries) if retries else None
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        path = path[2:] if path.startswith("//") else path  # journal:///abs -> /abs, journal://rel -> rel
        if read_only and not Path(path).exists():
            raise SystemExit(f"error: storage {url} does not exist")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(path))  # journal heartbeats are not supported by Optuna
    engine_kwargs = None
    if url.startswith("sqlite:///") and not read_only:
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for the other process's write, don't fail
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and what we need
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    storage = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period, heartbeat_stale_trial_callback=callback, skip_table_creation=read_only)
                if url.startswith("sqlite:") and not read_only:
                    _write_ahead_log(storage.engine)
                return storage
            except STORAGE_ERRORS as e:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees a duplicate-key error and finds the tables there on the next try.
                if ("duplicate key" not in str(e) and "already exists" not in str(e)) or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except Exception as e:
        raise SystemExit(f"error: hydra.sweeper.storage={redact(url)!r} cannot be opened: {_first_line(e)}") from None


def _write_ahead_log(engine) -> None:
    """SQLite in WAL mode: a report read while the sweep runs never blocks its writes, and commits are cheaper."""
    from sqlalchemy import event

    def pragmas(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reconnect with it


def heartbeats(storage: optuna.storages.BaseStorage) -> bool:
    return callable(getattr(storage, "record_heartbeat", None)) and storage.get_heartbeat_interval() is not None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _storage_errors() -> tuple[type[BaseException], ...]:
    from sqlalchemy.exc import SQLAlchemyError

    return (optuna.exceptions.StorageInternalError, SQLAlchemyError)


STORAGE_ERRORS = _storage_errors()


class TrialReporter:
    """The task's side of a trial: reports each epoch to Optuna and answers whether to prune."""

    def __init__(self, trial: optuna.trial.Trial, deadline: float | None = None):
        self.trial = trial
        self.deadline = deadline  # unix time at which the sweep's time budget runs out
        self.out_of_time = False

    @classmethod
    def connect(cls, cfg: DictConfig, hydra_cfg: DictConfig, out_dir: Path) -> TrialReporter | None:
        """The reporter for this run's trial, or None when the run is not part of an Optuna sweep."""
        if cfg.get("sweep_trial") is None:
            return None
        sw = hydra_cfg.sweeper
        storage = open_storage(sw.storage)
        pruner = instantiate(sw.pruner, _execution_whitelist_=_PRUNER_TARGETS)
        study = optuna.load_study(study_name=sw.study_name, storage=storage, pruner=pruner)
        study_id = storage.get_study_id_from_name(sw.study_name)
        trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, cfg.sweep_trial))
        trial.set_user_attr("run_dir", str(out_dir.resolve()))
        trial.set_user_attr("epochs", cfg.trainer.epochs)
        return cls(trial, storage.get_trial_system_attrs(trial._trial_id).get(DEADLINE_ATTR))

    def on_epoch(self, epoch: int, val_accuracy: float) -> bool:
        self.trial.report(val_accuracy, epoch)
        if self.deadline is not None and time.time() >= self.deadline:
            self.out_of_time = True
            return True
        return self.trial.should_prune()

    def finish(self, metrics: dict) -> None:
        for key in ("best_epoch", "epochs_run", "train_seconds", "param_count", "device", "status"):
            self.trial.set_user_attr(key, metrics[key])
        if metrics["status"] == "pruned":
            why = "pruned"
            if self.out_of_time:  # not the pruner's verdict: say so in the report
                why = "stopped by hydra.sweeper.time_budget"
                self.trial.set_user_attr("stop_reason", why)
            raise optuna.TrialPruned(f"{why} after epoch {metrics['epochs_run']}")


def _tell_once(study: optuna.Study, trial: optuna.trial.Trial, **kw) -> None:
    try:
        study.tell(trial, skip_if_finished=True, **kw)
    except RuntimeError as e:  # GridSampler calls study.stop() once the grid is exhausted; the tell itself went through
        if "Study.stop" not in str(e):
            raise


class SearchSpaceError(Exception):
    pass


class OptunaSweeper(OptunaSweeperImpl):
    def __init__(self, sampler: Any, pruner: Any, direction: Any, storage: str | None, study_name: str,
                 n_trials: int, n_jobs: int, max_failure_rate: float, retries: int, heartbeat_interval: int,
                 grace_period: int, report: bool, custom_search_space: str | None, params: DictConfig | None,
                 timeout: float | None = None, time_budget: float | None = None, enqueue: Any = None) -> None:
        for key, ok, allowed in [
            ("n_trials", isinstance(n_trials, int) and n_trials >= 1, "an integer >= 1"),
            ("n_jobs", isinstance(n_jobs, int) and n_jobs >= 1, "an integer >= 1"),
            ("max_failure_rate", isinstance(max_failure_rate, (int, float)) and 0 <= max_failure_rate <= 1, "a number in [0, 1]"),
            ("retries", isinstance(retries, int) and retries >= 0, "an integer >= 0"),
            ("timeout", timeout is None or (isinstance(timeout, (int, float)) and timeout > 0), "null or seconds > 0"),
            ("time_budget", time_budget is None or (isinstance(time_budget, (int, float)) and time_budget > 0),
             "null or seconds > 0"),
            ("storage", isinstance(storage, str) and storage != "", "an RDB URL (sqlite:///..., postgresql://...) or journal:///path"),
        ]:
            if not ok:
                value = redact(storage) if key == "storage" and isinstance(storage, str) else locals()[key]
                raise SystemExit(f"error: hydra.sweeper.{key}={value!r} is invalid: expected {allowed}")
        self.sampler_cfg = sampler
        super().__init__(instantiate(sampler, _execution_whitelist_=_SAMPLER_TARGETS), direction, storage,
                         study_name, n_trials, n_jobs, max_failure_rate, custom_search_space, params)
        self.pruner = instantiate(pruner, _execution_whitelist_=_PRUNER_TARGETS)
        self.retries, self.heartbeat_interval, self.grace_period = retries, heartbeat_interval, grace_period
        self.write_report = report
        self.timeout, self.time_budget = timeout, time_budget
        self.enqueue = [OmegaConf.to_container(e, resolve=True) if isinstance(e, DictConfig) else dict(e) for e in enqueue or []]

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage")
        if isinstance(raw, str) and "${" not in raw and "://" in raw and not raw.startswith(("sqlite", "journal")):
            from sqlalchemy.engine import make_url

            try:
                has_password = make_url(raw).password is not None
            except Exception:
                has_password = False
            if has_password:
                # Hydra writes the sweeper's settings into every run's .hydra/hydra.yaml.
                raise SystemExit(
                    "error: hydra.sweeper.storage holds a password, which would be saved in every run's config; "
                    "leave it out and set PGPASSWORD (or ~/.pgpass), or write it as ${oc.env:SWEEP_DB_PASSWORD}")
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------ search space

    def _search_space(self, arguments: list[str]):
        self._process_searchspace_config()
        params_conf = self._parse_sweeper_params_config() + list(arguments)
        try:
            space, fixed, fixed_overrides = create_params_from_overrides(params_conf)
        except Exception as e:
            raise SearchSpaceError(f"hydra.sweeper.params is invalid: {_first_line(e)}") from None
        for name in fixed:
            space.pop(name, None)
        return space, fixed, fixed_overrides

    def _check_search_space(self, space, fixed, fixed_overrides) -> None:
        """Compose and check the configs at the edges of the space, so mistakes surface before any training."""
        from sweep.config import UserError, check_config

        def edge(d, high: bool):
            if isinstance(d, CategoricalDistribution):
                return d.choices[-1 if high else 0]
            return d.high if high else d.low

        probes = [{k: edge(d, False) for k, d in space.items()}, {k: edge(d, True) for k, d in space.items()}]
        for name, d in space.items():  # every choice of every categorical, the rest at their low end
            if isinstance(d, CategoricalDistribution):
                probes += [{**probes[0], name: c} for c in d.choices]
        for probe in probes:
            overrides = [f"{k}={v}" for k, v in {**probe, **fixed}.items()] + list(fixed_overrides)
            try:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                check_config(cfg)
            except UserError as e:
                raise SearchSpaceError(f"hydra.sweeper.params: a trial with {probe} would fail: {e}") from None
            except Exception as e:
                raise SearchSpaceError(f"hydra.sweeper.params: {_first_line(e)}") from None

    # ------------------------------------------------------------ the sweep

    def sweep(self, arguments: list[str]) -> None:
        try:
            space, fixed, fixed_overrides = self._search_space(arguments)
            if not space:
                raise SearchSpaceError("hydra.sweeper.params is empty: nothing to search; pick a preset with search=NAME")
            self._check_search_space(space, fixed, fixed_overrides)
        except SearchSpaceError as e:
            raise SystemExit(f"error: {e}") from None

        is_grid = isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler
        if is_grid:
            grid = {name: self._to_grid_sampler_choices(d) for name, d in space.items()}
            self.sampler = self.sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))

        lock = self._lock_sqlite()  # noqa: F841  (held until the sweep ends)
        storage = open_storage(self.storage, self.heartbeat_interval, self.grace_period, self.retries)
        study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=self.sampler,
                                    pruner=self.pruner, directions=self._get_directions(), load_if_exists=True)
        self._fail_stale(study)
        for params in self.enqueue:  # known-good starting points; skipped when the study already has them
            study.enqueue_trial(params, skip_if_exists=True)
        done_before = len(study.trials)
        seed = self.sampler_cfg.get("seed") if isinstance(self.sampler_cfg, DictConfig) else None
        if done_before and seed is not None and not is_grid:
            # A resumed study with a seeded sampler would otherwise replay the first run's configurations.
            study.sampler = instantiate(self.sampler_cfg, seed=seed + done_before, _execution_whitelist_=_SAMPLER_TARGETS)
        log.info("Study %r in %s: %d earlier trial(s); adding %d, %d at a time",
                 study.study_name, redact(self.storage), done_before, self.n_trials, self.n_jobs)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "study.json").write_text(json.dumps({"storage": redact(self.storage), "study_name": study.study_name}) + "\n")

        numbers: list[int] = []
        interrupted, lost = False, None
        try:
            self._run_trials(study, space, fixed, fixed_overrides, numbers)
        except KeyboardInterrupt:
            interrupted = True
        except STORAGE_ERRORS as e:  # the database went away
            lost = e
        finally:
            self._stop_heartbeats()
            if hasattr(self.launcher, "shutdown"):
                self.launcher.shutdown(kill=interrupted or lost is not None)
        if lost is not None:
            raise SystemExit(
                f"error: lost the study's storage {redact(self.storage)} ({_first_line(lost)}); finished trials are "
                "saved there. Once it is back, rerun the same command to resume: trials left running are marked "
                "FAIL after hydra.sweeper.grace_period seconds")
        self._finish(study, numbers, sweep_dir, interrupted)

    def _lock_sqlite(self):
        # SQLite locks the whole file per write: several sweeps writing it at once stall and time out.
        # One sweep per SQLite study; several workers go through journal or PostgreSQL storage.
        if not self.storage.startswith("sqlite:///"):
            return None
        db = Path(self.storage[len("sqlite:///"):])
        db.parent.mkdir(parents=True, exist_ok=True)
        handle = open(f"{db}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(
                f"error: hydra.sweeper.storage={self.storage!r} is in use by another running sweep; SQLite serves one "
                "sweep at a time. For several workers on one study use hydra.sweeper.storage=journal:///path/study.log "
                "or postgresql://user@host/db") from None
        return handle

    def _fail_stale(self, study: optuna.Study) -> None:
        if heartbeats(study._storage):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)

    def _start_heartbeats(self, study: optuna.Study, inflight: dict) -> None:
        storage = study._storage
        self._beating = threading.Event()
        if not heartbeats(storage):
            return

        def beat():
            while not self._beating.wait(self.heartbeat_interval):
                try:
                    for trial in list(inflight.values()):
                        storage.record_heartbeat(trial._trial_id)
                except STORAGE_ERRORS as e:  # the main loop reports a lost database; keep trying meanwhile
                    log.warning("heartbeat not recorded: %s", _first_line(e))

        threading.Thread(target=beat, daemon=True, name="optuna-heartbeat").start()

    def _stop_heartbeats(self) -> None:
        if getattr(self, "_beating", None) is not None:
            self._beating.set()

    def _ask(self, study: optuna.Study, space, fixed, fixed_overrides) -> tuple[optuna.trial.Trial, tuple[str, ...]]:
        self._fail_stale(study)  # another worker may have died since the last ask
        with warnings.catch_warnings():  # we send the heartbeats Optuna's warning says only optimize() sends
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        if heartbeats(study._storage):
            study._storage.record_heartbeat(trial._trial_id)
        if self.time_budget:
            study._storage.set_trial_system_attr(trial._trial_id, DEADLINE_ATTR, self._budget_ends)
        overrides = self._configure_trials([trial], space, fixed, fixed_overrides)[0]
        return trial, tuple(overrides) + (f"sweep_trial={trial.number}",)

    def _run_trials(self, study, space, fixed, fixed_overrides, numbers: list[int]) -> None:
        submit = getattr(self.launcher, "submit", None)
        inflight: dict[Any, optuna.trial.Trial] = {}
        self._start_heartbeats(study, inflight)
        self.failures: list[str] = []
        deadline = time.monotonic() + min(self.timeout or math.inf, self.time_budget or math.inf)
        self._budget_ends = time.time() + (self.time_budget or math.inf)  # wall clock: workers may be other machines
        while len(numbers) < self.n_trials or inflight:
            over_budget = len(self.failures) > self.max_failure_rate * self.n_trials or time.monotonic() > deadline
            batch = []
            while not over_budget and len(numbers) < self.n_trials and len(inflight) + len(batch) < self.n_jobs:
                trial, overrides = self._ask(study, space, fixed, fixed_overrides)
                numbers.append(trial.number)
                batch.append((trial, overrides))
            if submit is not None:  # asynchronous: refill as soon as any trial ends
                for trial, overrides in batch:
                    inflight[submit(overrides, self.job_idx)] = trial
                    self.job_idx += 1
                if not inflight:
                    break
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for future in done:
                    trial = inflight.pop(future)
                    try:
                        ret = future.result()
                    except Exception as e:  # the worker process died
                        ret = e
                    self._tell(study, trial, ret)
            else:  # a batch launcher (basic, joblib, submitit): waits for the whole batch
                if not batch:
                    break
                for trial, _ in batch:
                    inflight[trial.number] = trial
                returns = self.launcher.launch([o for _, o in batch], initial_job_idx=self.job_idx)
                self.job_idx += len(returns)
                for (trial, _), ret in zip(batch, returns):
                    inflight.pop(trial.number)
                    self._tell(study, trial, ret)

    def _tell(self, study: optuna.Study, trial: optuna.trial.Trial, ret: JobReturn | BaseException) -> None:
        error: BaseException | None = ret if isinstance(ret, BaseException) else None
        if error is None and ret.status == JobStatus.COMPLETED:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                value = math.nan
            if math.isfinite(value):
                _tell_once(study, trial, values=value)
                log.info("Trial %d: %.4f", trial.number, value)
                return
            error = ValueError(f"the task returned {ret.return_value!r}, not a finite number")
        if error is None:
            error = ret._return_value  # the exception the task raised
        if isinstance(error, optuna.TrialPruned):
            _tell_once(study, trial, state=TrialState.PRUNED)
            log.info("Trial %d: pruned (%s)", trial.number, error)
            return
        reason = _first_line(error)
        trial.set_user_attr("fail_reason", reason[:500])
        _tell_once(study, trial, state=TrialState.FAIL)
        self.failures.append(reason)
        log.warning("Trial %d failed: %s", trial.number, reason)

    def _finish(self, study: optuna.Study, numbers: list[int], sweep_dir: Path, interrupted: bool) -> None:
        launched = set(numbers)
        mine = [t for t in study.get_trials(deepcopy=False) if t.number in launched]
        for t in mine:
            if t.state == TrialState.RUNNING and interrupted:  # ended by Ctrl-C: never leave them RUNNING
                study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "sweep interrupted")
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        mine = [t for t in study.get_trials(deepcopy=False) if t.number in launched]  # states changed above
        count = {s: sum(t.state == s for t in mine) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        pruned = [t for t in mine if t.state == TrialState.PRUNED]
        budget = sum(int(t.user_attrs.get("epochs", 0)) for t in mine if t.state != TrialState.FAIL)
        saved = sum(int(t.user_attrs.get("epochs", 0)) - len(t.intermediate_values) for t in pruned)
        log.info("Sweep %s: %d trial(s): %d complete, %d pruned, %d failed; pruning saved %d of %d epochs (%.0f%%)",
                 "interrupted" if interrupted else "done", len(mine), count[TrialState.COMPLETE],
                 count[TrialState.PRUNED], count[TrialState.FAIL], saved, budget, 100 * saved / max(budget, 1))

        complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        if complete:
            best = study.best_trial
            log.info("Best parameters: %s", best.params)
            log.info("Best value: %s (trial %d)", best.value, best.number)
            OmegaConf.save(OmegaConf.create({"name": "optuna", "best_params": best.params, "best_value": best.value}),
                           sweep_dir / "optimization_results.yaml")
        if self.write_report and study.trials:
            try:
                from sweep.report import print_top, write_report

                print_top(write_report(study, sweep_dir))
            except Exception as e:  # a broken plot must not cost the user the sweep's results
                log.warning("report not written: %s", _first_line(e))
        if interrupted:
            raise SystemExit("error: sweep interrupted; rerun the same command to resume the study")
        if len(self.failures) > self.max_failure_rate * self.n_trials:
            raise SystemExit(
                f"error: {len(self.failures)} of {len(numbers)} trials failed, more than hydra.sweeper.max_failure_rate="
                f"{self.max_failure_rate} of n_trials={self.n_trials} allows; first failure: {self.failures[0]}")
        if not complete:
            if self.time_budget and any(t.state == TrialState.PRUNED for t in mine):
                raise SystemExit(f"error: no trial completed within hydra.sweeper.time_budget={self.time_budget} seconds; "
                                 "raise it or lower trainer.epochs")
            raise SystemExit("error: no trial completed; see the failures above")
