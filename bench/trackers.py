"""What each tracker costs a trial: its start and finish, and each epoch's log call, against logger=none.

    python bench/trackers.py [--rounds 5] [--epochs 50] [--load 2]

Each logger of sweep.train's `logger` group is driven as the training loop drives it (the same seven metrics per
epoch as sweep.train logs), in this process, with its real package: CSV, TensorBoard, MLflow into a SQLite file,
MLflow through a tracking server started here on loopback, and W&B offline. Rounds are interleaved, so a change in
the machine's load hits every logger alike; medians with the spread (min-max over rounds). With --load N the same
runs again beside N CPU-bound processes.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import conditions, cpu_hogs, header

from sweep import tracking

METRICS = {"train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.45, "lr": 1e-3,
           "seconds": 2.0}
PARAMS = {"model": {"hidden_sizes": [128], "width": 128, "depth": 1}, "optimizer": {"name": "sgd", "lr": 1e-3},
          "data": {"batch_size": 256, "name": "cifar10"}, "trainer": {"epochs": 50, "seed": 0}}


class Trial:
    """A trial as the loggers see one in a sweep: its study, number and the parent run of the sweep."""

    def __init__(self, number: int, attrs: dict):
        self.number, self.study_name, self.study_attrs = number, "bench", attrs
        self.parent_run_id = attrs.get(tracking.PARENT_RUN)


def mlflow_server(root: Path) -> tuple[str, subprocess.Popen]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], cwd=root, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(uri + "/health", timeout=2).close()
            return uri, process
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the MLflow server did not start")
            time.sleep(0.2)


def measure(name: str, spec: dict | None, trial: Trial, run_dir: Path, epochs: int) -> tuple[float, float]:
    """(seconds to start and finish the run, median milliseconds per epoch's log call)."""
    loggers = {name: spec} if spec else {}
    began = time.perf_counter()
    per_epoch = []
    with tracking.Runs(loggers, PARAMS, trial, run_dir) as runs:
        opened = time.perf_counter() - began
        for epoch in range(1, epochs + 1):
            t = time.perf_counter()
            runs.log(METRICS, epoch)
            per_epoch.append(time.perf_counter() - t)
        closing = time.perf_counter()
    return opened + time.perf_counter() - closing, 1000 * statistics.median(per_epoch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--load", type=int, default=0, help="also measure beside N CPU-bound processes")
    args = parser.parse_args()
    header("Trackers: the cost of a run per trial, and of each epoch's log call")

    root = Path(tempfile.mkdtemp(prefix="sweep-trackers-"))
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=str(root))
    uri, server = mlflow_server(root)
    try:
        parent = tracking.MLflowParent(tracking_uri=uri, experiment_name="bench")

        class Study:  # what MLflowParent reads and writes of a study
            study_name, user_attrs = "bench", {}

            def set_user_attr(self, key, value):
                self.user_attrs[key] = value

        study = Study()
        parent.start(study)
        contenders = {
            "none": None,
            "csv": {"_target_": "sweep.tracking.CSVLogger", "path": str(root / "metrics.csv")},
            "tensorboard": {"_target_": "sweep.tracking.TensorBoardLogger", "save_dir": str(root / "tb")},
            "mlflow (SQLite file)": {"_target_": "sweep.tracking.MLflowLogger", "experiment_name": "bench",
                                     "tracking_uri": f"sqlite:///{root / 'mlflow.db'}"},
            "mlflow (server)": {"_target_": "sweep.tracking.MLflowLogger", "tracking_uri": uri},
            "wandb (offline)": {"_target_": "sweep.tracking.WandbLogger", "project": "bench"},
        }
        for label, load in conditions(args.load):
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
            with cpu_hogs(load):
                for r in range(args.rounds):
                    for i, (name, spec) in enumerate(contenders.items()):
                        run_dir = root / f"{label[:4]}-{r}-{i}"
                        run_dir.mkdir()
                        results[name].append(measure(name, spec, Trial(r, study.user_attrs), run_dir, args.epochs))
            print(f"## {label}: {args.rounds} rounds of {args.epochs} epochs; median (min-max over rounds)")
            print(f"{'logger':<22} {'start + finish, s':>22} {'per epoch, ms':>22}")
            for name, rows in results.items():
                starts, epochs = [s for s, _ in rows], [e for _, e in rows]
                print(f"{name:<22} {statistics.median(starts):>9.3f} ({min(starts):.3f}-{max(starts):.3f})"
                      f" {statistics.median(epochs):>10.2f} ({min(epochs):.2f}-{max(epochs):.2f})")
            print()
        parent.end(study, interrupted=False)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    main()
