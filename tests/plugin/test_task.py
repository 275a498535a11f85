"""The task's side: sweep.trial() in a job reports through the study's storage, and its pruning decisions are
Optuna's own, whatever shortcut it takes to read the study."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.distributions import FloatDistribution

from sweep.sweeper import storage as st
from sweep.sweeper.task import CompletedTrials, SweepTrial


def _study(tmp_path, pruner, curves):
    spec = st.parse(f"sqlite:///{tmp_path / 'p.db'}")
    study = optuna.create_study(storage=st.open_storage(spec), study_name="s", direction="maximize", pruner=pruner)
    for curve in curves:
        t = study.ask({"x": FloatDistribution(0, 1)})
        for step, v in enumerate(curve, 1):
            t.report(v, step)
        study.tell(t, curve[-1])
    worker = st.open_storage(spec, create=False)
    return study, worker, st.load_study_from(worker, spec, "s", "x", pruner=pruner)


def _connect(worker, wstudy, number):
    sid = worker.get_study_id_from_name("s")
    return SweepTrial(wstudy, worker, worker.get_trial_id_from_study_id_trial_number(sid, number), number)


@pytest.mark.parametrize("pruner", [optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
                                    optuna.pruners.PercentilePruner(25.0, n_startup_trials=2),
                                    optuna.pruners.ThresholdPruner(lower=0.3)])
def test_pruning_decisions_are_optunas_own(tmp_path, pruner):
    curves = [[0.2 + 0.1 * k + 0.02 * s for s in range(8)] for k in range(5)]
    study, worker, wstudy = _study(tmp_path, pruner, curves)
    candidates = [[0.25 + 0.02 * s for s in range(8)], [0.7 + 0.01 * s for s in range(8)], [0.5] * 8]
    for curve in candidates:
        ours = study.ask({"x": FloatDistribution(0, 1)})
        theirs = study.ask({"x": FloatDistribution(0, 1)})  # the same curve, judged by Optuna's own Trial
        mine = _connect(worker, wstudy, ours.number)
        for step, value in enumerate(curve, 1):
            mine.report(value, step)
            theirs.report(value, step)
            assert mine.should_prune() == theirs.should_prune(), (type(pruner).__name__, curve, step)
        study.tell(ours, curve[-1])
        study.tell(theirs, curve[-1])


def test_a_decision_to_prune_rests_on_fresh_data(tmp_path):
    study, worker, wstudy = _study(tmp_path, optuna.pruners.MedianPruner(n_startup_trials=1), [[0.9, 0.9]])
    running = study.ask({"x": FloatDistribution(0, 1)})
    trial = _connect(worker, wstudy, running.number)
    trial.report(0.95, 1)
    assert trial.should_prune() is False  # and the completed trials are now cached: [0.9, 0.9]
    weak = study.ask({"x": FloatDistribution(0, 1)})  # completes meanwhile, far below
    weak.report(0.1, 1)
    weak.report(0.1, 2)
    study.tell(weak, 0.1)
    trial.report(0.6, 2)  # below the cached median (0.9), above the fresh one (0.5)
    assert trial.should_prune() is False
    judge = study.ask({"x": FloatDistribution(0, 1)})
    judge.report(0.95, 1)
    judge.report(0.6, 2)
    assert not judge.should_prune()  # what Optuna's own Trial decides


def test_reports_count_once_and_the_deadline_stops_the_trial(tmp_path):
    study, worker, wstudy = _study(tmp_path, optuna.pruners.NopPruner(), [])
    running = study.ask({"x": FloatDistribution(0, 1)})
    trial = _connect(worker, wstudy, running.number)
    trial.report(0.5, 1)
    trial.report(0.9, 1)  # a resumed run reporting its history again: the first stands
    assert study.trials[0].intermediate_values == {1: 0.5} and trial.params == running.params
    assert trial.should_prune() is False
    trial.deadline = time.time() - 1
    assert trial.should_prune() is True and trial.user_attrs["stop_reason"] == "stopped by hydra.sweeper.time_budget"
    with pytest.raises(TypeError, match="must be a number"):
        trial.report("high", 2)


def test_the_completed_trials_view_serves_only_what_those_pruners_read(tmp_path):
    study, worker, wstudy = _study(tmp_path, optuna.pruners.MedianPruner(), [[0.1], [0.2]])
    view = CompletedTrials(wstudy, worker, worker.get_study_id_from_name("s"))
    assert [t.value for t in view.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))] == [0.1, 0.2]
    with pytest.raises(NotImplementedError):
        view.get_trials(deepcopy=False)
