"""hydra.sweeper.repeats: the best configurations run again with other seeds once the search is done, the report ranks
them by the mean, and a sweep stopped during its repeats loses none and runs none twice on rerun."""

from __future__ import annotations

import signal
import statistics
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from helpers import assert_one_line_error, run_app, start_app, trials, wait_for
from sweep.attrs import REPEAT_OF, RUN_DIR, SEED

NOISY = ["noise=0.05", "hydra/sweeper/pruner=median"]


def _db(cwd: Path) -> Path:
    return cwd / "multirun" / "studies" / "curve.db"


def _repeats(found: list) -> list:
    return [t for t in found if REPEAT_OF in t.user_attrs]


def test_the_best_configurations_run_again_with_other_seeds_and_the_report_ranks_them_by_mean(tmp_path):
    result = run_app("--multirun", *NOISY, "hydra.sweeper.n_trials=5", "hydra.sweeper.repeats=2",
                     "hydra.sweeper.report=true", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = trials(_db(tmp_path), "curve")
    search = [t for t in found if REPEAT_OF not in t.user_attrs]
    best_two = sorted(search, key=lambda t: -t.value)[:2]
    repeats = _repeats(found)
    assert len(search) == 5 and len(repeats) == 2
    assert sorted(t.user_attrs[REPEAT_OF] for t in repeats) == sorted(t.number for t in best_two)
    for t in repeats:  # the same configuration, never pruned, and the app saw the next seed
        origin = found[t.user_attrs[REPEAT_OF]]
        assert t.state == TrialState.COMPLETE and t.params == origin.params and t.user_attrs[SEED] == 1
        assert Path(t.user_attrs[RUN_DIR], "seed").read_text() == "1"
        assert Path(origin.user_attrs[RUN_DIR], "seed").read_text() == "0"
        assert t.value != origin.value  # the seed moved the result
    ranked = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())["repeats"]
    means = {t.number: statistics.fmean([t.value, *(r.value for r in repeats if r.user_attrs[REPEAT_OF] == t.number)])
             for t in best_two}
    assert [r["trial"] for r in ranked] == sorted(means, key=lambda n: -means[n])
    assert [r["mean"] for r in ranked] == pytest.approx(sorted(means.values(), reverse=True))
    assert all(r["runs"] == 2 for r in ranked)
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "Best mean over seeds: trial" in report and "## Repeated configurations, best mean first" in report
    assert "Best by the mean over seeds:" in result.stderr + result.stdout


def test_a_sweep_interrupted_during_its_repeats_runs_only_the_missing_ones_on_rerun(tmp_path):
    args = ["--multirun", *NOISY, "hydra.sweeper.repeats=3", "epochs=2", "hydra.sweeper.n_jobs=1"]
    sweep = start_app(*args, "hydra.sweeper.n_trials=3", "epoch_seconds=0.5", cwd=tmp_path)
    try:
        wait_for(lambda: any(t.state == TrialState.RUNNING for t in _repeats(trials(_db(tmp_path), "curve"))),
                 "a running repeat", process=sweep)
        sweep.send_signal(signal.SIGINT)
        sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    before = _repeats(trials(_db(tmp_path), "curve"))
    assert any(t.state == TrialState.FAIL for t in before) and len(before) < 6
    # The rerun's one new trial is the worst configuration there is (lr=0.001 scores 0), so the best three stay.
    result = run_app(*args, "hydra.sweeper.n_trials=1", "hydra.sweeper.enqueue=[{lr:0.001,width:8}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    done = [(t.user_attrs[REPEAT_OF], t.user_attrs[SEED]) for t in _repeats(trials(_db(tmp_path), "curve"))
            if t.state == TrialState.COMPLETE]
    assert sorted(done) == sorted((n, s) for n in (0, 1, 2) for s in (1, 2))  # each run once: none lost, none twice
    finished_before = {(t.user_attrs[REPEAT_OF], t.user_attrs[SEED]) for t in before if t.state == TrialState.COMPLETE}
    assert f"Repeats: {6 - len(finished_before)} run(s)" in result.stderr + result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["hydra.sweeper.repeats=0"], "hydra.sweeper.repeats"),
    (["hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=trainer.seed"], "hydra.sweeper.seed_key=trainer.seed: the app's config has no such key"),
    (["hydra.sweeper.repeats=2", "hydra.sweeper.seed_key=width"], "hydra.sweeper.seed_key=width is swept"),
    (["hydra.sweeper.repeats=2", "hydra.sweeper.direction=[maximize,minimize]", "hydra.sweeper.metric_names=[a,b]"],
     "multi-objective"),
])
def test_repeats_that_cannot_run_are_one_line_before_any_trial(tmp_path, args, fragment):
    result = run_app("--multirun", *args, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert trials(_db(tmp_path), "curve") == []
