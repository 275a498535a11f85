"""The sphere: the smallest Hydra app a sweeper can tune (hydra-optuna-sweeper's own example, with our sweeper).

    python examples/sphere.py --multirun
    python examples/sphere.py --multirun 'x=choice(0, 1, 2)' y=0        # change the space; fix a key
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="sphere", version_base=None)
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    sphere()
