"""Precision by machine: the best preset's epoch time with trainer.precision=auto, fp32 and bf16, side by side.

    python bench/precision.py [--steps 20]

auto must pick bf16 only where it is native and faster. On a CPU without AVX512-BF16 or AMX it picks fp32, and
the verdict line checks that auto's epoch is within 1.3x of fp32's; forcing bf16 there shows what auto avoids.
Each setting runs in a fresh process and times `--steps` training steps after 5 of warm-up (threads.py's child).
"""

from __future__ import annotations

import argparse

import pages
from common import header
from threads import measure

PRESET = ["+experiment=cifar10_mlp_best"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--save", action="store_true", help="keep the table for the docs (bench/pages.py)")
    args = parser.parse_args()
    import torch

    from sweep.mlp.device import bf16_native, choose_precision

    header("The best preset's epoch time by trainer.precision")
    cpu = torch.device("cpu")
    print(f"native bf16 on this CPU: {bf16_native(cpu)}; trainer.precision=auto picks {choose_precision('auto', cpu)}")
    print()
    rows = {}
    for precision in ("auto", "fp32", "bf16"):
        emulated = precision == "bf16" and not bf16_native(cpu)  # seconds per step: a few steps tell enough
        m = measure([*PRESET, f"trainer.precision={precision}"], "auto", {}, 3 if emulated else args.steps,
                    warmup=1 if emulated else 5)
        rows[precision] = m["step"] * m["steps_per_epoch"]
    picked = choose_precision("auto", cpu)
    table = pages.show(["`trainer.precision`", "seconds / epoch (the median step x steps)", "vs fp32"], [
        [f"auto (picks {picked} here)" if p == "auto" else p + (" (forced: emulated)" if p == "bf16" and not bf16_native(cpu) else ""),
         f"{seconds:,.1f}", f"{seconds / rows['fp32']:.2f}x"] for p, seconds in rows.items()])
    if args.save:
        print(f"saved {pages.save('precision', *table, f'the median of {args.steps} steps after 5 of warm-up, each setting in a fresh process')}")
    print()
    print(f"auto is {rows['auto'] / rows['fp32']:.2f}x fp32's epoch time (target <= 1.30 on a CPU without native bf16)")


if __name__ == "__main__":
    main()
