"""The MLP harness: config -> data -> model -> loop -> metrics, on CIFAR-10, digits or an image folder.

    python -m sweep.train [overrides]          one model (or --multirun: a sweep over conf/search)
    python -m sweep.evaluate <run or sweep>    the best checkpoint on the validation split

Needs the `mlp` extra (torch, torchvision); the sweeper and the launchers never import it.
"""

import importlib.util

from sweep.errors import exit_with

EXTRA = ("torch", "torchvision", "tqdm", "numpy", "PIL")  # what `pip install 'sweep[mlp]'` brings


def require(command: str) -> None:
    """One line naming the extra, instead of an ImportError, where the harness's packages are missing."""
    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        exit_with(f"{command} needs the MLP harness's packages ({', '.join(missing)} missing here): "
                  "pip install 'sweep[mlp]'")
