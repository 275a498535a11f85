"""A plain PyTorch training loop that a sweep can prune: report each epoch, stop when told.

    python examples/pytorch_loop.py                 # one run: sweep.trial() is a stand-in, nothing is reported
    python examples/pytorch_loop.py --multirun      # 16 trials, two at a time, the hopeless ones pruned
"""

import math

import hydra
import optuna
import torch
from omegaconf import DictConfig
from torch import nn

import sweep

# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


def spirals(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two interleaved spirals: a small problem that still needs hidden layers."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 3 * math.pi
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.stack([t * torch.cos(t + math.pi * y), t * torch.sin(t + math.pi * y)], 1) / 10
    return x + 0.05 * torch.randn(n, 2, generator=g), y


@hydra.main(config_path="conf", config_name="pytorch_loop", **HYDRA_DEFAULTS)
def main(cfg: DictConfig) -> float:
    torch.manual_seed(cfg.seed)
    x, y = spirals(1200, seed=0)  # the same data for every trial: 1000 to train on, 200 to validate
    model = nn.Sequential(nn.Linear(2, cfg.width), nn.ReLU(), nn.Linear(cfg.width, cfg.width), nn.ReLU(),
                          nn.Linear(cfg.width, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    trial = sweep.trial()
    for epoch in range(1, cfg.epochs + 1):
        for idx in torch.randperm(1000).split(cfg.batch_size):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = (model(x[1000:]).argmax(1) == y[1000:]).float().mean().item()
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return accuracy


if __name__ == "__main__":
    main()
