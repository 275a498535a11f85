"""The same trial budget with and without pruning, on CIFAR-10.

    python bench/pruning.py [--trials 16] [--epochs 15]

Both sweeps draw the same configurations (a seeded random sampler over learning rate, width, depth and
optimizer; batch norm; trainer.precision=auto), so the only difference is the pruner: none, against asynchronous successive halving
(hydra/sweeper/pruner=halving). Compares the best validation accuracy and the epochs spent.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from optuna.trial import TrialState

import pages
from common import header, run_sweep

SPACE = ["hydra.sweeper.params=null", "optimizer.lr=tag(log, interval(1e-3, 1e-1))", "model.width=choice(128, 256, 512)",
         "model.depth=range(1, 3)", "optimizer=choice(sgd, adamw)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--save", action="store_true", help="keep the table for the docs (bench/pages.py)")
    args = parser.parse_args()
    header("Pruning: same trials, same configurations, with and without a pruner")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in ("none", "halving"):
            wall, study = run_sweep(
                f"prune-{pruner}", f"trainer.epochs={args.epochs}", "model.norm=batch",
                f"hydra.sweeper.n_trials={args.trials}", f"hydra/sweeper/pruner={pruner}",
                "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=0", *SPACE,
                workdir=Path(tmp))
            done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            epochs = sum(len(t.intermediate_values) for t in done)
            best = max(t.value for t in study.trials if t.state == TrialState.COMPLETE)
            rows.append((pruner, best, epochs, sum(t.state == TrialState.PRUNED for t in study.trials), wall))
    (_, b0, e0, _, w0) = rows[0]
    columns = ["pruner", "best val accuracy", "vs none", "total epochs", "fewer epochs", "pruned trials", "wall seconds",
               "less wall-clock"]
    table = [[pruner, f"{best:.4f}", f"{best - b0:+.4f}", str(epochs), f"{e0 / epochs:.1f}x", f"{pruned} / {args.trials}",
              f"{wall:.0f}", f"{w0 / wall:.1f}x"] for pruner, best, epochs, pruned, wall in rows]
    pages.show(columns, table)
    if args.save:
        print(f"saved {pages.save('pruning', columns, table, 'one sweep each, the same seeded configurations')}")


if __name__ == "__main__":
    main()
