"""Shared bits of the benchmark scripts: where the data is, and what machine printed the numbers."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

from sweep.launcher import cpu_cores

CIFAR_JPEG = Path(os.environ.get("SWEEP_CIFAR_JPEG", Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = cpu_cores()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {cores} cores, torch {torch.__version__} ({torch.get_num_threads()} threads){gpu}, Python {platform.python_version()}"


def header(title: str) -> None:
    print(f"# {title}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    print()


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
