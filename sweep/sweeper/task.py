"""The task's side of a sweep: `sweep.trial()` is the trial this run reports to.

    trial = sweep.trial()
    for epoch in range(1, epochs + 1):
        ...
        trial.report(val_accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

Inside a sweep it is a SweepTrial connected to the study: Optuna's reporting calls (report, should_prune,
set_user_attr, number, params, user_attrs), made through the study's storage, so they work in a worker process or on
another machine. Outside a sweep it is a stand-in whose reports go nowhere, so the same code runs single runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sweep.attrs import (DEADLINE, FAILED_TRIAL, PAUSED, PROMOTED, REPEAT_OF, RESUMABLE, RUN_DIR, STOP_REASON,
                         STORAGE_ENV, STUDY_ENV, TRIAL_ENV)
from sweep.errors import UserError

_live: dict[str, tuple] = {}  # study name -> (Study, storage) of a sweep running in this very process
_opened: dict[tuple, Any] = {}  # (storage url, study name) -> Study, reused by the trials of one worker
_current: dict[tuple, Any] = {}  # (study name, number, run dir) -> the trial handed out, so trial() is idempotent


class LocalTrial:
    """Outside a sweep: the calls a task makes on its trial, answered locally."""

    number = None
    study_name = None
    params: dict = {}
    study_attrs: dict = {}
    parent_run_id = None
    checkpoint_dir = None  # a single run keeps its state where it likes
    resuming = False
    pausing = False

    def __init__(self) -> None:
        self.user_attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


READ_ONLY_PRUNERS = ("MedianPruner", "PercentilePruner", "ThresholdPruner")  # read the trial and completed trials


class CompletedTrials:
    """What Optuna's median, percentile and threshold pruners read of a study: its direction and its completed
    trials. Completed trials never change, so they are read again only every few seconds, and always before a
    decision to prune: a report then costs one write, a decision to go on may lag a new result by those seconds,
    and a decision to stop never rests on old data (tests/plugin/test_task.py pins the decisions)."""

    REFRESH_SECONDS = 2.0

    def __init__(self, study, storage, study_id: int):
        self.direction, self.directions = study.direction, study.directions
        self._storage, self._study_id = storage, study_id
        self._trials, self.read_at = [], -float("inf")

    def refresh(self) -> None:
        from optuna.trial import TrialState

        self._trials = self._storage.get_all_trials(self._study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        self.read_at = time.monotonic()

    def get_trials(self, deepcopy: bool = True, states=None):
        from optuna.trial import TrialState

        if tuple(states or ()) != (TrialState.COMPLETE,):
            raise NotImplementedError("only completed trials are kept here")
        if time.monotonic() - self.read_at > self.REFRESH_SECONDS:
            self.refresh()
        return list(self._trials)


class SweepTrial:
    """A running trial of the sweep's study, reached through its storage with Optuna's public storage and pruner
    calls. A resumed run may report its history again: the first report of a step stands."""

    def __init__(self, study, storage, trial_id: int, number: int, run_dir: str | None = None):
        self.study, self.number, self._run_dir = study, number, run_dir
        self.pausing = False  # should_prune() said stop because the trial pauses: save state, then raise TrialPruned
        self._storage, self._id = storage, trial_id
        frozen = storage.get_trial(trial_id)
        self.params, self.distributions = dict(frozen.params), dict(frozen.distributions)
        self.deadline = frozen.system_attrs.get(DEADLINE)
        self._values = dict(frozen.intermediate_values)
        self._reported = set(frozen.intermediate_values)
        # A repeat (hydra.sweeper.repeats) measures its configuration's spread: it runs to the end.
        self._prunes = type(study.pruner).__name__ != "NopPruner" and REPEAT_OF not in frozen.user_attrs
        self._light, self._study_attrs, self._rungs, self._pruning_study, self._write = None, None, None, None, None
        self._system_attrs = dict(frozen.system_attrs)
        if type(study.pruner).__name__ in READ_ONLY_PRUNERS:
            self._light = CompletedTrials(study, storage, storage.get_study_id_from_name(study.study_name))

    @property
    def checkpoint_dir(self) -> Path | None:
        """Where this trial keeps its state between runs: its run directory. Asking for it tells the sweep that the
        task saves and restores its state there, so hydra/sweeper/pruner=asha may pause the trial instead of
        stopping it, and resume it later with `resuming` true."""
        if self._run_dir is None:
            return None
        if not self._system_attrs.get(RESUMABLE):
            self._storage.set_trial_system_attr(self._id, RESUMABLE, True)
            self._system_attrs[RESUMABLE] = True
        return Path(self._run_dir)

    @property
    def resuming(self) -> bool:
        """True when this run continues a paused trial that the sweep promoted: load the state in checkpoint_dir."""
        return self._system_attrs.get(PROMOTED) is not None

    @property
    def user_attrs(self) -> dict[str, Any]:
        return dict(self._storage.get_trial(self._id).user_attrs)

    @property
    def study_name(self) -> str:
        """The sweep's study: the group an app's tracker puts this trial's run in."""
        return self.study.study_name

    @property
    def study_attrs(self) -> dict[str, Any]:
        """The study's user attributes, read once: what the sweep publishes for its trials (a tracker's parent run)."""
        if self._study_attrs is None:
            study_id = self._storage.get_study_id_from_name(self.study.study_name)
            self._study_attrs = dict(self._storage.get_study_user_attrs(study_id))
        return self._study_attrs

    @property
    def parent_run_id(self) -> str | None:
        """The sweep's parent run in its tracker (hydra.sweeper.tracker), for linking this trial's run to it."""
        return self.study_attrs.get("parent_run_id")

    def report(self, value: float, step: int) -> None:
        if len(self.study.directions) > 1:
            raise NotImplementedError("trial.report is not supported for multi-objective studies (as in Optuna)")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"trial.report: the value must be a number, not {value!r}") from None
        if not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise TypeError(f"trial.report: the step must be an integer >= 0, not {step!r}")
        if step in self._reported:
            return
        if self._write is None:
            from sweep.sweeper.storage import report_writer

            self._write = report_writer(self._storage)
        self._write(self._id, step, value)
        self._reported.add(step)
        self._values[step] = value

    def should_prune(self) -> bool:
        if self.deadline is not None and time.time() >= self.deadline:
            self.set_user_attr(STOP_REASON, "stopped by hydra.sweeper.time_budget")
            return True
        if not self._prunes or not self._reported:  # a pruner that never prunes costs no query
            return False
        # This trial as the pruner sees it, from what it reported; the study through a view that is read again only
        # every few seconds: completed trials for median, percentile and threshold; every trial's rungs for halving
        # and hyperband, which keep this trial's rungs in its system attributes.
        if self._light is not None:
            view, study, me = self._light, self._light, self._frozen({})
        else:
            study, me = self._rung_study(), self._frozen(self._system_attrs)
            view = self._rungs
            view.me = me
        prune = self.study.pruner.prune(study, me)
        if prune and view.read_at < time.monotonic() - 0.1:  # decide to stop on fresh data only
            view.refresh()
            prune = self.study.pruner.prune(study, me)
        if not prune:
            return False
        step, name = max(self._reported), _pruner_name(self.study.pruner)
        if name == "asha" and self._system_attrs.get(RESUMABLE):
            self._storage.set_trial_system_attr(self._id, PAUSED, step)
            self.set_user_attr(STOP_REASON, f"paused at step {step} by asha")
            self.pausing = True
        elif name == "asha":
            self.set_user_attr(STOP_REASON, f"pruned at step {step} by asha (the task keeps no checkpoint, so it "
                                            "cannot pause: see sweep.trial().checkpoint_dir)")
        else:
            self.set_user_attr(STOP_REASON, f"pruned at step {step} by {name}")
        return True

    def set_user_attr(self, key: str, value: Any) -> None:
        self._storage.set_trial_user_attr(self._id, key, value)

    def _frozen(self, system_attrs: dict):
        """This trial as a pruner sees it, built from what it reported: no read of it from storage per epoch."""
        from optuna.trial import FrozenTrial, TrialState

        return FrozenTrial(number=self.number, state=TrialState.RUNNING, value=None, datetime_start=None,
                           datetime_complete=None, params=self.params, distributions=self.distributions,
                           user_attrs={}, system_attrs=dict(system_attrs), intermediate_values=dict(self._values),
                           trial_id=self._id)

    def _rung_study(self):
        """Optuna's own Study for halving and hyperband, over a storage that spares a read per epoch."""
        if self._rungs is None:
            import optuna

            study_id = self._storage.get_study_id_from_name(self.study.study_name)
            self._rungs = RungStorage(self._storage, study_id, self._id, self._system_attrs)
            self._pruning_study = optuna.Study(study_name=self.study.study_name, storage=self._rungs,
                                               pruner=self.study.pruner, sampler=self.study.sampler)
        return self._pruning_study


class RungStorage:
    """The storage as halving and hyperband use it between epochs, passed through but for a few reads. The study's
    trials are read again only every few seconds, and always before a decision to prune (finished trials and their
    rungs never change). This trial is the one the pruner is judging, as it reported, and its rungs are kept here as
    the pruner writes them, so a report costs no read of it (tests/plugin/test_task.py pins the decisions). The
    study's id and directions are read once."""

    REFRESH_SECONDS = 2.0

    def __init__(self, storage, study_id: int, trial_id: int, attrs: dict):
        self._storage, self._study_id, self._trial_id, self._attrs = storage, study_id, trial_id, attrs
        self._trials, self.read_at, self.me = [], -float("inf"), None
        self._ids: dict[str, int] = {}
        self._directions: dict[int, list] = {}

    def refresh(self) -> None:
        self._trials = self._storage.get_all_trials(self._study_id, deepcopy=False)
        self.read_at = time.monotonic()

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        if study_id != self._study_id:
            return self._storage.get_all_trials(study_id, deepcopy=deepcopy, states=states)
        if time.monotonic() - self.read_at > self.REFRESH_SECONDS:
            self.refresh()
        trials = [t for t in self._trials if t._trial_id != self._trial_id] + [self.me]
        trials.sort(key=lambda t: t.number)
        return [t for t in trials if states is None or t.state in states]

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._storage.set_trial_system_attr(trial_id, key, value)
        if trial_id == self._trial_id:
            self._attrs[key] = value

    # Hyperband builds a Study per decision, which asks for these two; neither changes in a study's life.
    def get_study_id_from_name(self, study_name: str) -> int:
        if study_name not in self._ids:
            self._ids[study_name] = self._storage.get_study_id_from_name(study_name)
        return self._ids[study_name]

    def get_study_directions(self, study_id: int) -> list:
        if study_id not in self._directions:
            self._directions[study_id] = self._storage.get_study_directions(study_id)
        return self._directions[study_id]

    def __getattr__(self, name: str):
        return getattr(self._storage, name)


def trial():
    """The running trial: a SweepTrial in a sweep, a LocalTrial stand-in otherwise."""
    number = os.environ.get(TRIAL_ENV)
    if number is None:
        return LocalTrial()
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        raise UserError(f"{TRIAL_ENV}={number} is set, but no Hydra job is running; unset it for a single run")
    hc = HydraConfig.get()
    run_dir = str(Path(hc.runtime.output_dir).resolve())
    key = (os.environ.get(STUDY_ENV), int(number), run_dir)
    if key not in _current:
        study, storage = _study(hc)
        _current.clear()  # one trial per job: the previous job's trial is done
        study_id = storage.get_study_id_from_name(study.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
        storage.set_trial_user_attr(trial_id, RUN_DIR, run_dir)
        _current[key] = SweepTrial(study, storage, trial_id, int(number), run_dir)
    return _current[key]


def _study(hc):
    from sweep.sweeper import storage as st
    from sweep.settings import PRUNER_TARGETS, build

    sw, name = hc.sweeper, os.environ.get(STUDY_ENV) or hc.sweeper.study_name
    if name in _live:
        return _live[name]
    saved = os.environ.get(STORAGE_ENV)
    spec = st.parse(st.from_env(saved) if saved else None, base=Path(hc.runtime.cwd))
    if spec.kind == "memory":
        raise UserError("hydra.sweeper.storage=null keeps the study in the sweep process's memory, which this "
                        "worker process cannot reach; set a storage URL (sqlite:///multirun/studies/NAME.db) "
                        "or use hydra/launcher=basic")
    cache_key = (spec.url, name)
    if cache_key not in _opened:
        pruner = build(sw.pruner, PRUNER_TARGETS, "hydra/sweeper/pruner") if sw.get("pruner") else None
        backend = st.open_storage(spec, create=False)
        study = st.load_study_from(backend, spec, name, "hydra.sweeper.storage", pruner=pruner)
        _opened[cache_key] = (study, backend)
    return _opened[cache_key]


def register(study, storage) -> None:
    """A sweep in this process makes its study reachable for in-process jobs (needed for in-memory storage)."""
    _live[study.study_name] = (study, storage)


def unregister(study) -> None:
    _live.pop(study.study_name, None)
    _current.clear()


def _pruner_name(pruner) -> str:
    names = {"MedianPruner": "median", "SuccessiveHalvingPruner": "halving", "HyperbandPruner": "hyperband",
             "PercentilePruner": "percentile", "ThresholdPruner": "threshold", "PatientPruner": "patient",
             "PromotingHalving": "asha"}
    return names.get(type(pruner).__name__, type(pruner).__name__)


def previous_run_dir(trial) -> Path | None:
    """The run directory of the trial that `trial` retries (its worker died), where its checkpoints are; else None."""
    if not isinstance(trial, SweepTrial):  # a LocalTrial, or a stand-in of the app's own
        return None
    original = trial._storage.get_trial_system_attrs(trial._id).get(FAILED_TRIAL)
    if not isinstance(original, int):
        return None
    study_id = trial._storage.get_study_id_from_name(trial.study.study_name)
    before = trial._storage.get_trial(trial._storage.get_trial_id_from_study_id_trial_number(study_id, original))
    return Path(before.user_attrs[RUN_DIR]) if before.user_attrs.get(RUN_DIR) else None
