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

from common import header, run_sweep

SPACE = ["hydra.sweeper.params=null", "optimizer.lr=tag(log, interval(1e-3, 1e-1))", "model.width=choice(128, 256, 512)",
         "model.depth=range(1, 3)", "optimizer=choice(sgd, adamw)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
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
    print("| pruner | best val accuracy | total epochs | pruned trials | wall seconds |")
    print("|---|---|---|---|---|")
    for pruner, best, epochs, pruned, wall in rows:
        print(f"| {pruner} | {best:.4f} | {epochs} | {pruned} / {args.trials} | {wall:.0f} |")
    (_, b0, e0, _, w0), (_, b1, e1, _, w1) = rows
    print(f"\npruning used {e0 / e1:.1f}x fewer epochs ({w0 / w1:.1f}x less wall-clock); best accuracy {b1 - b0:+.4f}")


if __name__ == "__main__":
    main()
