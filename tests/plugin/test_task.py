"""The task's side: sweep.trial() in a job reports through the study's storage, and its pruning decisions are
Optuna's own, whatever shortcut it takes to read the study."""

from __future__ import annotations

import time

import optuna
import pytest
from optuna.distributions import FloatDistribution

from sweep.sweeper import storage as st
from sweep.sweeper.task import CompletedTrials, RungStorage, SweepTrial


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


@pytest.mark.parametrize("pruner", [
    lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
    lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=8, reduction_factor=2)],
    ids=["halving", "hyperband"])
def test_rung_pruning_decisions_are_optunas_own(tmp_path, pruner):
    """Two studies with the same history: in one, each new trial reports through SweepTrial (its rungs kept in the
    worker, the study's trials read at most every few seconds); in the other, through Optuna's own Trial. Every
    decision and every rung written must match."""
    curves = [[0.2 + 0.1 * k + 0.02 * s for s in range(8)] for k in range(6)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    study, worker, wstudy = _study(tmp_path / "a", pruner(), curves)
    theirs_study = _study(tmp_path / "b", pruner(), curves)[0]
    candidates = [[0.25 + 0.02 * s for s in range(8)], [0.7 + 0.01 * s for s in range(8)], [0.5] * 8,
                  [0.9 - 0.1 * s for s in range(8)], [0.45 + 0.03 * s for s in range(8)]]
    pruned = 0
    for curve in candidates:
        ours = study.ask({"x": FloatDistribution(0, 1)})
        theirs = theirs_study.ask({"x": FloatDistribution(0, 1)})
        assert ours.number == theirs.number
        mine = _connect(worker, wstudy, ours.number)
        decisions = []
        for step, value in enumerate(curve, 1):
            mine.report(value, step)
            theirs.report(value, step)
            decisions.append((mine.should_prune(), theirs.should_prune()))
            if decisions[-1][1]:
                break
        assert [a for a, _ in decisions] == [b for _, b in decisions], (curve, decisions)
        rungs = lambda s, n: {k: v for k, v in s.trials[n].system_attrs.items() if "rung" in k}  # noqa: E731
        assert rungs(study, ours.number) == rungs(theirs_study, theirs.number)
        if decisions[-1][1]:
            pruned += 1
            study.tell(ours, state=optuna.trial.TrialState.PRUNED)
            theirs_study.tell(theirs, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(ours, curve[-1])
            theirs_study.tell(theirs, curve[-1])
    assert 0 < pruned < len(candidates)  # the candidates tested both answers


def test_a_rung_decision_to_prune_rests_on_fresh_data(tmp_path, monkeypatch):
    """Halving reads the study at most every few seconds (here: never by the clock), but never prunes on that: a
    decision to stop is checked against the trials as they are now."""
    monkeypatch.setattr(RungStorage, "REFRESH_SECONDS", 3600.0)
    study, worker, wstudy = _study(tmp_path, optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2), [])

    def judged_by_optuna(curve):  # its rungs written by Optuna's own Trial
        t = study.ask({"x": FloatDistribution(0, 1)})
        for step, value in enumerate(curve, 1):
            t.report(value, step)
            if t.should_prune():
                return study.tell(t, state=optuna.trial.TrialState.PRUNED)
        study.tell(t, curve[-1])

    judged_by_optuna([0.9, 0.9])
    judged_by_optuna([0.9, 0.9])
    mine = _connect(worker, wstudy, study.ask({"x": FloatDistribution(0, 1)}).number)
    mine.report(0.95, 1)
    assert not mine.should_prune()  # read now: two trials at the second rung, both at 0.9
    for _ in range(5):
        judged_by_optuna([0.96, 0.1])  # five more at the second rung, all below what this trial reports next
    mine.report(0.5, 2)
    assert not mine.should_prune()  # what it read said stop (0.5 of 0.9, 0.9); the study as it is says go on


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
