from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from sweep.mlp.config import register_resolvers
from sweep.mlp.config import CONF_DIR, HYDRA_DEFAULTS


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real configs with overrides, the data cache kept under tmp_path."""
    register_resolvers()  # what an app composing these configs does (sweep.train's entry points do it)

    def make(*overrides: str, hydra: bool = False):
        with initialize_config_dir(config_dir=CONF_DIR, **HYDRA_DEFAULTS):
            return compose("config", overrides=[f"data.cache_dir={tmp_path / 'cache'}", *overrides],
                           return_hydra_config=hydra)
    return make


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and tests run side by side
