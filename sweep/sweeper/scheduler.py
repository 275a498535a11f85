"""The one scheduling loop: keep the launcher's slots full, and tell the study about each trial as it ends.

It drives any launcher through the protocol in sweep/launchers/protocol.py, never asking which one it has: with the
pool, Ray or SLURM the next trial is asked for the moment any one ends; with a plain Hydra launcher (through
BatchAdapter) each batch waits for its slowest trial.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.samplers import GridSampler
from optuna.trial import TrialState

from sweep import attrs
from sweep.sweeper import signals, storage as st
from sweep.errors import UserError, first_line, shorten
from sweep.redact import redact
from sweep.launchers.protocol import Outcome, TrialLauncher, WorkerDied
from sweep.launchers.job import job_error
from sweep.sweeper.asha import paused_step
from sweep.sweeper.study import FINISHED, StudyHandle

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # how often the loop looks up from waiting: storage watch, time limits


class LostStorage(Exception):
    pass


@dataclass
class Limits:
    n_trials: int
    n_jobs: int
    max_failure_rate: float = 0.0
    timeout: float | None = None  # no new trial after this many seconds
    time_budget: float | None = None  # running trials stop at their next report after this many seconds
    retries: int = 0
    grace: float = 120.0  # after the time budget, how long a trial may go without answering before it is FAIL


@dataclass
class Scheduler:
    handle: StudyHandle
    runner: TrialLauncher
    limits: Limits
    distributions: dict  # the search space Optuna samples from
    make_job: Callable[[optuna.trial.Trial], list[str]]  # a trial's overrides
    progress: "Any"
    watch: st.FileWatch
    asked: list[int] = field(default_factory=list)
    asked_at: dict[int, float] = field(default_factory=dict)  # number -> when it was asked (for its start-up time)
    failures: list[str] = field(default_factory=list)
    inflight: dict[Future, optuna.trial.Trial] = field(default_factory=dict)
    callbacks: list = field(default_factory=list)  # (name, callback(study, frozen_trial)), after each trial ends
    stop: Any = None  # a StopRule: the whole sweep ends once it says so
    stopped: str | None = None  # why it did
    paused: dict[int, tuple[Any, int]] = field(default_factory=dict)  # asha: number -> (trial, step it paused at)
    adopted: list[int] = field(default_factory=list)  # paused trials an earlier sweep left, taken over by this one
    repeats: Callable[[list], list] | None = None  # hydra.sweeper.repeats: trials -> the runs still missing
    repeating: bool = False  # the search is done; the best configurations run again with other seeds
    pending: list = field(default_factory=list)  # the repeats not started yet
    last_running: Callable[[], None] | None = None  # called once, when every trial left to run is running
    _warned_pause: bool = False

    def run(self) -> None:
        limits = self.limits
        self._target = limits.n_trials  # grows by one for each retry queued: a lost worker costs no trial
        started = time.monotonic()
        stop_asking_at = started + min(_inf(limits.timeout), _inf(limits.time_budget))
        deadline = time.time() + limits.time_budget if limits.time_budget else None
        self.progress.deadline = stop_asking_at if stop_asking_at < math.inf else None
        self.handle.start_heartbeats(lambda: [t.number for t in list(self.inflight.values())] + list(self.paused))
        self._next_stale_check = started + self.handle.heartbeat_interval
        self._adopt()
        self._loop(stop_asking_at, deadline)
        self._end_paused()
        if self.repeats is not None:
            self.repeating = True
            if self._accepting(stop_asking_at):  # not interrupted, not out of time, not failing
                self._repeat(stop_asking_at, deadline)

    def _repeat(self, stop_asking_at: float, deadline: float | None) -> None:
        """The search is done: queue the runs its best configurations still miss, and run them."""
        todo = self.repeats(self.handle.study.get_trials(deepcopy=False))
        if not todo:
            return
        self.pending = list(todo)
        origins = sorted({r.origin for r in todo})
        log.info("Repeats: %d run(s) of the best configuration(s) (trial %s) with other seeds", len(todo),
                 ", ".join(map(str, origins)))
        self._target = len(self.asked) + len(todo)
        self.progress.n_trials += len(todo)
        self._loop(stop_asking_at, deadline)
        self._end_paused()  # paused trials of a dead sweep, adopted meanwhile

    def _loop(self, stop_asking_at: float, deadline: float | None) -> None:
        limits = self.limits
        while True:
            problem = self.watch.check()
            if problem:
                raise LostStorage(problem)
            if time.monotonic() > self._next_stale_check:  # another sweep on this study may have died
                self._target += len(self.handle.fail_stale())  # retries of another sweep's lost trials
                self._adopt()
                self._next_stale_check = time.monotonic() + self.handle.heartbeat_interval
            while len(self.inflight) < limits.n_jobs:  # a free worker: promote a paused trial, or start a new one
                if self.paused and self._accepting(stop_asking_at, new=False) and self._promote():
                    continue
                if not (self._accepting(stop_asking_at) and len(self.asked) < self._target):
                    break
                self._start_one(deadline)
            self.runner.flush()
            if not self.inflight:
                break
            if self.last_running is not None and self._all_running(stop_asking_at):
                hook, self.last_running = self.last_running, None
                hook()
            done, _ = wait(list(self.inflight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            self._collect(done)
            if deadline is not None and time.time() > deadline + limits.grace:
                self._give_up()

    def _all_running(self, stop_asking_at: float) -> bool:
        """Whether nothing is left to start (no trial to ask, no repeat to come, no paused trial to resume) and a
        trial has ended, so the workers are past their own start-up."""
        if self.paused or self.pending or (self.repeats is not None and not self.repeating):
            return False
        if len(self.asked) == len(self.inflight):
            return False
        return not (self._accepting(stop_asking_at) and len(self.asked) < self._target)

    def _adopt(self) -> None:
        """Paused trials whose sweep ended (interrupted, killed): this sweep may promote them."""
        for number, step in sorted(self.handle.adopted.items()):
            trial = optuna.trial.Trial(self.handle.study, self.handle.trial_id(number))
            self.paused[number] = (trial, step)
            self.adopted.append(number)
            log.info("trial %d: paused at step %d by an earlier sweep; this sweep may promote it", number, step)
        self.handle.adopted.clear()

    def _promote(self) -> bool:
        """asha: resume the paused trial its rung now promotes, if any, in the free worker."""
        pruner = self.handle.study.pruner
        if not hasattr(pruner, "promotable"):  # trials an asha sweep left paused, adopted by a sweep with another pruner
            return False
        trials = self.handle.study.get_trials(deepcopy=False)
        number = pruner.promotable(trials, {n: step for n, (_, step) in self.paused.items()}, self.handle.study.direction)
        if number is None:
            return False
        trial, step = self.paused.pop(number)
        trial_id = self.handle.trial_id(number)
        self.handle.backend.set_trial_system_attr(trial_id, attrs.PROMOTED, step)
        self.handle.backend.set_trial_system_attr(trial_id, attrs.PAUSED, None)
        self.asked_at[number] = time.time()
        self.inflight[self.runner.submit(self.make_job(trial), number)] = trial
        self.progress.resumed(number, step)
        return True

    def _end_paused(self) -> None:
        """Trials still paused when the sweep has nothing left to run were not promoted: PRUNED at their rung."""
        for number, (trial, step) in list(self.paused.items()):
            trial_id = self.handle.trial_id(number)
            self.handle.backend.set_trial_system_attr(trial_id, attrs.PAUSED, None)
            why = f"pruned at step {step} by asha (paused, never promoted)"
            self.handle.backend.set_trial_user_attr(trial_id, attrs.STOP_REASON, why)
            if self.handle.tell(trial, state=TrialState.PRUNED):
                self.progress.ended(number, TrialState.PRUNED, None, why)
            del self.paused[number]

    def _ended(self, number: int) -> None:
        """After a trial ends: the user's callbacks, as Optuna calls them (one that raises is reported once and turned
        off), and the stop rule. The trial is read from storage once, and only when either wants it."""
        wants_stop = self.stop is not None and not self.stopped
        if not self.callbacks and not wants_stop:
            return
        frozen = self.handle.frozen(number)
        if not frozen.state.is_finished():
            return
        for entry in list(self.callbacks):
            name, callback = entry
            try:
                callback(self.handle.study, frozen)
            except Exception as e:
                log.warning("%s raised %s; it is turned off for the rest of the sweep", name, redact(first_line(e)))
                self.callbacks.remove(entry)
        if wants_stop:
            self.stopped = self.stop.judge(frozen)
            if self.stopped:
                log.info("Stopping early: %s; running trials finish, no new one starts", self.stopped)

    def _give_up(self) -> None:
        """Trials still unanswered a grace period after the time budget (a launcher that lost them, a task that
        ignores its reports): FAIL, so the sweep ends."""
        for future, trial in list(self.inflight.items()):
            future.cancel()
            del self.inflight[future]
            reason = f"no answer from its launcher {self.limits.grace:g} s after hydra.sweeper.time_budget ran out"
            if self.handle.tell(trial, state=TrialState.FAIL, reason=reason):
                self.failures.append(reason)
                self.progress.ended(trial.number, TrialState.FAIL, None, reason)

    def _accepting(self, stop_asking_at: float, new: bool = True) -> bool:
        """Whether a worker may take work now: a new trial (new), or a paused one to resume. The stop rule and an
        exhausted grid end the search, not the repeats that follow it."""
        if self.stopped and not self.repeating:
            return False
        if len(self.failures) > self.limits.max_failure_rate * self.limits.n_trials:
            return False
        if time.monotonic() >= stop_asking_at:
            return False
        if not new or self.repeating:
            return True
        sampler = self.handle.study.sampler
        return not (isinstance(sampler, GridSampler) and sampler.is_exhausted(self.handle.study))

    def _start_one(self, deadline: float | None) -> None:
        with signals.deferred():  # a trial the study made RUNNING is this sweep's before Ctrl-C can land
            if self.pending:  # a repeat: made now, so one never started is planned again by the next sweep
                r = self.pending.pop(0)
                trial = self.handle.add_running(r.params, r.distributions,
                                                {attrs.REPEAT_OF: r.origin, attrs.SEED: r.seed}, deadline)
            else:
                trial = self.handle.ask(self.distributions, deadline)
            self.asked.append(trial.number)
            self.asked_at[trial.number] = time.time()
        try:
            overrides = self.make_job(trial)
        except UserError:
            self.handle.tell(trial, state=TrialState.FAIL, reason="its configuration could not be made")
            raise
        self.inflight[self.runner.submit(overrides, trial.number)] = trial
        self.progress.started(trial.number)

    def _finish(self, trial: optuna.trial.Trial, future: Future) -> None:
        outcome: Outcome | None = None
        try:
            outcome = future.result()
            error = job_error(outcome.ret) if outcome.ret.status.name != "COMPLETED" else None
        except Exception as e:  # WorkerDied, or the engine's own error
            error = e
        self._record_where(trial.number, outcome, error)
        if error is None:
            values, problem = objective_values(outcome.ret.return_value, len(self.handle.directions))
            if problem is None:
                if self.handle.tell(trial, values=values):
                    self.progress.ended(trial.number, TrialState.COMPLETE, values)
                return
            error = ValueError(problem)
        if isinstance(error, optuna.TrialPruned):
            frozen = self.handle.frozen(trial.number)
            step = paused_step(frozen)
            if step is not None:  # asha paused it: it waits, RUNNING, for its rung to promote it
                self.paused[trial.number] = (trial, step)
                self.progress.paused(trial.number, step)
                return
            why = frozen.user_attrs.get(attrs.STOP_REASON)
            if why and "cannot pause" in why and not self._warned_pause:
                self._warned_pause = True
                log.warning("hydra/sweeper/pruner=asha cannot pause trial %d: its task never asks "
                            "sweep.trial().checkpoint_dir, so trials below their rung stop for good, as with halving",
                            trial.number)
            if why is None:  # raised without asking should_prune()
                why = f"pruned: {error}" if str(error) else "pruned by the task"
                trial.set_user_attr(attrs.STOP_REASON, why)
            if self.handle.tell(trial, state=TrialState.PRUNED):
                self.progress.ended(trial.number, TrialState.PRUNED, None, why)
            return
        reason = first_line(error)[:500]
        if not self.handle.tell(trial, state=TrialState.FAIL, reason=reason):
            return
        self.progress.ended(trial.number, TrialState.FAIL, None, reason)
        if isinstance(error, WorkerDied) and self.handle.retry(trial.number):
            self._target += 1  # a lost worker costs no trial, and is no failure of the search while it is retried
        else:
            self.failures.append(reason)

    def settle(self) -> None:
        """The trials whose jobs had already ended when the sweep was interrupted (between an end and its handling):
        told as they ended, a paused one kept paused, instead of failed with the ones still running."""
        self._collect([f for f in self.inflight if f.done()])

    def _collect(self, done) -> None:
        """Tell each ended job's trial as it ended."""
        for future in done:
            trial = self.inflight.pop(future)
            self._finish(trial, future)
            self._ended(trial.number)

    def record_running(self) -> None:
        """Where the trials still running are (the sweep is stopping): their launcher may know already."""
        for future, trial in list(self.inflight.items()):
            where = getattr(future, "where", None)
            for key, value in (where or {}).items():
                try:
                    self.handle.backend.set_trial_user_attr(self.handle.trial_id(trial.number), key, value)
                except (FINISHED, *st.errors()):
                    break

    def _record_where(self, number: int, outcome: Outcome | None, error: BaseException | None) -> None:
        """Where and for how long the trial ran: the report shows it, and start-up is kept out of its seconds."""
        values: dict[str, Any] = {}
        if outcome is not None:
            values = {attrs.NODE: outcome.node, attrs.GPUS: outcome.gpus}
            if outcome.started is not None:
                values[attrs.STARTUP_SECONDS] = round(max(0.0, outcome.started - self.asked_at[number]), 3)
            if outcome.seconds is not None:
                values[attrs.RUN_SECONDS] = round(outcome.seconds, 3)
        elif isinstance(error, WorkerDied):
            values = {attrs.NODE: error.node, attrs.GPUS: error.gpus}
        trial_id = self.handle.trial_id(number)
        for key, value in values.items():
            try:
                self.handle.backend.set_trial_user_attr(trial_id, key, value)
            except FINISHED:
                return


def objective_values(value: Any, n: int) -> tuple[list[float] | None, str | None]:
    """The objective values a task returned, or why they cannot be used: a number per objective, never a string or
    a bool (float('0.5') and float(True) would pass silently)."""
    def number(v: Any) -> bool:
        if isinstance(v, (str, bytes, bool)) or type(v).__name__ == "bool_":
            return False
        return isinstance(v, numbers.Real) or (hasattr(v, "__float__") and getattr(v, "ndim", 0) == 0)

    expected = "a number" if n == 1 else f"a sequence of {n} numbers"
    items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig" else None
    if items is None and n == 1:
        items = [value]
    if items is None or not all(number(v) for v in items):
        return None, f"the task returned {shorten(repr(value), 80)}, expected {expected}"
    try:
        values = [float(v) for v in items]
    except (OverflowError, ValueError):  # 10**400: an int no float can hold
        return None, f"the task returned {shorten(repr(value), 80)}, not a finite number"
    if len(values) != n:
        return None, (f"the task returned {shorten(repr(tuple(values)), 80)}, expected {n} value(s): hydra.sweeper.direction "
                      f"has {n} objective(s)")
    if not all(math.isfinite(v) for v in values):
        return None, f"the task returned {shorten(repr(value), 80)}, not a finite number"
    return values, None


def _inf(value: float | None) -> float:
    return math.inf if value is None else value
