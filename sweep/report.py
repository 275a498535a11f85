"""`python -m sweep.report` and `sweep-report`: a sweep's report, from its study (sweep/sweeper/report.py)."""

import sys


def cli(argv: list[str] | None = None) -> int:
    from sweep.sweeper.report import cli as run

    return run(argv)


if __name__ == "__main__":
    sys.exit(cli())
