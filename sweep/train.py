"""`python -m sweep.train` and `sweep-train`: train one MLP, or sweep it with --multirun (sweep/mlp/app.py)."""

import os


def cli() -> None:
    # Before torch loads OpenMP: threads that wait for each other sleep instead of spinning. Beside another busy
    # process, spinning made a 2-thread epoch 7x slower than 1 thread; sleeping costs nothing when the machine is
    # idle (bench/threads.py). An explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from sweep.mlp import require

    require("sweep-train")
    # The importable sweep.mlp.app, not a __main__ copy: the launchers' workers find the task by its module.
    from sweep.mlp.app import cli as run

    run()


if __name__ == "__main__":
    cli()
