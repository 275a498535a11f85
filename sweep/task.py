"""The task's side of a sweep: `sweep.trial()` is the Optuna trial this run reports to.

    trial = sweep.trial()
    for epoch in range(1, epochs + 1):
        ...
        trial.report(val_accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

Inside a sweep it is an `optuna.trial.Trial` connected to the study (in the worker process too: it reaches the
study through the sweep's storage). Outside one it is a stand-in whose reports go nowhere, so the same code runs
single runs.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

from sweep.errors import UserError

# Set for each job by the sweeper, through hydra.job.env_set: the trial's number, its study, and the study's
# storage (absolute, and only when it holds no password; otherwise the job's hydra.sweeper.storage is used).
TRIAL_ENV, STUDY_ENV, STORAGE_ENV = "SWEEP_TRIAL", "SWEEP_STUDY", "SWEEP_STORAGE"
DEADLINE_ATTR = "sweep:deadline"  # trial system attr: unix time at which hydra.sweeper.time_budget runs out
STOP_REASON = "stop_reason"  # user attr: why a pruned trial stopped, for the report

_live: dict[str, Any] = {}  # study name -> Study of a sweep running in this very process (in-memory storage)
_opened: dict[tuple, Any] = {}  # (storage url, study name) -> Study, reused by the trials of one worker
_current: dict[tuple, Any] = {}  # (study name, number, run dir) -> the trial handed out, so trial() is idempotent


class LocalTrial:
    """Outside a sweep: the calls a task makes on its trial, answered locally."""

    number = None
    params: dict = {}

    def __init__(self) -> None:
        self.user_attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        pass

    def should_prune(self) -> bool:
        return False

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


def trial():
    """The running trial: an optuna.trial.Trial in a sweep, a LocalTrial stand-in otherwise."""
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
        study = _study(hc)
        _current.clear()  # one trial per job: the previous job's trial is done
        _current[key] = _connect(study, int(number), run_dir)
    return _current[key]


def _study(hc):
    from hydra.utils import instantiate

    from sweep import storage as st

    sw, name = hc.sweeper, os.environ.get(STUDY_ENV) or hc.sweeper.study_name
    if name in _live:
        return _live[name]
    spec = st.parse(os.environ.get(STORAGE_ENV) or sw.get("storage"), base=Path(hc.runtime.cwd))
    if spec.kind == "memory":
        raise UserError("hydra.sweeper.storage=null keeps the study in the sweep process's memory, which this "
                        "worker process cannot reach; set a storage URL (sqlite:///multirun/studies/NAME.db) "
                        "or use hydra/launcher=basic")
    cache_key = (spec.url, name)
    if cache_key not in _opened:
        pruner = instantiate(sw.pruner, _execution_whitelist_=("optuna.pruners.*",)) if sw.get("pruner") else None
        _opened[cache_key] = st.load_study(spec, name, "hydra.sweeper.storage", pruner=pruner)
    return _opened[cache_key]


def _connect(study, number: int, run_dir: str):
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    trial = _trial_class()(study, trial_id)
    trial.set_user_attr("run_dir", run_dir)
    return trial


def register(study) -> None:
    """A sweep in this process makes its study reachable for in-process jobs (needed for in-memory storage)."""
    _live[study.study_name] = study


def unregister(study) -> None:
    _live.pop(study.study_name, None)
    _current.clear()


def _pruner_name(pruner) -> str:
    names = {"MedianPruner": "median", "SuccessiveHalvingPruner": "halving", "HyperbandPruner": "hyperband",
             "PercentilePruner": "percentile", "ThresholdPruner": "threshold", "PatientPruner": "patient"}
    return names.get(type(pruner).__name__, type(pruner).__name__)


def previous_run_dir(trial) -> Path | None:
    """The run directory of the trial that `trial` retries (its worker died), where its checkpoints are; else None."""
    if getattr(trial, "study", None) is None:  # a LocalTrial, or a stand-in of the app's own
        return None
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = trial.study._storage.get_trial(trial._trial_id)
    original = RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
    if original is None:
        return None
    for t in trial.study.get_trials(deepcopy=False):
        if t.number == original and t.user_attrs.get("run_dir"):
            return Path(t.user_attrs["run_dir"])
    return None


@functools.cache
def _trial_class():
    import optuna

    class SweepTrial(optuna.trial.Trial):
        """optuna.trial.Trial, plus what a sweep adds: the time budget, the reason a trial stopped, and
        reports that a resumed run may repeat without counting twice."""

        def __init__(self, study, trial_id: int):
            super().__init__(study, trial_id)
            attrs = study._storage.get_trial_system_attrs(trial_id)
            self.deadline = attrs.get(DEADLINE_ATTR)
            self._reported = set(study._storage.get_trial(trial_id).intermediate_values)

        def report(self, value: float, step: int) -> None:
            if step in self._reported:  # a resumed run re-reports its history: the first report stands
                return
            super().report(value, step)
            self._reported.add(step)

        def should_prune(self) -> bool:
            if self.deadline is not None and time.time() >= self.deadline:
                self.set_user_attr(STOP_REASON, "stopped by hydra.sweeper.time_budget")
                return True
            if super().should_prune():
                step = max(self._reported) if self._reported else 0
                self.set_user_attr(STOP_REASON, f"pruned at step {step} by {_pruner_name(self.study.pruner)}")
                return True
            return False

    return SweepTrial


def __getattr__(name: str):
    if name == "SweepTrial":  # built on first use, so `import sweep` never imports Optuna
        return _trial_class()
    raise AttributeError(name)
