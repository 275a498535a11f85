"""Config checks: every mistake a user can make in a config is caught here, in one line."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf


class UserError(Exception):
    """A mistake in the config or the data that the user can fix; shown as one line, never a traceback."""


def _mlp_layers(width: int, depth: int) -> list[int]:
    return [int(width)] * int(depth)


# Lets conf/model/mlp.yaml build hidden_sizes from the scalar knobs sweeps vary.
OmegaConf.register_resolver("mlp_layers", _mlp_layers, replace=True)

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "adam", "adamw")
DATASETS = ("cifar10", "digits", "imagefolder")
NORMALIZE = ("channel", "unit")
SCHEDULES = ("none", "cosine", "onecycle")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")


def _require(ok: bool, key: str, allowed: str, value: object) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {allowed}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice(cfg: DictConfig, key: str, options: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    _require(value in options, key, f"expected one of {', '.join(options)}", value)


def check_config(cfg: DictConfig) -> None:
    """Raise UserError naming the first setting that is out of range."""
    m, o, d, t = cfg.model, cfg.optimizer, cfg.data, cfg.trainer
    try:
        hidden = m.hidden_sizes
    except Exception as e:  # a bad width/depth makes the resolver itself fail
        raise UserError(f"model.hidden_sizes could not be built from model.width/model.depth: {e}") from None
    _require(
        isinstance(hidden, (list, ListConfig)) and len(hidden) > 0
        and all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden),
        "model.hidden_sizes", "expected a non-empty list of positive integers, e.g. [256,128]", 
        OmegaConf.to_object(hidden) if isinstance(hidden, ListConfig) else hidden,
    )
    _choice(cfg, "model.activation", ACTIVATIONS)
    _choice(cfg, "model.norm", NORMS)
    _require(_number(m.dropout) and 0 <= m.dropout < 1, "model.dropout", "expected 0 <= dropout < 1", m.dropout)

    _choice(cfg, "optimizer.name", OPTIMIZERS)
    _require(_number(o.lr) and o.lr > 0, "optimizer.lr", "expected a number > 0", o.lr)
    _require(_number(o.momentum) and 0 <= o.momentum < 1, "optimizer.momentum", "expected 0 <= momentum < 1", o.momentum)
    _require(_number(o.weight_decay) and o.weight_decay >= 0, "optimizer.weight_decay", "expected a number >= 0", o.weight_decay)
    _require(
        not o.nesterov or (o.name == "sgd" and o.momentum > 0), "optimizer.nesterov",
        "nesterov=true needs optimizer=sgd with momentum > 0", o.nesterov,
    )

    _choice(cfg, "data.name", DATASETS)
    _require(isinstance(d.batch_size, int) and d.batch_size > 0, "data.batch_size", "expected an integer > 0", d.batch_size)
    _require(
        _number(d.val_size) and d.val_size > 0 and (isinstance(d.val_size, int) or d.val_size < 1),
        "data.val_size", "expected a count >= 1 or a fraction in (0, 1)", d.val_size,
    )
    _choice(cfg, "data.normalize", NORMALIZE)
    _require(isinstance(d.crop_padding, int) and d.crop_padding >= 0, "data.crop_padding", "expected an integer >= 0", d.crop_padding)

    _require(isinstance(t.epochs, int) and t.epochs > 0, "trainer.epochs", "expected an integer > 0", t.epochs)
    _require(isinstance(t.seed, int), "trainer.seed", "expected an integer", t.seed)
    _choice(cfg, "trainer.device", DEVICES)
    _choice(cfg, "trainer.schedule", SCHEDULES)
    _choice(cfg, "trainer.precision", PRECISIONS)
    _require(
        _number(t.label_smoothing) and 0 <= t.label_smoothing < 1,
        "trainer.label_smoothing", "expected 0 <= label_smoothing < 1", t.label_smoothing,
    )
    _require(t.threads is None or (isinstance(t.threads, int) and t.threads > 0), "trainer.threads", "expected null or an integer > 0", t.threads)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device='cuda' is invalid: no CUDA GPU is visible; use trainer.device=cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device='mps' is invalid: MPS is not available; use trainer.device=cpu or auto")
    return torch.device(name)
