from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from sweep.train import CONF_DIR


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real configs with overrides, the data cache kept under tmp_path."""
    def make(*overrides: str):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose("config", overrides=[f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    return make


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m module args` as a user would; the data cache stays inside cwd."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def train_cli(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_cli("sweep.train", f"data.cache_dir={cwd / 'cache'}", *args, cwd=cwd, **kw)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for f in fragments:
        assert f in last, last
    return last


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


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and tests run side by side
