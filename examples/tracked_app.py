"""Your own app's MLflow runs: one child run per trial, under the parent run the sweep makes (hydra.sweeper.tracker).

    python examples/tracked_app.py --multirun       # then: mlflow ui --backend-store-uri sqlite:///mlflow.db
    python examples/tracked_app.py                  # one run, without a parent

Needs pip install 'sweep[mlflow]'. sweep.tracking.MLflowLogger does the same for sweep.train's logger=mlflow.
"""

import math

import hydra
import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

import sweep

# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


@hydra.main(config_path="conf", config_name="tracked_app", **HYDRA_DEFAULTS)
def main(cfg: DictConfig) -> float:
    trial = sweep.trial()  # in a sweep: its study_name, number and the tracker's parent_run_id
    client = MlflowClient(cfg.tracking_uri)
    if trial.parent_run_id:  # the child goes where its parent is, linked by id
        experiment = client.get_run(trial.parent_run_id).info.experiment_id
        tags = {"mlflow.parentRunId": trial.parent_run_id, "study": trial.study_name}
    else:
        experiment, tags = "0", {}  # MLflow's default experiment
    run = client.create_run(experiment, run_name=f"trial-{trial.number}", tags=tags).info.run_id
    client.log_param(run, "lr", cfg.lr)
    status = "FAILED"
    try:
        for step in range(1, cfg.steps + 1):
            loss = (math.log10(cfg.lr) + 2) ** 2 + 1 / step  # a loss curve whose floor depends on lr
            client.log_metric(run, "loss", loss, step=step)
            trial.report(loss, step)
            if trial.should_prune():
                status = "KILLED"
                raise optuna.TrialPruned()
        status = "FINISHED"
        return loss
    finally:  # the run ends with the trial's state, whatever happens
        client.set_terminated(run, status)


if __name__ == "__main__":
    main()
