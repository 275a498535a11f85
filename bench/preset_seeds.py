"""The best preset over several seeds: how much of its accuracy is the seed's.

    python bench/preset_seeds.py [--seeds 0 1 2] [--epochs 60] [--jobs 3]

Trains `+experiment=cifar10_mlp_best` on the CIFAR-10 JPEG copy (45,000 train / 5,000 validation carved from its
train split; there is no test split there) once per seed, with trainer.precision=auto, and prints each run's best-epoch validation accuracy and the mean and standard deviation. The split is the same for
every seed (data.split_seed=0): only the weights, shuffling and augmentation change. With --jobs above 1 the seeds
train side by side with one thread each, which on 2 cores takes less wall time than one after the other (training
minutes are then per run, not comparable with a run alone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import CIFAR_JPEG, header


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=1, help="seeds trained at the same time (one thread each)")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    header(f"+experiment=cifar10_mlp_best over seeds {args.seeds}")
    out = args.out or Path(tempfile.mkdtemp(prefix="preset-seeds-"))
    rows = []
    print(f"runs in {out} (each run's train.log shows its epochs)", flush=True)
    print("| seed | best-epoch val accuracy | best epoch | final val accuracy | precision | threads | training minutes |")
    print("|---|---|---|---|---|---|---|")
    threads = ["trainer.threads=1"] if args.jobs > 1 else []
    pending = list(args.seeds)
    running: dict[int, subprocess.Popen] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            running[seed] = subprocess.Popen(
                [sys.executable, "-m", "sweep.train", "+experiment=cifar10_mlp_best", "data=imagefolder",
                 f"data.root={CIFAR_JPEG}", "data.val_size=5000", f"trainer.seed={seed}", f"trainer.epochs={args.epochs}",
                 "trainer.save_checkpoint=false", *threads, f"hydra.run.dir={out / f'seed{seed}'}"],
                stdout=subprocess.DEVNULL, stderr=(out / f"seed{seed}.err").open("w"))
        seed, proc = next(iter(running.items()))
        if proc.wait():
            raise SystemExit((out / f"seed{seed}.err").read_text()[-2000:])
        del running[seed]
        m = json.loads((out / f"seed{seed}" / "metrics.json").read_text())
        rows.append(m)
        print(f"| {seed} | {m['val_accuracy']:.4f} | {m['best_epoch']} | {m['final_val_accuracy']:.4f} | "
              f"{m['precision']} | {m['threads']} | {m['train_seconds'] / 60:.1f} |", flush=True)
    accs = [m["val_accuracy"] for m in rows]
    print()
    print(f"best-epoch validation accuracy over {len(accs)} seeds: {statistics.mean(accs):.4f} ± "
          f"{statistics.stdev(accs) if len(accs) > 1 else 0:.4f} (mean ± sample std), precision {rows[0]['precision']}")


if __name__ == "__main__":
    main()
