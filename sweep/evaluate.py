"""`python -m sweep.evaluate` and `sweep-evaluate`: score a run's or a sweep's best model (sweep/mlp/evaluate.py)."""

import sys


def cli(argv: list[str] | None = None) -> int:
    from sweep.mlp import require

    require("sweep-evaluate")
    from sweep.mlp.evaluate import cli as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(cli())
