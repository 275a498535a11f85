"""The scheduling loop alone: a fake launcher that answers as each test says, and Optuna's in-memory storage. No
process, no Hydra job: what the loop decides (how many at once, retries, failure rate, limits, values) is checked
directly."""

from __future__ import annotations

import os
import signal
from concurrent.futures import Future

import pytest
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from helpers import memory_handle
from sweep.launchers.protocol import Outcome, TrialLauncher, WorkerDied, slots_for
from sweep.sweeper.scheduler import Limits, Scheduler
from sweep.sweeper.storage import FileWatch, Storage
from sweep.sweeper.summary import Progress

SPACE = {"x": FloatDistribution(0, 1)}


class FakeLauncher:
    """Answers each trial with `answer(number, overrides)`: a value, an exception, or NEVER (the future never
    resolves). Trials submitted are answered only when the scheduler flushes, so `most` counts those in flight."""

    NEVER = object()
    in_sweep_process = True

    def __init__(self, answer, events=None):
        self.answer, self.slots, self.most, self.pending, self.started = answer, 0, 0, [], []
        self.events = [] if events is None else events  # ("submit", n) and ("answer", n), in order

    def start(self, n_jobs, at_most=None):
        self.slots = slots_for(n_jobs, None, at_most)

    def submit(self, overrides, number):
        future = Future()
        self.pending.append((number, list(overrides), future))
        self.started.append(number)
        self.events.append(("submit", number))
        return future

    def flush(self):
        self.most = max(self.most, len([f for *_, f in self.pending if not f.done()]))
        for number, overrides, future in self.pending:
            if future.done():
                continue
            answer = self.answer(number, overrides)
            if answer is self.NEVER:
                continue
            self.events.append(("answer", number))
            if isinstance(answer, WorkerDied):
                future.set_exception(answer)
            elif isinstance(answer, BaseException):
                future.set_result(Outcome(JobReturn(overrides, status=JobStatus.FAILED, _return_value=answer)))
            else:
                future.set_result(Outcome(JobReturn(overrides, status=JobStatus.COMPLETED, _return_value=answer)))
        self.pending = [p for p in self.pending if not p[2].done()]

    def shutdown(self, kill=False):
        pass


def scheduler_for(answer, n_trials=4, n_jobs=2, directions=("maximize",), last_running=None, events=None, **limits):
    """A scheduler over an in-memory study and a FakeLauncher answering with `answer`, not yet run."""
    handle = memory_handle(directions, retries=limits.get("retries", 0))
    launcher = FakeLauncher(answer, events)
    assert isinstance(launcher, TrialLauncher)  # the protocol, as the sweeper checks it
    launcher.start(n_jobs, at_most=n_trials)
    return Scheduler(handle, launcher, Limits(n_trials, launcher.slots, **limits), SPACE,
                     lambda trial: [f"x={trial.params['x']}"], Progress(n_trials, list(directions), handle.study),
                     FileWatch(Storage("memory", None)), last_running=last_running)


def sweep(answer, **kw):
    scheduler = scheduler_for(answer, **kw)
    scheduler.run()
    return scheduler, scheduler.runner, {t.number: t for t in scheduler.handle.study.get_trials(deepcopy=False)}


def test_ctrl_c_while_the_study_makes_a_trial_lands_after_the_sweep_owns_it(monkeypatch):
    # Optuna's ask has made the trial RUNNING when Ctrl-C comes: the interrupt waits until the trial is this
    # sweep's, so the interrupted sweep can end it (or keep it paused) instead of leaving it RUNNING for good.
    scheduler = scheduler_for(lambda number, overrides: 0.5, n_jobs=1)
    handle = scheduler.handle
    asked = handle.ask

    def ask_then_ctrl_c(*args):
        trial = asked(*args)
        os.kill(os.getpid(), signal.SIGINT)
        return trial

    monkeypatch.setattr(handle, "ask", ask_then_ctrl_c)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever ran here before
    try:
        with pytest.raises(KeyboardInterrupt):
            scheduler._start_one(None)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
    finally:
        signal.signal(signal.SIGINT, before)
    (trial,) = handle.study.get_trials(deepcopy=False)
    assert scheduler.asked == [trial.number] and trial.state == TrialState.RUNNING


def test_a_signal_deferred_to_a_default_handler_still_ends_the_process():
    import subprocess
    import sys

    code = ("import os, signal; from sweep.sweeper.signals import deferred\n"
            "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
            "with deferred():\n    os.kill(os.getpid(), signal.SIGTERM)\n    print('held', flush=True)\n"
            "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGTERM and done.stdout == "held\n", (done.returncode, done.stdout, done.stderr)


def test_the_end_is_prepared_once_every_trial_left_is_running():
    # The sweeper imports what its report needs while the last trials run: once, when nothing is left to start and
    # a trial has ended (the workers are past their start-up), not while the search still asks for trials.
    events: list = []
    _, _, trials = sweep(lambda n, o: 0.5, n_trials=5, n_jobs=2, events=events,
                         last_running=lambda: events.append(("last running",)))
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials.values())
    assert events.count(("last running",)) == 1
    at = events.index(("last running",))
    assert sorted(n for kind, *n in events[:at] if kind == "submit") == [[0], [1], [2], [3], [4]]
    assert any(kind == "answer" for kind, *_ in events[:at])


def test_it_keeps_the_slots_full_and_tells_each_value():
    scheduler, launcher, trials = sweep(lambda n, o: float(o[0].split("=")[1]), n_trials=5, n_jobs=2)
    assert launcher.most == 2 and len(trials) == 5
    assert all(t.state == TrialState.COMPLETE and t.value == t.params["x"] for t in trials.values())


def test_a_lost_worker_is_retried_and_costs_no_trial():
    lost = {1}
    scheduler, launcher, trials = sweep(
        lambda n, o: WorkerDied("worker died: signal 9") if n in lost else 0.5, n_trials=3, retries=1)
    assert trials[1].state == TrialState.FAIL and trials[1].user_attrs["fail_reason"].startswith("WorkerDied")
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == 1]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == trials[1].params
    assert sum(t.state == TrialState.COMPLETE for t in trials.values()) == 3


def test_a_failing_configuration_is_not_retried_and_the_failure_rate_stops_asking():
    scheduler, launcher, trials = sweep(lambda n, o: ValueError("bad"), n_trials=10, n_jobs=1, retries=3,
                                        max_failure_rate=0.2)
    # 0.2 of 10 allows two failures; the third stops the sweep from asking for more.
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials.values())
    assert scheduler.failures == ["ValueError: bad"] * 3


@pytest.mark.parametrize("returned, why", [
    ("0.5", "expected a number"), (True, "expected a number"), (float("nan"), "not a finite number"),
    (10 ** 400, "not a finite number"),
])
def test_a_result_that_is_not_a_usable_number_fails_its_trial_with_the_reason(returned, why):
    scheduler, launcher, trials = sweep(lambda n, o: returned, n_trials=1, max_failure_rate=1.0)
    assert trials[0].state == TrialState.FAIL and why in trials[0].user_attrs["fail_reason"]


def test_no_trial_starts_after_the_timeout():
    scheduler, launcher, trials = sweep(lambda n, o: 1.0, n_trials=5, timeout=1e-9)
    assert launcher.started == [] and trials == {}


def test_multi_objective_values_are_told_in_order_and_a_wrong_count_fails():
    scheduler, launcher, trials = sweep(lambda n, o: (1.0, 2.0) if n else (1.0,), n_trials=3,
                                        directions=("maximize", "minimize"), max_failure_rate=1.0)
    assert trials[0].state == TrialState.FAIL and "expected 2 value(s)" in trials[0].user_attrs["fail_reason"]
    assert [trials[n].values for n in (1, 2)] == [[1.0, 2.0], [1.0, 2.0]]


def test_a_trial_whose_future_never_resolves_fails_a_grace_period_after_the_time_budget():
    scheduler, launcher, trials = sweep(lambda n, o: FakeLauncher.NEVER if n == 0 else 1.0, n_trials=3,
                                        time_budget=2.0, grace=0.0, max_failure_rate=1.0)
    assert trials[0].state == TrialState.FAIL
    assert "no answer from its launcher" in trials[0].user_attrs["fail_reason"]
    assert not scheduler.inflight
