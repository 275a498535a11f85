"""Threads under contention: the epoch time of the tutorial MLP and of the best preset, at 1 and 2 CPU threads
and with sweep's default (torch's threads with OpenMP's passive waiting), on an idle machine and beside two CPU-bound processes.

    python bench/threads.py [--steps 60] [--rounds 5]

Each setting runs in a fresh process (OpenMP reads its environment when torch loads), times `--steps` training
steps after 5 of warm-up on the CIFAR-10 JPEG copy, and reports seconds per epoch (median step x steps per epoch).
Contention makes single measurements swing by tens of percent, so the settings take turns for `--rounds` rounds
and each cell is the median of its rounds.
The verdict lines check the targets: the default loses at most 10% against the best setting when idle, and is
never more than 1.5x slower than 1 thread under contention.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pages
from common import CIFAR_JPEG, header

PRESETS = {
    "tutorial MLP [128], batch 256": ["+experiment=tutorial"],
    "best preset 2x2048 BN, batch 128": ["+experiment=cifar10_mlp_best", "trainer.precision=fp32"],
}
AUTO = "auto (the default: passive waiting, no more threads than the free cores)"
SETTINGS = {  # label -> (trainer.threads, extra environment)
    "2 threads (torch default)": ("null", {}),
    "1 thread": ("1", {}),
    AUTO: ("auto", {}),
}


def child(overrides: list[str], steps: int, warmup: int = 5) -> None:
    """Time `steps` optimizer steps of the composed config; print seconds per step and steps per epoch."""
    if "trainer.threads=auto" in overrides:
        import sweep.mlp.train  # noqa: F401  (first, as `python -m sweep.train` does: it sets up OpenMP before torch)
    import torch
    from hydra import compose, initialize_config_dir

    from sweep.mlp.data import build_splits
    from sweep.mlp.device import choose_precision, resolve_device
    from sweep.mlp.model import build_model, build_optimizer
    from sweep.mlp.config import CONF_DIR, register_resolvers
    from sweep.mlp.train import apply_threads, autocast
    register_resolvers()

    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose("config", overrides=["data=imagefolder", f"data.root={CIFAR_JPEG}", "data.val_size=5000",
                                           *overrides])
    apply_threads(cfg.trainer.threads)
    device = resolve_device("cpu")
    precision = choose_precision(cfg.trainer.precision, device)
    data = build_splits(cfg.data, device)
    model = build_model(cfg.model, data.input_shape, len(data.classes))
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), device)
    g = torch.Generator().manual_seed(0)
    batches = data.train.batches(g, augment=True)
    times = []
    for i in range(steps + warmup):
        x, y = next(batches)
        start = time.perf_counter()
        with autocast(device, precision):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({"step": median, "steps_per_epoch": len(data.train), "threads": torch.get_num_threads()}))


def measure(overrides: list[str], threads: str, env: dict, steps: int, warmup: int = 5) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps([*overrides, f"trainer.threads={threads}"]),
                          "--steps", str(steps), "--warmup", str(warmup)], capture_output=True, text=True,
                         env={**os.environ, **env})
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="measure only the settings whose label starts with one of these")
    parser.add_argument("--child")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--save", action="store_true", help="keep the table for the docs (bench/pages.py)")
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child), args.steps, args.warmup)
    header("Epoch time by thread setting, idle and beside two CPU-bound processes")
    rounds: dict[tuple, list[float]] = {}
    for load in ("idle", "2 busy processes"):
        labels = [label for label in SETTINGS if not args.only or any(label.startswith(o) for o in args.only)]
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if load != "idle" else 0)]
        try:
            for r in range(args.rounds):
                for preset, overrides in PRESETS.items():
                    # Rotated each round, so no setting always runs first or last beside the same neighbours.
                    for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                        threads, env = SETTINGS[label]
                        m = measure(overrides, threads, env, args.steps)
                        epoch = m["step"] * m["steps_per_epoch"]
                        rounds.setdefault((load, preset, label), []).append(epoch)
                        print(f"  round {r + 1} | {load:16} | {preset:34} | {label:36} | {m['threads']} thr | "
                              f"{epoch:7.1f} s/epoch", flush=True)
        finally:
            for h in hogs:
                h.kill()
                h.wait()
    results = {key: sorted(v)[len(v) // 2] for key, v in rounds.items()}
    print()
    table = pages.show(["load", "model", *labels], [
        [load, preset, *(f"{results[(load, preset, label)]:.1f} s ({min(rounds[(load, preset, label)]):.1f}-"
                         f"{max(rounds[(load, preset, label)]):.1f})" for label in labels)]
        for load in ("idle", "2 busy processes") for preset in PRESETS])
    print("(each cell: the median of the rounds, and their range)")
    if args.save:
        print(f"saved {pages.save('threads', *table, f'each cell the median epoch (range) of {args.rounds} rounds, the settings taking turns')}")
    print()
    for preset in PRESETS if AUTO in labels and "1 thread" in labels else ():
        idle_best = min(results[("idle", preset, label)] for label in labels)
        idle = results[("idle", preset, AUTO)] / idle_best
        busy = results[("2 busy processes", preset, AUTO)] / results[("2 busy processes", preset, "1 thread")]
        print(f"{preset}: default idle {idle:.2f}x the fastest setting (target <= 1.10); "
              f"busy {busy:.2f}x 1 thread (target <= 1.50)")


if __name__ == "__main__":
    main()
