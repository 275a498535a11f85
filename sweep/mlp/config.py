"""Config checks for the MLP app: every mistake a user can make in a config is caught here, in one line.

The sweeper runs check_sweep on the configs at the edges of a search space before any trial (conf/config.yaml
sets hydra.sweeper.check: sweep.mlp.config.check_sweep): the settings, and whether the data can be had at all.
"""

from __future__ import annotations

import functools
import math
import socket
from pathlib import Path

import omegaconf
from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.errors import UserError


def _mlp_layers(width, depth) -> list:
    # Left as given when not integers, so check_config can name the setting instead of truncating 1.5 to 1.
    if isinstance(width, int) and isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
        return [width] * depth
    return [f"{width} x {depth}"]


def register_resolvers() -> None:
    """${mlp_layers:width,depth}: conf/model/mlp.yaml builds hidden_sizes from the scalar knobs sweeps vary. Called
    where a config is read (the task, its checks, evaluate), not on import. omegaconf 2.4 calls this
    register_resolver; in 2.3 that name is an older API, and the call is register_new_resolver."""
    if OmegaConf.has_resolver("mlp_layers"):
        return
    if tuple(int(x) for x in omegaconf.__version__.split(".")[:2]) >= (2, 4):
        OmegaConf.register_resolver("mlp_layers", _mlp_layers, replace=True)
    else:
        OmegaConf.register_new_resolver("mlp_layers", _mlp_layers, replace=True)

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "adam", "adamw")
DATASETS = ("cifar10", "digits", "imagefolder")
NORMALIZE = ("channel", "unit")
SCHEDULES = ("none", "cosine", "onecycle")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
SEED_MAX = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_CROP = 64  # pixels of padding before a random crop; CIFAR-10 uses 2-4
CIFAR_HOST = ("www.cs.toronto.edu", 443)  # where torchvision downloads CIFAR-10 from
KEYS = {  # every key a section may hold: anything else is a typo that would silently do nothing
    "model": {"width", "depth", "hidden_sizes", "activation", "norm", "dropout"},
    "optimizer": {"name", "lr", "momentum", "weight_decay", "nesterov"},
    "data": {"name", "root", "download", "val_size", "split_seed", "batch_size", "normalize", "flip",
             "crop_padding", "cache_dir"},
    "trainer": {"epochs", "seed", "device", "schedule", "precision", "label_smoothing", "threads",
                "save_checkpoint"},
}


def _require(ok: bool, key: str, allowed: str, value: object) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {allowed}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(cfg: DictConfig, key: str, options: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, key)
    _require(value in options, key, f"expected one of {', '.join(options)}", value)


def _flag(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    _require(isinstance(value, bool), key, "expected true or false", value)


def check_config(cfg: DictConfig) -> None:
    """Raise UserError naming the first setting that is missing, unknown or out of range."""
    register_resolvers()
    for section, keys in KEYS.items():
        if not isinstance(cfg.get(section), DictConfig):
            raise UserError(f"{section} is missing from the config")
        unknown = sorted(set(cfg[section]) - keys)
        if unknown:
            raise UserError(f"{section}.{unknown[0]} is not a setting of {section}; "
                            f"it has {', '.join(sorted(keys))}")
        missing = [k for k in sorted(keys) if OmegaConf.is_missing(cfg[section], k)]
        if missing:
            raise UserError(f"{section}.{missing[0]} is required: set it on the command line, "
                            f"e.g. {section}.{missing[0]}=...")
    m, o, d, t = cfg.model, cfg.optimizer, cfg.data, cfg.trainer
    _require(_integer(m.width) and m.width > 0, "model.width", "expected an integer > 0", m.width)
    _require(_integer(m.depth) and m.depth > 0, "model.depth", "expected an integer > 0", m.depth)
    try:
        hidden = m.hidden_sizes
    except Exception as e:  # an interpolation that does not resolve
        raise UserError(f"model.hidden_sizes could not be built from model.width/model.depth: {e}") from None
    _require(
        isinstance(hidden, (list, ListConfig)) and len(hidden) > 0 and all(_integer(h) and h > 0 for h in hidden),
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
    _flag(cfg, "optimizer.nesterov")
    _require(
        not o.nesterov or (o.name == "sgd" and o.momentum > 0), "optimizer.nesterov",
        "nesterov=true needs optimizer=sgd with momentum > 0", o.nesterov,
    )

    _choice(cfg, "data.name", DATASETS)
    if d.name == "imagefolder":
        _require(isinstance(d.root, str) and d.root != "", "data.root",
                 "data=imagefolder needs the folder holding train/<class>/*, e.g. data.root=/data/pets", d.root)
    elif d.name == "cifar10":
        _require(isinstance(d.root, str) and d.root != "", "data.root",
                 "expected the folder holding (or to hold) cifar-10-batches-py", d.root)
    _flag(cfg, "data.download")
    _require(_integer(d.batch_size) and d.batch_size > 0, "data.batch_size", "expected an integer > 0", d.batch_size)
    _require(
        _number(d.val_size) and d.val_size > 0 and (_integer(d.val_size) or d.val_size < 1),
        "data.val_size", "expected a count >= 1 or a fraction in (0, 1)", d.val_size,
    )
    _require(_integer(d.split_seed) and abs(d.split_seed) <= SEED_MAX, "data.split_seed",
             "expected an integer within +-2**63", d.split_seed)
    _choice(cfg, "data.normalize", NORMALIZE)
    _flag(cfg, "data.flip")
    _require(_integer(d.crop_padding) and 0 <= d.crop_padding <= MAX_CROP, "data.crop_padding",
             f"expected an integer in 0..{MAX_CROP} (pixels of padding before a random crop)", d.crop_padding)
    _require(d.cache_dir is None or isinstance(d.cache_dir, str), "data.cache_dir", "expected null or a folder", d.cache_dir)

    _require(_integer(t.epochs) and t.epochs > 0, "trainer.epochs", "expected an integer > 0", t.epochs)
    _require(_integer(t.seed) and abs(t.seed) <= SEED_MAX, "trainer.seed", f"expected an integer within +-2**63",
             t.seed)
    _choice(cfg, "trainer.device", DEVICES)
    _choice(cfg, "trainer.schedule", SCHEDULES)
    _choice(cfg, "trainer.precision", PRECISIONS)
    _require(
        _number(t.label_smoothing) and 0 <= t.label_smoothing < 1,
        "trainer.label_smoothing", "expected 0 <= label_smoothing < 1", t.label_smoothing,
    )
    _require(t.threads in (None, "auto") or (_integer(t.threads) and t.threads > 0), "trainer.threads",
             "expected auto, null or an integer > 0", t.threads)
    _flag(cfg, "trainer.save_checkpoint")


def check_sweep(cfg: DictConfig) -> None:
    """check_config, and whether the data can be had: a sweep whose every trial would fail for want of data is
    refused before its first trial, and before any study is created."""
    check_config(cfg)
    check_data(cfg.data.name, cfg.data.root, cfg.data.download)


@functools.cache
def check_data(name: str, root: str | None, download: bool) -> None:
    offline = "to work offline use data=digits (bundled) or data=imagefolder data.root=/path/to/images"
    if name == "cifar10":
        if (Path(root) / "cifar-10-batches-py" / "batches.meta").is_file():
            return
        if not download:
            raise UserError(f"data.root={root!r}: CIFAR-10 is not there (no cifar-10-batches-py/batches.meta) and "
                            f"data.download=false; {offline}")
        try:
            socket.create_connection(CIFAR_HOST, timeout=5).close()
        except OSError as e:
            raise UserError(f"data=cifar10: CIFAR-10 is not under data.root={root!r} and its download server "
                            f"{CIFAR_HOST[0]} cannot be reached ({e.strerror or type(e).__name__}); {offline}") from None
    elif name == "imagefolder":
        train = Path(root) / "train"
        if not train.is_dir():
            raise UserError(f"data.root={root!r}: no such folder {train}; expected root/train/<class>/<image>")
