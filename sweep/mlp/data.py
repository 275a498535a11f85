"""Data: decode a data set once into uint8 tensors, cache them on disk, carve a stratified
validation split, and serve normalized, augmented batches from tensors on the training device."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm

from sweep import atomic
from sweep.errors import UserError, first_line

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the cached layout changes
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
DIGITS_TEST_FRACTION = 0.2  # digits has no official test split; this fixed share is held out as one


@dataclass
class Images:
    x: torch.Tensor  # uint8 [N, C, H, W]
    y: torch.Tensor  # int64 [N]


@dataclass
class Dataset:
    train: Images  # the official training split (train + val are carved from it)
    test: Images | None  # the official test split; never used for model selection
    classes: list[str]


# ---------------------------------------------------------------- decoding + cache


def load_dataset(cfg: DictConfig) -> Dataset:
    """Decode the data set named by cfg.name, or read it from the cache when its sources are unchanged."""
    if cfg.name == "digits":
        return _digits()  # decoding 1,797 8x8 arrays is cheaper than a cache round trip
    if cfg.name == "cifar10":
        sources = _cifar10_sources(cfg)
        decode = lambda: _cifar10(sources)  # noqa: E731
    else:
        sources = _imagefolder_sources(cfg)
        decode = lambda: _imagefolder(sources)  # noqa: E731
    cache = _cache_path(cfg, sources)
    kept = _KEPT.get("dataset")
    if kept and kept[0] == _file_key(cache):  # (a key of None is never kept)
        return kept[1]
    if cache.exists():
        try:
            return _keep(cache, _from_blob(torch.load(cache, weights_only=True)))
        except Exception as e:  # truncated, garbage, or another layout: decode again rather than fail every run
            log.warning("data cache %s is damaged (%s); decoding the images again to rebuild it", cache, type(e).__name__)
    dataset = decode()
    try:
        with atomic.replacing(cache) as tmp:  # parallel trials never read a half-written cache
            torch.save(_to_blob(dataset), tmp)
        log.info("cached decoded %s at %s", cfg.name, cache)
        _keep(cache, dataset)
    except Exception as e:  # a full disk (torch reports it as a RuntimeError) costs the next run a decode, not this one
        log.warning("data cache %s not written: %s", cache, first_line(e))
    return dataset


# A pool worker runs trial after trial in one process: it keeps the last data set it read (keyed by the cache file,
# whose name follows the source files) and the last split made of it. On CIFAR-10 that starts each trial 0.7 s sooner.
_KEPT: dict[str, tuple] = {}


def _keep(cache: Path, dataset: Dataset) -> Dataset:
    key = _file_key(cache)
    if key is not None:
        _KEPT["dataset"] = (key, dataset)
    return dataset


def _file_key(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_size, st.st_mtime_ns, st.st_ino


def _cache_path(cfg: DictConfig, sources: dict[str, list[str | Path]]) -> Path:
    # Keyed on every source file's path, size and mtime: a changed, added or removed file invalidates it.
    # (An edit that keeps both size and mtime goes unnoticed; delete the cache file after such an edit.)
    lines = [f"{cfg.name}:{CACHE_VERSION}"]
    for split in sorted(sources):
        for p in sources[split]:
            try:
                st = os.stat(p)
            except OSError as e:
                what = "a broken link" if os.path.islink(p) else f"unreadable ({e.strerror})"
                raise UserError(f"data.root: {p} is {what}; fix or remove it") from None
            lines.append(f"{split}:{p}:{st.st_size}:{st.st_mtime_ns}\n")
    h = hashlib.sha256("".join(lines).encode())
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else Path.home() / ".cache" / "sweep"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"data.cache_dir={str(root)!r} is a file; expected a folder (or null for ~/.cache/sweep)") from None
    except OSError as e:
        raise UserError(f"data.cache_dir={str(root)!r} cannot be created: {e.strerror}") from None
    return root / f"{cfg.name}-{h.hexdigest()[:20]}.pt"


def _to_blob(d: Dataset) -> dict:
    blob = {"train_x": d.train.x, "train_y": d.train.y, "classes": d.classes}
    if d.test is not None:
        blob |= {"test_x": d.test.x, "test_y": d.test.y}
    return blob


def _from_blob(b: dict) -> Dataset:
    """The cached data set, checked: a cache is a file like any other, and may be damaged or foreign."""
    def images(x, y) -> Images:
        if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.dtype == torch.uint8
                and x.dim() == 4 and y.dim() == 1 and len(x) == len(y) and len(y) > 0):
            raise ValueError("unexpected tensors")
        return Images(x, y.long())

    classes = list(b["classes"])
    if not all(isinstance(c, str) for c in classes):
        raise ValueError("class names must be strings")
    test = images(b["test_x"], b["test_y"]) if "test_x" in b else None
    return Dataset(images(b["train_x"], b["train_y"]), test, classes)


DIGITS = Path(__file__).with_name("digits.csv.gz")  # 1,797 rows of 64 pixels (0..16) and a label


def _digits() -> Dataset:
    """The UCI handwritten digits test set (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0), as scikit-learn ships it:
    bundled here, 57 KB, because importing scikit-learn to read it cost each worker 2 seconds."""
    rows = np.loadtxt(DIGITS, delimiter=",", dtype=np.int64)
    x = torch.from_numpy(np.round(rows[:, :64].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)).unsqueeze(1)  # [N, 1, 8, 8]
    y = torch.from_numpy(rows[:, 64]).long()
    test_idx = stratified_pick(y, round(DIGITS_TEST_FRACTION * len(y)), seed=0)
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[test_idx] = True
    return Dataset(Images(x[~is_test], y[~is_test]), Images(x[is_test], y[is_test]), [str(c) for c in range(10)])


CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def _cifar10_sources(cfg: DictConfig) -> dict[str, list[Path]]:
    folder = Path(cfg.root) / CIFAR_DIR
    if not (folder / "batches.meta").exists():
        if not cfg.download:
            raise UserError(
                f"data.root={cfg.root!r}: CIFAR-10 not found ({folder} has no batches.meta) and data.download=false; "
                "set data.download=true, point data.root at the folder holding cifar-10-batches-py, or try data=digits"
            )
        _download_cifar10(Path(cfg.root))
    return {"train": [folder / n for n in CIFAR_TRAIN], "test": [folder / "test_batch"], "meta": [folder / "batches.meta"]}


def _download_cifar10(root: Path) -> None:
    import torchvision

    try:
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as e:  # URLError offline, or a checksum mismatch
        raise UserError(
            f"data.root={str(root)!r}: CIFAR-10 is not there and downloading it failed ({type(e).__name__}: {e}); "
            "to work offline use data=digits, or put cifar-10-batches-py under data.root"
        ) from None


class _ArraysOnly(pickle.Unpickler):
    """CIFAR-10's python files are pickles of dicts, lists and numpy arrays. A pickle can run any code on load,
    and data.root (or a checkpoint's config) may name any folder: this reader rebuilds arrays and nothing else."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks to load {module}.{name}, which a data file never needs")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _ArraysOnly(f, encoding="latin1").load()
        if not isinstance(data, dict):
            raise ValueError("not a dict")
        return data
    except Exception as e:
        raise UserError(f"data.root: {path} is not a CIFAR-10 python file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, list[int]]:
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or not isinstance(labels, list) or len(labels) != len(data):
        raise UserError(f"data.root: {path} is not a CIFAR-10 batch (expected uint8 data of N x 3072 and N labels)")
    return data, labels


def _cifar10(sources: dict[str, list[Path]]) -> Dataset:
    def read(paths: list[Path]) -> Images:
        parts = [_read_cifar_batch(p) for p in paths]
        x = np.concatenate([data for data, _ in parts]).reshape(-1, 3, 32, 32)  # rows are R, G, B planes
        y = np.concatenate([labels for _, labels in parts])
        return Images(torch.from_numpy(x).contiguous(), torch.from_numpy(y).long())

    classes = _unpickle(sources["meta"][0]).get("label_names")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UserError(f"data.root: {sources['meta'][0]} has no list of label_names")
    return Dataset(read(sources["train"]), read(sources["test"]), list(classes))


def _image_files(split_dir: Path) -> dict[str, list[str]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    for c in classes:
        try:
            c.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"data.root: the class folder {os.fsencode(split_dir / c)!r} is not UTF-8; rename it "
                            "(class names go into reports and checkpoints)") from None
    if not classes:
        raise UserError(f"data.root: {split_dir} has no class folders; expected {split_dir}/<class>/<image>")
    files = {}
    for c in classes:  # paths as strings: making and sorting 50,000 Paths cost every trial a second
        folder = os.path.join(split_dir, c)
        with os.scandir(folder) as entries:
            files[c] = sorted(e.path for e in entries if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        if not files[c]:
            raise UserError(f"data.root: class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _imagefolder_sources(cfg: DictConfig) -> dict[str, list[str]]:
    root = Path(cfg.root)
    if not (root / "train").is_dir():
        raise UserError(f"data.root={cfg.root!r}: no such folder {root / 'train'}; expected root/train/<class>/<image>")
    sources = {"train": [f for fs in _image_files(root / "train").values() for f in fs]}
    if (root / "test").is_dir():
        sources["test"] = [f for fs in _image_files(root / "test").values() for f in fs]
    return sources


def _decode(path: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        image = decode_image(read_file(path), mode=ImageReadMode.RGB)
    except Exception as e:
        raise UserError(f"data.root: cannot decode image {path} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if image.dtype == torch.uint16:  # 16-bit PNGs: keep the top 8 bits, as every viewer shows them
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    return image


def _class_of(path: str) -> str:
    return os.path.basename(os.path.dirname(path))


def _imagefolder(sources: dict[str, list[str]]) -> Dataset:
    classes = sorted({_class_of(p) for p in sources["train"]})
    index = {c: i for i, c in enumerate(classes)}

    def read(paths: list[str], split: str) -> Images:
        unknown = sorted({_class_of(p) for p in paths} - set(classes))
        if unknown:
            raise UserError(f"data.root: test classes {unknown} do not appear in train")
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            images = list(tqdm(pool.map(_decode, paths), total=len(paths), desc=f"decoding {split}", disable=None))
        shape = images[0].shape
        for p, im in zip(paths, images):
            if im.shape != shape:
                raise UserError(f"data.root: {p} is {tuple(im.shape)} but {paths[0]} is {tuple(shape)}; all images must share one size")
        return Images(torch.stack(images), torch.tensor([index[_class_of(p)] for p in paths]))

    test = read(sources["test"], "test") if "test" in sources else None
    return Dataset(read(sources["train"], "train"), test, classes)


# ---------------------------------------------------------------- splitting


def stratified_pick(y: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of n items whose class shares match y's, chosen at random by seed."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    labels = y[order]
    # Rank of each item within its class (in shuffled order), as a fraction of the class size:
    # taking the n smallest fractions takes every class in proportion.
    counts = torch.bincount(labels)
    sorted_idx = torch.argsort(labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[sorted_idx] = torch.arange(len(labels)) - starts[labels[sorted_idx]]
    frac = (rank.double() + 0.5) / counts[labels].double()
    return order[torch.argsort(frac, stable=True)[:n]]


def val_count(val_size: float, n_train: int) -> int:
    n = int(val_size) if isinstance(val_size, int) else round(val_size * n_train)
    if n >= n_train:
        raise UserError(f"data.val_size={val_size!r} is invalid: it must leave training images (the training split has {n_train})")
    return max(n, 1)


def split_train_val(train: Images, val_size: float, seed: int) -> tuple[Images, Images]:
    val_idx = stratified_pick(train.y, val_count(val_size, len(train.y)), seed)
    is_val = torch.zeros(len(train.y), dtype=torch.bool)
    is_val[val_idx] = True
    return Images(train.x[~is_val], train.y[~is_val]), Images(train.x[is_val], train.y[is_val])


# ---------------------------------------------------------------- batches on the device


class Loader:
    """Whole split as uint8 on the device; each batch is an index slice, normalized and augmented as one tensor."""

    def __init__(self, images: Images, device: torch.device, mean: torch.Tensor, std: torch.Tensor,
                 batch_size: int, flip: bool = False, crop_padding: int = 0):
        self.shape = tuple(images.x.shape[1:])  # (C, H, W)
        self.x = images.x.reshape(len(images.x), -1).to(device)  # [N, C*H*W]: rows gather and normalize fastest flat
        self.y = images.y.to(device)
        self.batch_size, self.flip, self.pad = batch_size, flip, crop_padding
        # (x / 255 - mean) / std folded into one multiply-add per element, per pixel of the flat row.
        pixels = self.shape[1] * self.shape[2]
        self.scale = (1 / (255 * std)).repeat_interleave(pixels).view(1, -1).to(device)
        self.shift = (-mean / std).repeat_interleave(pixels).view(1, -1).to(device)

    def __len__(self) -> int:
        return (len(self.y) + self.batch_size - 1) // self.batch_size

    def batches(self, generator: torch.Generator | None = None, augment: bool = False):
        n = len(self.y)
        order = torch.randperm(n, device=self.x.device, generator=generator) if generator is not None else None
        for start in range(0, n, self.batch_size):
            if order is not None:
                idx = order[start:start + self.batch_size]
                xb, yb = self.x.index_select(0, idx), self.y.index_select(0, idx)
            else:
                xb, yb = self.x[start:start + self.batch_size], self.y[start:start + self.batch_size]
            # uint8 in, float out: the conversion happens inside the multiply-add, with no float copy of the batch.
            x = torch.addcmul(self.shift, xb, self.scale).view(-1, *self.shape)  # [B, C, H, W], normalized
            if augment:
                x = self._augment(x, generator)
            yield x, yb

    def _augment(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        b, _, h, w = x.shape
        if self.flip:
            flip = torch.rand(b, device=x.device, generator=g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        if self.pad:
            p = self.pad
            padded = F.pad(x, (p, p, p, p))  # zero after normalization is the mean colour
            dy = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=g)
            dx = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=g)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
            x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                       torch.arange(x.shape[1], device=x.device)[None, :, None, None], rows, cols]
        return x


def channel_stats(x: torch.Tensor, normalize: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean/std in [0, 1] units of uint8 images [N, C, H, W]."""
    c = x.shape[1]
    if normalize == "unit":  # the tutorial's Normalize((0.5,)*3, (0.5,)*3): inputs in [-1, 1]
        return torch.full((c,), 0.5), torch.full((c,), 0.5)
    # From each channel's histogram of its 256 levels: exact, and no float copy of the images
    # (CIFAR-10's train split: 3.0 s -> 0.3 s at one thread, paid by every trial).
    counts = torch.stack([torch.bincount(x[:, i].reshape(-1), minlength=256) for i in range(c)]).double()
    levels = torch.arange(256, dtype=torch.float64) / 255
    n = counts.sum(1)
    mean = counts @ levels / n
    var = (counts @ levels.square() - n * mean.square()) / (n - 1)  # unbiased, as Tensor.std
    return mean.float(), var.clamp_min(0).sqrt().clamp_min(1e-6).float()


@dataclass
class Splits:
    train: Loader
    val: Loader
    classes: list[str]
    input_shape: tuple[int, ...]  # (C, H, W)
    mean: torch.Tensor
    std: torch.Tensor


EVAL_BATCH = 2048  # evaluation batch size: only speed depends on it


def build_splits(cfg: DictConfig, device: torch.device, dataset: Dataset | None = None) -> Splits:
    """Train and validation loaders on the device; normalization statistics come from the train part only."""
    dataset = dataset or load_dataset(cfg)
    key = (cfg.val_size, cfg.split_seed, cfg.normalize)
    kept = _KEPT.get("split")
    if kept and kept[0] is dataset and kept[1] == key:
        train, val, mean, std = kept[2]
    else:
        train, val = split_train_val(dataset.train, cfg.val_size, cfg.split_seed)
        mean, std = channel_stats(train.x, cfg.normalize)
        _KEPT["split"] = (dataset, key, (train, val, mean, std))
    return Splits(
        train=Loader(train, device, mean, std, cfg.batch_size, cfg.flip, cfg.crop_padding),
        val=Loader(val, device, mean, std, EVAL_BATCH),
        classes=dataset.classes,
        input_shape=tuple(train.x.shape[1:]),
        mean=mean,
        std=std,
    )
