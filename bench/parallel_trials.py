"""Trials per hour with 1 and 2 trials in flight (the pool launcher), on CIFAR-10-sized trials.

    python bench/parallel_trials.py [--trials 8] [--epochs 3]

Every trial trains the tutorial's MLP (45,000 CIFAR-10 images, 5,000 validation) for a few epochs
with a learning rate drawn at random; the pool launcher gives each of k workers cores / k threads.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pages
from common import header, run_sweep
from sweep.launchers.protocol import cpu_cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--save", action="store_true", help="keep the table for the docs (bench/pages.py)")
    args = parser.parse_args()
    header("Trials per hour by trials in flight (hydra.sweeper.n_jobs)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.jobs:
            wall, study = run_sweep(
                f"k{k}", "+experiment=tutorial", f"trainer.epochs={args.epochs}", f"hydra.sweeper.n_trials={args.trials}",
                f"hydra.sweeper.n_jobs={k}", "hydra/sweeper/pruner=none", "hydra/sweeper/sampler=random",
                "hydra.sweeper.sampler.seed=0", "hydra.sweeper.params=null", "optimizer.lr=tag(log, interval(1e-3, 1e-2))",
                workdir=Path(tmp))
            assert len(study.trials) == args.trials
            rows.append((k, wall, 3600 * args.trials / wall))
    cores = cpu_cores()
    columns = ["trials in flight (`hydra.sweeper.n_jobs`)", "torch threads each", "wall seconds", "trials / hour",
               "vs k=1"]
    table = [[str(k), str(max(1, cores // k)), f"{wall:.1f}", f"{rate:.0f}", f"{rate / rows[0][2]:.2f}x"]
             for k, wall, rate in rows]
    pages.show(columns, table)
    if args.save:
        print(f"saved {pages.save('parallel-trials', columns, table, f'one sweep of {args.trials} trials x {args.epochs} epochs each')}")


if __name__ == "__main__":
    main()
