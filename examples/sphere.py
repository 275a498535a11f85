"""The sphere: the smallest Hydra app a sweeper can tune (hydra-optuna-sweeper's own example, with our sweeper).

    python examples/sphere.py --multirun
    python examples/sphere.py --multirun 'x=choice(0, 1, 2)' y=0        # change the space; fix a key
"""

import hydra
from omegaconf import DictConfig

# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


@hydra.main(config_path="conf", config_name="sphere", **HYDRA_DEFAULTS)
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return cfg.x**2 + cfg.y**2


if __name__ == "__main__":
    sphere()
