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

import pages
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


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


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


def measure(name: str, spec: dict | None, trial: Trial, run_dir: Path, epochs: int) -> tuple[float, float, float]:
    """(seconds to start and finish the run, mean milliseconds per epoch's log call over the run, milliseconds of
    the first epoch's call, which sends at once: what every epoch pays when epochs are longer than MLflow's
    FLUSH_SECONDS)."""
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
    return opened + time.perf_counter() - closing, 1000 * statistics.mean(per_epoch), 1000 * per_epoch[0]


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
        measured: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
        for label, load in conditions(args.load):
            results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
            with cpu_hogs(load):
                for r in range(args.rounds):
                    for i, (name, spec) in enumerate(contenders.items()):
                        run_dir = root / f"{label[:4]}-{r}-{i}"
                        run_dir.mkdir()
                        results[name].append(measure(name, spec, Trial(r, study.user_attrs), run_dir, args.epochs))
            measured[label] = results
            print(f"## {label}: {args.rounds} rounds of {args.epochs} epochs; median (min-max over rounds)")
            print(f"{'logger':<22} {'start + finish, s':>22} {'per epoch, ms':>22} {'an epoch that sends, ms':>24}")
            for name, rows in results.items():
                print(f"{name:<22} {spread([r[0] for r in rows], 3):>22} {spread([r[1] for r in rows], 2):>22}"
                      f" {spread([r[2] for r in rows], 2):>24}")
            print()
        what = (("per epoch, ms", 1, 2), ("an epoch that sends, ms", 2, 2), ("start + finish, s", 0, 3))
        columns = ["logger"] + [f"{title} ({label})" for title, _, _ in what for label in measured]
        rows = [[f"`{name}`"] + [spread([row[k] for row in measured[label][name]], digits)
                                 for _, k, digits in what for label in measured]
                for name in contenders]
        saved = pages.save("trackers", columns, rows,
                           f"median (min-max) over {args.rounds} interleaved rounds of {args.epochs} epochs each")
        print(f"saved {saved}; python bench/pages.py writes it into the docs")
        parent.end(study, interrupted=False)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


if __name__ == "__main__":
    main()
