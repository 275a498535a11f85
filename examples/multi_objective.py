"""Two objectives at once (Binh and Korn): the sweep keeps the Pareto front of trade-offs.

    python examples/multi_objective.py --multirun
"""

import hydra
from omegaconf import DictConfig

# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


@hydra.main(config_path="conf", config_name="multi_objective", **HYDRA_DEFAULTS)
def binh_and_korn(cfg: DictConfig) -> tuple[float, float]:
    x, y = cfg.x, cfg.y
    return 4 * x**2 + 4 * y**2, (x - 5) ** 2 + (y - 5) ** 2


if __name__ == "__main__":
    binh_and_korn()
