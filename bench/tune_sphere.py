"""Ray Tune's side of bench/overhead.py's instant trials: examples/sphere.py's function as a Tune trainable, its
space (examples/conf/sphere.yaml, read by the sweeper's own parser) searched by OptunaSearch, reused actors, two
trials at a time. Run by bench/overhead.py, one process per round.

    python bench/tune_sphere.py OUT.json --trials 200

Writes OUT.json: the wall time from this process's start, and each trial's end in seconds since then.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STARTED = time.time()
ROOT = Path(__file__).resolve().parents[1]


def sphere(config: dict) -> None:
    from ray import tune

    tune.report({"value": config["x"] ** 2 + config["y"] ** 2, "ended": time.time()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()

    import ray
    from omegaconf import OmegaConf
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from sweep.sweeper.space import SearchSpace

    params = OmegaConf.to_container(OmegaConf.load(ROOT / "examples" / "conf" / "sphere.yaml").hydra.sweeper.params)
    space = SearchSpace.parse(params, []).distributions
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tuner = tune.Tuner(
        tune.with_resources(sphere, {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=OptunaSearch(space, metric="value", mode="min", seed=0),
                                    num_samples=args.trials, max_concurrent_trials=2, reuse_actors=True,
                                    metric="value", mode="min"),
        run_config=tune.RunConfig(storage_path=str(args.out.parent / "ray"), verbose=0),
    )
    results = tuner.fit()
    ends = sorted(r.metrics["ended"] - STARTED for r in results if r.metrics)
    ray.shutdown()
    args.out.write_text(json.dumps({"wall": time.time() - STARTED, "ends": ends}))


if __name__ == "__main__":
    main()
