from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from sweep.train import CONF_DIR

# Every process a test starts carries this mark in its environment (workers of a sweep inherit it), so the
# check below finds whatever a test left running, even a worker whose parent is gone.
MARK = "SWEEP_TEST_PROCESS"
os.environ[MARK] = uuid.uuid4().hex


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real configs with overrides, the data cache kept under tmp_path."""
    def make(*overrides: str, hydra: bool = False):
        with initialize_config_dir(config_dir=CONF_DIR):
            return compose("config", overrides=[f"data.cache_dir={tmp_path / 'cache'}", *overrides],
                           return_hydra_config=hydra)
    return make


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m module args` as a user would; the data cache stays inside cwd."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)


def train_cli(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_cli("sweep.train", f"data.cache_dir={cwd / 'cache'}", *args, cwd=cwd, **kw)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A refused input: non-zero exit, no traceback, and a last line `error: ...` holding every fragment."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr
    for f in fragments:
        assert f in last, last
    return last


def start_cli(module: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `python -m module args` in its own process group, with a default SIGINT as in a terminal
    (a test runner started in the background passes SIGINT down ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args], cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, what: str, timeout: float = 120, process: subprocess.Popen | None = None):
    """Poll `condition` until it returns something truthy: an event the code exposes (a file, a trial state)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process ended (code {process.returncode}) before {what}:\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def marked_processes() -> list[int]:
    """Processes other than this one that carry this test session's mark."""
    mark = f"{MARK}={os.environ[MARK]}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and mark in environ.split(b"\0"):
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """A test must not leave a process running: whatever it started is killed, and the test fails."""
    yield
    if not os.path.isdir("/proc"):
        return
    deadline = time.monotonic() + 15  # workers of a killed sweep get a moment to notice
    left = marked_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked_processes()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"the test left {len(left)} process(es) running: {left}"


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

    def __init__(self, prune_at: int | None = None, crash_at: int | None = None):
        self.reports: list[tuple[int, float]] = []
        self.user_attrs: dict = {}
        self.prune_at, self.crash_at = prune_at, crash_at

    def report(self, value: float, step: int) -> None:
        self.reports.append((step, value))
        if step == self.crash_at:
            raise KeyboardInterrupt("simulated crash after epoch %d" % step)

    def should_prune(self) -> bool:
        return self.prune_at is not None and self.reports[-1][0] >= self.prune_at

    def set_user_attr(self, key, value) -> None:
        self.user_attrs[key] = value


@pytest.fixture(autouse=True)
def _small_torch():
    torch.set_num_threads(1)  # tiny models: threads cost more than they give, and tests run side by side
