"""A search space that depends on itself: z is drawn near x, through the sweeper's custom_search_space hook.

    python examples/custom_search_space.py --multirun
"""

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial

# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


@hydra.main(config_path="conf", config_name="custom_search_space", **HYDRA_DEFAULTS)
def multi_dimensional_sphere(cfg: DictConfig) -> float:
    return cfg.w**2 + cfg.x**2 + cfg.y**2 + cfg.z**2


def configure(cfg: DictConfig, trial: Trial) -> None:
    """Called for each trial after the space in the config is drawn: suggest what depends on it."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)  # "+w": a key the config does not have yet


if __name__ == "__main__":
    multi_dimensional_sphere()
