"""One study in its storage, through Optuna's public API: open or resume it, ask and tell, keep running trials
alive with heartbeats, and fail (and retry) the trials of a sweep that died.

Heartbeats are a trial system attribute that the sweep refreshes, so they work on every storage, the journal
included: a RUNNING trial whose heartbeat is older than the grace period belongs to a sweep that is gone.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import warnings
from typing import Any, Callable, Iterable

import optuna
from optuna.trial import TrialState

from sweep.sweeper import storage as st
from sweep.errors import UserError, first_line
from sweep.settings import SAMPLER_TARGETS, build
from sweep.attrs import DEADLINE, FAIL_REASON, FAILED_TRIAL, HEARTBEAT, REPEAT_ATTRS, RETRY_HISTORY, SWEEP_ATTRS
from sweep.sweeper.asha import paused_step

log = logging.getLogger(__name__)
# What updating a finished trial raises: Optuna 4.4 named it; before, it was a RuntimeError.
FINISHED = getattr(optuna.exceptions, "UpdateFinishedTrialError", RuntimeError)


def _started(deadline: float | None) -> dict:
    """A new trial's system attributes: its first heartbeat, and when hydra.sweeper.time_budget runs out."""
    return {HEARTBEAT: time.time(), **({DEADLINE: deadline} if deadline is not None else {})}


class StudyHandle:
    def __init__(self, spec: st.Storage, name: str | None, directions: list[str], sampler: Any, pruner: Any,
                 metric_names: list[str] | None, heartbeat_interval: int, grace_period: int, retries: int):
        self.spec, self.name, self.directions = spec, name, directions
        self.sampler, self.pruner, self.metric_names = sampler, pruner, metric_names
        self.heartbeat_interval, self.grace_period, self.retries = heartbeat_interval, grace_period, retries
        self._beating = threading.Event()
        self._ids: dict[int, int] = {}  # trial number -> trial id
        self.adopted: dict[int, int] = {}  # asha: number -> step, trials an ended sweep left paused, now this one's

    def open(self, enqueue: list[dict], sampler_cfg: Any = None) -> int:
        """Create or load the study; returns how many trials it already had."""
        self.backend = st.open_storage(self.spec)
        try:
            self.study = optuna.create_study(study_name=self.name, storage=self.backend, sampler=self.sampler,
                                             pruner=self.pruner, directions=self.directions, load_if_exists=True)
        except ValueError as e:  # an existing study with other directions
            raise UserError(f"hydra.sweeper.direction: {e}") from None
        except st.errors() as e:
            raise UserError(f"hydra.sweeper.storage={self.spec}: cannot open study {self.name!r} there "
                            f"({st.cause(e, self.spec)})") from None
        found = [d.name.lower() for d in self.study.directions]
        if found != self.directions:
            raise UserError(f"hydra.sweeper.direction={self.directions} does not match study "
                            f"{self.study.study_name!r}, which is {found}; use another study_name")
        self.study_id = self.backend.get_study_id_from_name(self.study.study_name)
        if self.metric_names and self.study.metric_names != self.metric_names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(self.metric_names)
        self.fail_stale()
        earlier = len(self.study.get_trials(deepcopy=False, states=(
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)))
        for params in enqueue:  # known-good starting points; skipped when the study already has them
            self.study.enqueue_trial(params, skip_if_exists=True)
        seed = sampler_cfg.get("seed") if sampler_cfg is not None and hasattr(sampler_cfg, "get") else None
        if earlier and seed is not None and not isinstance(self.sampler, functools.partial):
            # A resumed study with a seeded sampler would otherwise replay the first run's configurations.
            self.study.sampler = build(sampler_cfg, SAMPLER_TARGETS, "hydra/sweeper/sampler", seed=seed + earlier)
        return earlier

    def check_space(self, distributions: dict) -> None:
        """A resumed study whose parameter changed kind (choice -> interval, float -> int): one line naming it."""
        from optuna.distributions import check_distribution_compatibility

        seen: dict[str, Any] = {}
        for t in self.study.get_trials(deepcopy=False):
            for name, old in t.distributions.items():
                seen.setdefault(name, old)
        for name, new in distributions.items():
            old = seen.get(name)
            if old is None:
                continue
            try:
                check_distribution_compatibility(old, new)
            except ValueError:
                raise UserError(f"hydra.sweeper.params.{name}: study {self.study.study_name!r} has it as "
                                f"{_kind(old)}, this sweep as {_kind(new)}; keep its kind, or start a new study "
                                "(another hydra.sweeper.study_name)") from None

    def add_trials(self, trials: list) -> int:
        """Finished trials of another study, added as they are (the samplers learn from them); returns how many."""
        for t in trials:
            self.study.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, values=t.values,
                intermediate_values=t.intermediate_values,
                user_attrs={**{k: v for k, v in t.user_attrs.items() if k not in SWEEP_ATTRS + REPEAT_ATTRS},
                            "warm_start_from": t.user_attrs.get("warm_start_from") or t.number}))
        return len(trials)

    def delete_if_empty(self) -> None:
        """Undo opening a study that never got a trial (the sweep was refused right after)."""
        if not self.study.get_trials(deepcopy=False):
            optuna.delete_study(study_name=self.study.study_name, storage=self.backend)

    # ------------------------------------------------------------ trials

    def trial_id(self, number: int) -> int:
        if number not in self._ids:
            self._ids[number] = self.backend.get_trial_id_from_study_id_trial_number(self.study_id, number)
        return self._ids[number]

    def ask(self, distributions: dict, deadline: float | None) -> optuna.trial.Trial:
        with warnings.catch_warnings():  # samplers warn about what they cannot do jointly; the space is the user's
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask(fixed_distributions=distributions)
        trial_id = self.trial_id(trial.number)
        for key, value in _started(deadline).items():
            self.backend.set_trial_system_attr(trial_id, key, value)
        return trial

    def add_running(self, params: dict, distributions: dict, user_attrs: dict,
                    deadline: float | None) -> optuna.trial.Trial:
        """A trial of given parameters, RUNNING from the start with its heartbeat (hydra.sweeper.repeats)."""
        template = optuna.trial.create_trial(
            state=TrialState.RUNNING, params=params, distributions=distributions, user_attrs=user_attrs,
            system_attrs=_started(deadline))
        trial_id = self.backend.create_new_trial(self.study_id, template_trial=template)
        number = self.backend.get_trial_number_from_id(trial_id)
        self._ids[number] = trial_id
        return optuna.trial.Trial(self.study, trial_id)

    def tell(self, trial: optuna.trial.Trial | int, values: list[float] | None = None,
             state: TrialState = TrialState.COMPLETE, reason: str | None = None) -> bool:
        """Finish a trial; False when it was finished already (another sweep failed it as stale)."""
        number = trial if isinstance(trial, int) else trial.number
        wanted = TrialState.COMPLETE if values is not None else state
        try:
            if reason is not None:
                self.backend.set_trial_user_attr(self.trial_id(number), FAIL_REASON, reason)
        except FINISHED:
            return False
        try:
            told = self.study.tell(trial, values=values, state=None if values is not None else state,
                                   skip_if_finished=True)
        except RuntimeError as e:
            # A sampler's after_trial may raise after the tell went through: GridSampler calls study.stop() once
            # the grid is exhausted, which Optuna allows only inside optimize(). The state is what counts.
            told = self.backend.get_trial(self.trial_id(number))
            if not told.state.is_finished():
                raise
            if not isinstance(self.sampler, functools.partial):
                log.warning("the sampler complained after trial %d: %s", number, first_line(e))
        return told.state == wanted

    def frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self.backend.get_trial(self.trial_id(number))

    def retry(self, number: int) -> bool:
        """Queue the trial again with its parameters and what it reported (a lost worker is not the configuration's
        fault), at most `retries` times. The system attributes are Optuna's own for retries ("failed_trial",
        "retry_history"), so its RetryFailedTrialCallback.retried_trial_number reads them too; the sweep's own
        (heartbeat, deadline) stay behind with the failed trial."""
        failed = self.frozen(number)
        history = [*failed.system_attrs.get(RETRY_HISTORY, []), number]
        if not self.retries or len(history) > self.retries:
            return False
        self.study.add_trial(optuna.trial.create_trial(
            state=TrialState.WAITING, params=failed.params, distributions=failed.distributions,
            user_attrs={k: v for k, v in failed.user_attrs.items() if k not in SWEEP_ATTRS},
            system_attrs={FAILED_TRIAL: history[0], RETRY_HISTORY: history},
            intermediate_values=failed.intermediate_values))
        return True

    # ------------------------------------------------------------ heartbeats

    def fail_stale(self) -> list[int]:
        """FAIL the RUNNING trials whose sweep stopped vouching for them, with that reason, and queue retries;
        returns the trials retried."""
        if self.spec.kind == "memory":
            return []
        now, retried = time.time(), []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT)
            if not isinstance(beat, (int, float)):  # killed between its creation and its first heartbeat
                beat = t.datetime_start.timestamp() if t.datetime_start else now
            if t.number in self._ids or now - beat <= self.grace_period:
                continue  # ours, or alive
            step = paused_step(t)
            if step is not None:  # paused, and its sweep is gone: this sweep may promote it
                self.backend.set_trial_system_attr(self.trial_id(t.number), HEARTBEAT, now)
                self.adopted[t.number] = step
                continue
            if self.tell(t.number, state=TrialState.FAIL, reason="its sweep stopped sending heartbeats"):
                log.warning("Trial %d: its sweep stopped sending heartbeats %.0f s ago; marked FAIL",
                            t.number, now - beat)
                if self.retry(t.number):
                    retried.append(t.number)
        return retried

    def start_heartbeats(self, running: Callable[[], Iterable[int]]) -> None:
        if self.spec.kind == "memory":
            return

        def beat():
            while not self._beating.wait(self.heartbeat_interval):
                try:
                    now = time.time()
                    for number in list(running()):
                        self.backend.set_trial_system_attr(self.trial_id(number), HEARTBEAT, now)
                except FINISHED:
                    pass  # it finished between the listing and the write
                except st.errors() as e:  # the main loop reports a lost database; keep trying meanwhile
                    log.warning("heartbeat not recorded: %s", first_line(e))

        threading.Thread(target=beat, daemon=True, name="sweep-heartbeat").start()

    def stop_heartbeats(self) -> None:
        self._beating.set()

    def stop_interrupted(self, numbers: Iterable[int], reason: str) -> None:
        """The trials of an interrupted sweep, once its workers have stopped. One its task paused is left RUNNING and
        paused, with a heartbeat so old that the next sweep adopts it at once: storage decides, since the pause is
        written before its job ends, and the interrupt may come before the sweep has handled that end. Any other trial
        still running is FAIL."""
        for number in numbers:
            try:
                frozen = self.frozen(number)
                if frozen.state.is_finished():
                    continue
                if paused_step(frozen) is not None:
                    self.backend.set_trial_system_attr(self.trial_id(number), HEARTBEAT, 0)
                else:
                    self.tell(number, state=TrialState.FAIL, reason=reason)
            except (FINISHED, *st.errors()) as e:
                log.warning("trial %d left as it was: %s", number, first_line(e))


def _kind(d) -> str:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(d, CategoricalDistribution):
        return f"choice{tuple(d.choices)}"
    word = "int " if isinstance(d, IntDistribution) else "float "
    return f"{word}{'log ' if d.log else ''}interval({d.low}, {d.high})"


def warm_trials(settings: dict, distributions: dict) -> list:
    """The completed trials of the study hydra.sweeper.warm_start names, checked against this sweep's space: a
    parameter the space lacks, or has as another kind, is one line naming it."""
    from optuna.distributions import check_distribution_compatibility

    setting = "hydra.sweeper.warm_start"
    spec = st.parse(settings["storage"], f"{setting}.storage")
    other = st.load_study(spec, settings["study_name"], f"{setting}.storage")
    done = other.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for t in done:
        for name, d in t.distributions.items():
            if name not in distributions:
                raise UserError(f"{setting}: study {settings['study_name']!r} has the parameter {name}, which this "
                                "sweep's space lacks; warm-start from a study over the same space")
            try:
                check_distribution_compatibility(d, distributions[name])
            except ValueError:
                raise UserError(f"{setting}: study {settings['study_name']!r} has {name} as {_kind(d)}, this sweep "
                                f"as {_kind(distributions[name])}") from None
    return done
