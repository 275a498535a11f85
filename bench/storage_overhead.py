"""Shared-study throughput and what the storage costs per trial.

    python bench/storage_overhead.py [--trials 8] [--epochs 3]

1. Storage cost of one trial's bookkeeping (ask, 30 epochs of report + should_prune under a median
   pruner, the user attributes, tell) for each storage, against Optuna's in-memory storage.
2. Trials per hour on CIFAR-10-sized trials (the tutorial MLP) with 1 and 2 sweep processes working on
   one PostgreSQL study, started here on loopback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna

import pages
from common import CIFAR_JPEG, header

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "extras"))
from pgserver import start_postgres  # noqa: E402

from sweep.sweeper import storage as st  # noqa: E402

EPOCHS_PER_TRIAL = 30


def opened(url: str):
    return st.open_storage(st.parse(url))


def bookkeeping_ms(storage, trials: int = 20) -> float:
    study = optuna.create_study(storage=storage, direction="maximize", pruner=optuna.pruners.MedianPruner(),
                                study_name=f"overhead-{time.time_ns()}")
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        for epoch in range(1, EPOCHS_PER_TRIAL + 1):
            trial.report(0.5, epoch)
            trial.should_prune()
        for key in ("run_dir", "epochs", "best_epoch", "epochs_run", "train_seconds", "param_count"):
            trial.set_user_attr(key, 1)
        study.tell(trial, 0.5)
    return 1000 * (time.perf_counter() - start) / trials


def sweep_workers(pg, workers: int, trials: int, epochs: int, workdir: Path) -> float:
    name = f"w{workers}"
    cmd = [sys.executable, "-m", "sweep.train", "--multirun", "data=imagefolder", f"data.root={CIFAR_JPEG}",
           "data.val_size=5000", "+experiment=tutorial", f"trainer.epochs={epochs}", "hydra/sweeper/pruner=none",
           "hydra.sweeper.n_jobs=1", f"hydra.sweeper.n_trials={trials // workers}", f"trainer.threads={2 // workers or 1}",
           f"hydra.sweeper.storage={pg.url}", f"hydra.sweeper.study_name={name}", "hydra.sweeper.params=null",
           "optimizer.lr=tag(log, interval(1e-3, 1e-2))"]
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=workdir, env={**os.environ, **pg.env}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err[-2000:])
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=name, storage=pg.url)
    assert len(study.trials) == trials and len({t.number for t in study.trials}) == trials
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--save", action="store_true", help="keep the tables for the docs (bench/pages.py)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    header("Storage: bookkeeping per trial, and 1 vs 2 workers on one PostgreSQL study")
    pg = start_postgres()
    os.environ.update(pg.env)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cost = pages.show(["storage", f"bookkeeping per trial ({EPOCHS_PER_TRIAL} epochs reported), ms"], [
                [label, f"{bookkeeping_ms(storage):.1f}"] for label, storage in [
                    ("in-memory (no persistence)", optuna.storages.InMemoryStorage()),
                    ("SQLite (default, WAL)", opened(f"sqlite:///{tmp}/s.db")),
                    ("journal file", opened(f"journal:///{tmp}/j.log")),
                    ("PostgreSQL on loopback", opened(pg.url))]])
            print()
            walls = [(k, sweep_workers(pg, k, args.trials, args.epochs, Path(tmp))) for k in (1, 2)]
        one = 3600 * args.trials / walls[0][1]
        shared = pages.show(
            ["sweep processes on one PostgreSQL study", "torch threads each", "wall seconds", "trials / hour", "vs 1"],
            [[str(k), str(2 // k), f"{wall:.1f}", f"{3600 * args.trials / wall:.0f}", f"{3600 * args.trials / wall / one:.2f}x"]
             for k, wall in walls])
        if args.save:
            print(f"saved {pages.save('storage-cost', *cost, 'the mean over 20 trials of each storage')}")
            print(f"saved {pages.save('storage-shared', *shared, f'one sweep each, {args.trials} trials x {args.epochs} epochs')}")
    finally:
        pg.remove()


if __name__ == "__main__":
    main()
