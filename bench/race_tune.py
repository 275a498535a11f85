"""The Ray Tune contender of bench/race.py: the same MLP, data, search space and epochs, searched by Ray Tune's
OptunaSearch with ASHA, reused actors, two trials at a time. Run by bench/race.py, one process per round.

    python bench/race_tune.py OUT_DIR --space digits --trials 40 --epochs 40 --seed 0 [--budget S] \
        [--default-actors] --fixed data=digits trainer.epochs=40 ...

Writes OUT_DIR/tune.json: each trial's start, end (seconds since this process started), epochs and result.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

STARTED = time.time()
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as sweep.train sets it before torch loads
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def trainable(config: dict) -> None:
    """One trial: compose sweep.train's config with the sampled values, train, report every epoch to Tune."""
    import torch
    from hydra import compose, initialize_config_dir
    from ray import tune

    from sweep.mlp.config import CONF_DIR, HYDRA_DEFAULTS, register_resolvers
    from sweep.mlp.train import train
    from sweep.sweeper.space import override_value
    register_resolvers()

    torch.set_num_threads(1)  # one CPU per trial, as the pool gives each of two workers on two cores
    overrides = [f"{k}={override_value(v)}" for k, v in config["params"].items()] + list(config["fixed"])
    with initialize_config_dir(config_dir=CONF_DIR, **HYDRA_DEFAULTS):
        cfg = compose("config", overrides=overrides)
    started = time.time() - STARTED

    class Reporter:
        number = None
        reported = False

        def report(self, value: float, step: int) -> None:
            self.reported = True
            tune.report({"val_accuracy": value, "epoch": step, "started": started})

        def should_prune(self) -> bool:
            return False  # ASHA stops the trial itself

        def set_user_attr(self, key, value) -> None:
            pass

    out = Path(config["out"]) / f"trial-{time.time_ns()}"
    reporter = Reporter()
    train(cfg, out, reporter)
    # A run that diverged in its first epoch reported nothing, and Tune stops the whole run at a trial without its
    # metric: as a user would, such a trial scores 0.
    if not reporter.reported:
        tune.report({"val_accuracy": 0.0, "epoch": 1, "started": started})


def search_space(name: str) -> dict:
    """conf/search/NAME.yaml's hydra.sweeper.params as Optuna distributions, parsed by the sweeper's own parser."""
    from omegaconf import OmegaConf

    from sweep.mlp.config import CONF_DIR
    from sweep.sweeper.space import SearchSpace

    params = OmegaConf.load(Path(CONF_DIR) / "search" / f"{name}.yaml").hydra.sweeper.params
    return SearchSpace.parse(OmegaConf.to_container(params), []).distributions


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="digits", help="a space in conf/search/, read as the sweeper reads it")
    parser.add_argument("--budget", type=float, help="seconds: Tune's time_budget_s")
    parser.add_argument("--fixed", nargs="*", default=None, help="sweep.train overrides every trial gets")
    parser.add_argument("--default-actors", action="store_true", help="Ray's default reuse_actors=False")
    args = parser.parse_args()

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    space = {f"params/{k}": v for k, v in search_space(args.space).items()}
    search = OptunaSearch(space, metric="val_accuracy", mode="max", seed=args.seed)
    asha = ASHAScheduler(time_attr="epoch", max_t=args.epochs, grace_period=1, reduction_factor=4)
    args.out.mkdir(parents=True, exist_ok=True)
    fixed = args.fixed if args.fixed is not None else [
        "data=digits", f"trainer.epochs={args.epochs}", f"data.cache_dir={args.out / 'cache'}"]
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        param_space={"fixed": fixed, "out": str(args.out)},
        tune_config=tune.TuneConfig(search_alg=search, scheduler=asha, num_samples=args.trials, max_concurrent_trials=2,
                                    reuse_actors=not args.default_actors, metric="val_accuracy", mode="max",
                                    time_budget_s=args.budget),
        run_config=tune.RunConfig(storage_path=str(args.out / "ray"), verbose=0),
    )
    results = tuner.fit()
    trials = []
    for r in results:
        history = r.metrics_dataframe
        if history is None or history.empty:
            continue
        trials.append({"started": float(history["started"].iloc[0]),
                       "ended": float(history["timestamp"].iloc[-1]) - STARTED,
                       "epochs": int(history["epoch"].max()),
                       "best": float(history["val_accuracy"].max()),
                       "final": float(history["val_accuracy"].iloc[-1])})
    ray.shutdown()
    (args.out / "tune.json").write_text(json.dumps({"wall": time.time() - STARTED, "trials": trials}))


if __name__ == "__main__":
    main()
