"""Config checks for the MLP app: every mistake a user can make in a config is caught here, in one line.

The sweeper runs check_sweep on the configs at the edges of a search space before any trial (conf/config.yaml
sets hydra.sweeper.check: sweep.mlp.config.check_sweep): the settings, and whether the data can be had at all.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import hydra
import omegaconf
from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.checks import Rule, check, flag, integer, number, one_of, optional, text
from sweep.errors import UserError

# The configs: shipped inside the package (sweep/conf) by a wheel; conf/ beside it in a source checkout.
CONF_DIR = str(next(p for p in (Path(__file__).resolve().parents[1] / "conf", Path(__file__).resolve().parents[2] / "conf")
                    if (p / "config.yaml").is_file()))
# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


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


SEED = Rule("an integer within +-2**63", lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= SEED_MAX)
FRACTION = Rule("a number in [0, 1)", lambda v: number(low=0)(v) and v < 1)  # dropout, momentum, label smoothing
POSITIVE = integer(low=1)


def _set(cfg: DictConfig, key: str, rule: Rule) -> None:
    check(key, OmegaConf.select(cfg, key), rule)


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
    m, o, d = cfg.model, cfg.optimizer, cfg.data
    _set(cfg, "model.width", POSITIVE)
    _set(cfg, "model.depth", POSITIVE)
    try:
        hidden = m.hidden_sizes
    except Exception as e:  # an interpolation that does not resolve
        raise UserError(f"model.hidden_sizes could not be built from model.width/model.depth: {e}") from None
    check("model.hidden_sizes", hidden, Rule("a non-empty list of positive integers, e.g. [256,128]", lambda v: (
        isinstance(v, (list, ListConfig)) and len(v) > 0 and all(POSITIVE(h) for h in v))))
    _set(cfg, "model.activation", one_of(*ACTIVATIONS))
    _set(cfg, "model.norm", one_of(*NORMS))
    _set(cfg, "model.dropout", FRACTION)

    _set(cfg, "optimizer.name", one_of(*OPTIMIZERS))
    _set(cfg, "optimizer.lr", number(above=0))
    _set(cfg, "optimizer.momentum", FRACTION)
    _set(cfg, "optimizer.weight_decay", number(low=0))
    _set(cfg, "optimizer.nesterov", flag())
    check("optimizer.nesterov", o.nesterov, Rule("false, or true with optimizer=sgd and momentum > 0",
                                                 lambda v: not v or (o.name == "sgd" and o.momentum > 0)))

    _set(cfg, "data.name", one_of(*DATASETS))
    if d.name == "imagefolder":
        _set(cfg, "data.root", Rule("the folder holding train/<class>/* (data=imagefolder), e.g. data.root=/data/pets",
                                    text().test))
    elif d.name == "cifar10":
        _set(cfg, "data.root", Rule("the folder holding (or to hold) cifar-10-batches-py", text().test))
    _set(cfg, "data.download", flag())
    _set(cfg, "data.batch_size", POSITIVE)
    _set(cfg, "data.val_size", Rule("a count >= 1 or a fraction in (0, 1)", lambda v: number(above=0)(v) and (
        integer()(v) or v < 1)))
    _set(cfg, "data.split_seed", SEED)
    _set(cfg, "data.normalize", one_of(*NORMALIZE))
    _set(cfg, "data.flip", flag())
    _set(cfg, "data.crop_padding", Rule(f"an integer in 0..{MAX_CROP} (pixels of padding before a random crop)",
                                        integer(low=0, high=MAX_CROP).test))
    _set(cfg, "data.cache_dir", optional(Rule("a folder", lambda v: isinstance(v, str))))

    _set(cfg, "trainer.epochs", POSITIVE)
    _set(cfg, "trainer.seed", SEED)
    _set(cfg, "trainer.device", one_of(*DEVICES))
    _set(cfg, "trainer.schedule", one_of(*SCHEDULES))
    _set(cfg, "trainer.precision", one_of(*PRECISIONS))
    _set(cfg, "trainer.label_smoothing", FRACTION)
    _set(cfg, "trainer.threads", Rule("auto, null or an integer > 0", lambda v: v in (None, "auto") or POSITIVE(v)))
    _set(cfg, "trainer.save_checkpoint", flag())


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
