"""What each install line of the README costs on disk, measured in fresh virtual environments.

    python bench/install_sizes.py [--save]

Each line is installed with pip into its own new venv (Python as this one, from the indexes pip is set up with
here); a distribution's size is the size of the files its RECORD lists (its .pyc included). "more" is what a line
installs beyond `pip install .`'s distributions; the Lightning line is measured in the MLP harness's venv, so its
"more" is what it adds beside torch. Takes some minutes and a few GB of disk (torch's CUDA build); the venvs are
removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pages

ROOT = Path(__file__).resolve().parents[1]

# Run by each venv's own python: every distribution it has, with its size and what it requires there.
MEASURE = r"""
import json, os
from importlib.metadata import distributions
out = {}
for d in distributions():
    size = 0
    for f in d.files or []:
        try:
            size += os.path.getsize(d.locate_file(f))
        except OSError:
            pass
    out[d.metadata["Name"].lower().replace("_", "-")] = {"size": size, "requires": d.requires or [], "version": d.version}
print(json.dumps(out))
"""

BOOTSTRAP = {"pip", "setuptools", "wheel"}  # what any venv has before the line is installed


def venv(where: Path, *spec: str) -> dict[str, dict]:
    """A new venv at `where` with `spec` installed: its distributions (name -> size, requires)."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    python = str(where / "bin" / "python")
    install(python, *spec)
    return measure(python)


def install(python: str, *spec: str) -> None:
    run = subprocess.run([python, "-m", "pip", "install", "-q", *spec], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"pip install {' '.join(spec)} failed:\n{run.stderr[-2000:]}")


def measure(python: str) -> dict[str, dict]:
    dists = json.loads(subprocess.run([python, "-c", MEASURE], check=True, capture_output=True, text=True).stdout)
    return {name: d for name, d in dists.items() if name not in BOOTSTRAP}


def total(dists: dict[str, dict], names=None) -> int:
    return sum(d["size"] for name, d in dists.items() if names is None or name in names)


def closure(dists: dict[str, dict], root: str) -> set[str]:
    """`root` and everything it requires in that venv (on this platform, with the extras asked for), transitively."""
    from packaging.requirements import Requirement

    seen, todo = set(), [(root, frozenset())]
    while todo:
        name, extras = todo.pop()
        name = name.lower().replace("_", "-")
        if name not in dists or (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in dists[name]["requires"]:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append((req.name, frozenset(req.extras)))
    return {name for name, _ in seen}


def mb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save", action="store_true", help="keep the table for the README (bench/pages.py)")
    args = parser.parse_args()
    print(f"# install sizes, Python {sys.version.split()[0]}, {sys.platform}; command: python {shlex.join(sys.argv)}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="install-sizes-"))
    try:
        rows = measure_all(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = pages.show(["what you want", "command", "size in a fresh virtual environment"], rows)
    if args.save:
        print(f"saved {pages.save('install-sizes', *table, 'one install each; sizes are the installed files')}")


def measure_all(work: Path) -> list[list[str]]:
    here = str(ROOT)
    base = venv(work / "base", here)
    rows: list[list[str]] = []

    def row(*cells: str) -> None:  # shown as soon as measured: the whole run takes minutes
        rows.append(list(cells))
        print(*cells, sep=" | ", flush=True)

    row("the sweeper for your own Hydra app", "`pip install .`",
        f"{mb(total(base))} ({named(base, *TOP)} and what they need)")

    def more(dists: dict[str, dict], than: dict[str, dict] = base) -> int:
        return total(dists, set(dists) - set(than))

    mlp = venv(work / "mlp", f"{here}[mlp]")
    torch = closure(mlp, "torch") - set(base)
    build = "'s CUDA build" if any(name.startswith("nvidia-") for name in torch) else ""
    row("plus the MLP harness", "`pip install '.[mlp]'`",
        f"{mb(more(mlp))} more: {named(mlp, 'torch')}{build} and what it needs are {mb(total(mlp, torch))} "
        f"of it ({named(mlp, 'torchvision')} beside it)")
    install(str(work / "mlp" / "bin" / "python"), f"{here}[lightning]")
    both = measure(str(work / "mlp" / "bin" / "python"))
    row("the Lightning callback", "`pip install '.[lightning]'`",
        f"{mb(more(both, mlp))} more beside the MLP harness ({named(both, 'lightning')})")
    shutil.rmtree(work / "mlp")
    cpu = venv(work / "cpu", CPU_TORCH)
    row("torch's CPU build instead, installed before the harness", f"`pip install torch --index-url {CPU_INDEX}`",
        f"{mb(total(cpu))} (torch {CPU_TORCH.split('==')[1]}'s CPU wheel alone)")
    shutil.rmtree(work / "cpu")
    for extra, what, main in EXTRAS:
        dists = venv(work / extra, f"{here}[{extra}]")
        row(what, f"`pip install '.[{extra}]'`", f"{mb(more(dists))} more ({named(dists, main)})")
        shutil.rmtree(work / extra)
    return rows


def named(dists: dict[str, dict], *names: str) -> str:
    """The distributions a row is about, with the versions pip chose."""
    return ", ".join(f"{name} {dists[name]['version']}" for name in names if name in dists)


TOP = ("hydra-core", "omegaconf", "optuna", "pandas", "matplotlib")
CPU_TORCH = "torch==2.13.0"  # the CPU wheel this project's machines keep on disk, where the index is out of reach
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
EXTRAS = [("ray", "trials on a Ray cluster (`hydra/launcher=ray_pool`)", "ray"),
          ("slurm", "trials as SLURM jobs (`hydra/launcher=slurm_pool`)", "submitit"),
          ("postgres", "PostgreSQL storage", "psycopg"),
          ("mlflow", "MLflow runs (`logger=mlflow`, `hydra.sweeper.tracker`)", "mlflow-skinny"),
          ("tensorboard", "TensorBoard runs (`logger=tensorboard`)", "tensorboard"),
          ("wandb", "W&B runs (`logger=wandb`)", "wandb")]


if __name__ == "__main__":
    main()
