"""Shared bits of the benchmark scripts: where the data is, and what machine printed the numbers."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

CIFAR_JPEG = Path(os.environ.get("SWEEP_CIFAR_JPEG", Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg"))


def commit() -> str:
    if os.environ.get("SWEEP_COMMIT"):  # a copy of the tree without its history (the lent GPU machine)
        return os.environ["SWEEP_COMMIT"]
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                               text=True).stdout.strip()
    except OSError:
        return "unknown"
    return f"{sha}{' (with uncommitted changes)' if dirty else ''}" if sha else "unknown"


def upstream_conf(folder: Path) -> Path:
    """sweep.train's configs in folder, without the sweeper settings hydra-optuna-sweeper does not have."""
    root = Path(__file__).resolve().parents[1]
    conf = folder / "conf"
    subprocess.run(["cp", "-r", str(root / "conf"), str(conf)], check=True)
    text = (conf / "config.yaml").read_text().splitlines()
    ours = ("metric_names", "check:", "seed_key:", "override hydra/sweeper", "override hydra/launcher", "override hydra/help")
    (conf / "config.yaml").write_text("\n".join(line for line in text if not any(k in line for k in ours)) + "\n")
    return conf


def header(title: str) -> None:
    """What every benchmark prints first: the command, the machine (CPU model and what its matmuls can use),
    torch, the commit, and how busy the machine was."""
    import torch  # here, not at the top: bench/threads.py's children must set up OpenMP before torch loads

    from sweep.mlp.device import describe

    print(f"# {title}")
    print(f"command: python {shlex.join(sys.argv)}")
    print(f"machine: {describe()}, {torch.get_num_threads()} torch threads")
    print(f"commit: {commit()}; load average {os.getloadavg()[0]:.2f} at start")
    print()


class cpu_hogs:
    """N CPU-bound processes beside what runs in the block (the same hogs for every contender measured inside)."""

    def __init__(self, n: int):
        self.n, self.procs = n, []

    def __enter__(self):
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        return False


def conditions(load: int) -> list[tuple[str, int]]:
    """The conditions a --load N benchmark measures, in one run: idle, then beside N CPU-bound processes."""
    return [("idle", 0)] + ([(f"beside {load} CPU-bound processes", load)] if load else [])


def run_sweep(name: str, *overrides: str, workdir: Path) -> tuple[float, "optuna.Study"]:
    """Run `python -m sweep.train --multirun` in workdir; return its wall-clock seconds and its study."""
    import subprocess
    import time

    import optuna

    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sweep.train", "--multirun", "data=imagefolder", f"data.root={CIFAR_JPEG}",
         "data.val_size=5000", f"hydra.sweeper.study_name={name}", *overrides],
        cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"sweep {name} failed:\n{result.stderr[-3000:]}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{workdir}/multirun/studies/{name}.db")
    return wall, study
