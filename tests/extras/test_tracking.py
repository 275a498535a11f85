"""Trackers through hydra.sweeper.callbacks: optuna-integration's MLflowCallback, unchanged, with its real package,
called in the sweep's process after each trial; read back through MLflow's own client."""

from __future__ import annotations

import pytest

from helpers import run_app

pytest.importorskip("optuna_integration")
mlflow = pytest.importorskip("mlflow")


def test_optuna_integrations_mlflow_callback_logs_a_run_per_trial(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_app("--multirun", "hydra.sweeper.n_trials=4", "hydra/sweeper/pruner=median",
                     "hydra.sweeper.pruner.n_startup_trials=1",
                     f"hydra.sweeper.callbacks=[{{_target_:optuna_integration.mlflow.MLflowCallback,"
                     f"tracking_uri:'{uri}',metric_name:score}}]", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "curve"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4
    assert all({"lr", "width"} <= set(r.data.params) for r in runs)
    assert {r.data.tags.get("state") for r in runs} <= {"COMPLETE", "PRUNED"}
    completed = [r for r in runs if r.data.tags.get("state") == "COMPLETE"]
    assert completed and all("score" in r.data.metrics for r in completed)
