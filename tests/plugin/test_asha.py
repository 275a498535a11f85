"""Asynchronous successive halving with promotion: trials pause at a rung, a later worker resumes the best paused one
its rung promotes, a task without checkpoints falls back to stopping, and a sweep stopped while trials are paused
loses none of them."""

from __future__ import annotations

import signal
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from helpers import (ASHA, BAD, GOOD, assert_one_line_error, check_promotion, epochs_run, memory_handle, run_app,
                     start_app, trials, wait_for)
from sweep.attrs import FAIL_REASON, HEARTBEAT, PAUSED, PROMOTED, STOP_REASON
from sweep.sweeper import report
from sweep.sweeper.asha import PromotingHalving

MAX = StudyDirection.MAXIMIZE


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / "curve.db"


def test_rungs_and_the_rule_that_promotes_a_paused_trial():
    asha = PromotingHalving(min_resource=2, reduction_factor=3)
    assert [s for s in range(1, 60) if asha.rung_of(s) is not None] == [2, 6, 18, 54]
    assert asha.in_top(0.5, [], MAX) and not asha.in_top(0.5, [0.6], MAX)  # alone it passes; behind one it pauses
    space, study = {"x": FloatDistribution(0, 1)}, optuna.create_study()
    for i, v in enumerate([0.9, 0.8, 0.1, 0.2, 0.3, 0.05]):
        study.add_trial(create_trial(params={"x": i / 10}, distributions=space, state=TrialState.PRUNED,
                                     intermediate_values={2: v}))
    study = study.trials
    assert asha.promotable(study[:3], {1: 2}, MAX) is None  # 3 at the rung: its top third is trial 0 alone
    assert asha.promotable(study, {1: 2, 2: 2}, MAX) == 1  # 6 there: the top third is trials 0 and 1


def test_a_paused_trial_is_promoted_when_later_trials_do_worse_and_resumes_where_it_stopped(tmp_path):
    result = run_app("--multirun", *ASHA, "hydra.sweeper.n_trials=8", f"hydra.sweeper.enqueue=[{GOOD},{BAD}]",
                     cwd=tmp_path)
    check_promotion(result, _db(tmp_path))


def test_a_task_without_checkpoints_stops_as_with_halving_and_says_why(tmp_path):
    result = run_app("--multirun", *ASHA[:-2], "resumable=false", "hydra.sweeper.n_trials=4",
                     f"hydra.sweeper.enqueue=[{GOOD},{BAD}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    pruned = [t for t in trials(_db(tmp_path), "curve") if t.state == TrialState.PRUNED]
    assert pruned and all("cannot pause" in t.user_attrs[STOP_REASON] for t in pruned)
    assert (result.stdout + result.stderr).count("asha cannot pause") == 1  # one warning for the sweep, not one per trial


def test_an_interrupt_keeps_a_trial_its_task_paused_even_before_the_sweep_handled_its_end():
    # Ctrl-C can land between a task writing its pause and the sweep handling that job's end: storage decides.
    handle = memory_handle()
    space = {"x": FloatDistribution(0, 1)}
    paused, running, done = (handle.ask(space, None) for _ in range(3))
    handle.backend.set_trial_system_attr(handle.trial_id(paused.number), PAUSED, 2)
    handle.tell(done, values=[0.5])
    handle.stop_interrupted([paused.number, running.number, done.number], "sweep interrupted")
    found = {t.number: t for t in handle.study.get_trials(deepcopy=False)}
    assert found[paused.number].state == TrialState.RUNNING and found[paused.number].system_attrs[HEARTBEAT] == 0
    assert found[running.number].state == TrialState.FAIL
    assert found[running.number].user_attrs[FAIL_REASON] == "sweep interrupted"
    assert found[done.number].state == TrialState.COMPLETE


def _interrupt_with_a_paused_trial(tmp_path) -> tuple[list, str]:
    """An asha sweep stopped with Ctrl-C once a trial is paused; its paused trials and its output."""
    # Epochs of 1 s: the bad trials that would promote the paused one take seconds to reach step 1, far longer than
    # the poll below needs to see the pause and interrupt.
    sweep = start_app("--multirun", *ASHA, "hydra.sweeper.n_trials=8", "epoch_seconds=1.0",
                      f"hydra.sweeper.enqueue=[{GOOD},{BAD}]", cwd=tmp_path)
    try:
        wait_for(lambda: _db(tmp_path).exists() and any(
            t.system_attrs.get(PAUSED) == 1 for t in trials(_db(tmp_path), "curve")), "a paused trial",
            process=sweep)
        sweep.send_signal(signal.SIGINT)
        out, err = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    paused = [t for t in trials(_db(tmp_path), "curve") if t.state == TrialState.RUNNING]
    assert [t.system_attrs[PAUSED] for t in paused] == [1] * len(paused) and paused  # kept, not FAIL
    return paused, out + err


def test_a_sweep_interrupted_while_a_trial_is_paused_resumes_it_on_rerun(tmp_path):
    paused, output = _interrupt_with_a_paused_trial(tmp_path)
    assert f"{len(paused)} paused (the next sweep resumes them)" in output
    table = report.trials_table(optuna.load_study(study_name="curve", storage=f"sqlite:///{_db(tmp_path)}"))
    assert sorted(table[table["state"] == "PAUSED"]["trial"]) == [t.number for t in paused]
    more = ",".join(f"{{lr:{0.0021 + i / 10000:.4f},width:8}}" for i in range(6))
    result = run_app("--multirun", *ASHA, "hydra.sweeper.n_trials=6", f"hydra.sweeper.enqueue=[{more}]",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "paused at step 1 by an earlier sweep" in result.stdout
    found = {t.number: t for t in trials(_db(tmp_path), "curve")}
    for before in paused:
        after = found[before.number]
        assert after.state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert len(epochs_run(after)) == len(set(epochs_run(after)))  # nothing run twice
    assert any(found[t.number].system_attrs.get(PROMOTED, 0) >= 1 for t in paused)  # and one went on from step 1


def test_trials_left_paused_end_pruned_when_the_next_sweep_uses_another_pruner(tmp_path):
    paused, _ = _interrupt_with_a_paused_trial(tmp_path)
    result = run_app("--multirun", "hydra/sweeper/pruner=median", "hydra.sweeper.n_trials=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = {t.number: t for t in trials(_db(tmp_path), "curve")}
    for before in paused:
        assert found[before.number].state == TrialState.PRUNED
        assert found[before.number].user_attrs[STOP_REASON].endswith("(paused, never promoted)")


def test_bad_asha_settings_are_one_line_naming_the_pruner(tmp_path):
    result = run_app("--multirun", "hydra/sweeper/pruner=asha", "hydra.sweeper.pruner.reduction_factor=1",
                     cwd=tmp_path)
    assert_one_line_error(result, "hydra/sweeper/pruner", "reduction_factor=1", "integer >= 2")
