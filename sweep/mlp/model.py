"""The model: a multi-layer perceptron over flattened images."""

from __future__ import annotations

import os

import torch
from torch import nn

from sweep.errors import UserError

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}


class MLP(nn.Sequential):
    def __init__(self, in_features: int, hidden_sizes: list[int], num_classes: int,
                 activation: str = "relu", norm: str = "none", dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden_sizes:
            layers.append(nn.Linear(width, h, bias=norm != "batch"))  # batch norm's shift makes the bias redundant
            if norm == "batch":
                layers.append(nn.BatchNorm1d(h))
            elif norm == "layer":
                layers.append(nn.LayerNorm(h))
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> MLP:
    in_features = 1
    for d in input_shape:
        in_features *= d
    hidden = list(cfg.hidden_sizes)
    widths = [in_features, *hidden, num_classes]
    params = sum(a * b + b for a, b in zip(widths, widths[1:]))
    # Weights, gradients and two optimizer buffers, in float32: say which setting is too big before allocating.
    need, have = 16 * params, _memory_bytes()
    if have and need > have:
        raise UserError(f"model.hidden_sizes={hidden} makes {params:,} parameters, which need about "
                        f"{need / 2**30:.1f} GiB to train; this machine has {have / 2**30:.1f} GiB; "
                        "lower model.width or model.depth")
    try:
        return MLP(in_features, hidden, num_classes, cfg.activation, cfg.norm, cfg.dropout)
    except RuntimeError as e:  # the allocator gave up anyway
        raise UserError(f"model.hidden_sizes={hidden} does not fit in memory ({str(e).splitlines()[0]}); "
                        "lower model.width or model.depth") from None


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_optimizer(cfg, params, device: torch.device) -> torch.optim.Optimizer:
    # One fused kernel per step instead of a loop over parameters: ~10% of a small MLP's epoch on CPU.
    fused = device.type in ("cpu", "cuda")
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov, fused=fused)
    betas = (cfg.momentum, 0.999)  # `momentum` is Adam's beta1
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay, fused=fused)
