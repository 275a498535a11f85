"""Helpers for the MLP harness's tests: small data sets in real formats, the CLI, a recording trial."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import run_cli


def train_cli(*args: str, cwd: Path, **kw):
    """`python -m sweep.train args` as a user would run it; the data cache stays inside cwd."""
    return run_cli("sweep.train", f"data.cache_dir={cwd / 'cache'}", *args, cwd=cwd, **kw)


def write_imagefolder(root: Path, classes=("cat", "dog", "frog"), per_class=12, size=8, test_per_class=0, seed=0) -> Path:
    """A tiny root/train/<class>/*.png tree whose classes differ in mean colour, so they are learnable."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c, name in enumerate(classes):
            if n == 0:
                continue
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros(3)
                base[c % 3] = 200
                pixels = np.clip(base + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def write_cifar10(root: Path, per_batch=20, test=20, seed=0) -> Path:
    """A tiny data set in CIFAR-10's own python batch format under root/cifar-10-batches-py."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n, name):
        labels = [int(i % 10) for i in range(n)]
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "labels": labels, "data": data, "filenames": [f"{i}.png" for i in range(n)]}, f)

    for i in range(1, 6):
        batch(per_batch, f"data_batch_{i}")
    batch(test, "test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return root


class Recorder:
    """A stand-in trial for train(): records reports and prunes when told to."""

    number = None

    def __init__(self, prune_at: int | None = None, crash_at: int | None = None, pause: bool = False):
        self.reports: list[tuple[int, float]] = []
        self.user_attrs: dict = {}
        self.prune_at, self.crash_at = prune_at, crash_at
        self.pausing = False
        self._pause = pause  # when it prunes, it pauses (asha), as sweep.trial() does for a task with checkpoints

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))
        if step == self.crash_at:
            raise KeyboardInterrupt("simulated crash after epoch %d" % step)

    def should_prune(self) -> bool:
        stop = self.prune_at is not None and self.reports[-1][0] >= self.prune_at
        self.pausing = stop and self._pause
        return stop

    def set_user_attr(self, key, value) -> None:
        self.user_attrs[key] = value


