"""CIFAR-10 results: the tutorial's config under this harness, then a wall-clock-budgeted sweep.

    python bench/cifar10_results.py [--budget-minutes 55] [--workdir bench/results/cifar10] [--save]

Runs on ../shared/data/cifar10-jpeg/train with 5,000 validation images carved from train (no test
split is read). Prints validation accuracy, wall-clock time and the best config of each; --save keeps both tables
for docs/harness.md (docs/results/cifar10-results.json and cifar10-best.json, written in by bench/pages.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna

import pages
from sweep.attrs import STOP_REASON
from common import CIFAR_JPEG, header

DATA = ["data=imagefolder", f"data.root={CIFAR_JPEG}", "data.val_size=5000"]


def train_once(workdir: Path, *overrides: str) -> tuple[dict, float]:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "sweep.train", *DATA, *overrides, f"hydra.run.dir={workdir}/tutorial"],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(run.stderr[-2000:])
    return json.loads((workdir / "tutorial" / "metrics.json").read_text()), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-minutes", type=float, default=55,
                        help="the sweep's time budget: running trials stop at their next epoch end after it")
    parser.add_argument("--workdir", type=Path, default=Path("results/cifar10"))
    parser.add_argument("--tutorial-only", action="store_true", help="time the tutorial config only; no sweep")
    parser.add_argument("--save", action="store_true", help="keep the tables for the docs (bench/pages.py)")
    parser.add_argument("--rebuild", action="store_true",
                        help="count the sweep's row again from the study in --workdir; keep the rest of the saved table")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.rebuild:
        return rebuild(workdir, int(args.budget_minutes * 60))
    workdir.mkdir(parents=True, exist_ok=True)
    header("CIFAR-10 (JPEG copy, 45,000 train / 5,000 val): tutorial config vs a budgeted sweep")

    tutorial, tutorial_wall = train_once(workdir, "+experiment=tutorial")
    sys.path.insert(0, str(Path(__file__).parent))
    from epoch_speed import tutorial_epochs

    pipeline_epoch = statistics.median(tutorial_epochs(2, 2))

    if args.tutorial_only:
        pages.show(TABLE, tutorial_rows(tutorial, tutorial_wall, pipeline_epoch))
        return
    start = time.perf_counter()
    sweep = subprocess.run(
        [sys.executable, "-m", "sweep.train", "--multirun", "search=cifar10", *DATA, "hydra/sweeper/pruner=halving",
         # First rung at epoch 6, not 2: crops slow the first epochs, and an early rung would favour no crops.
         "hydra.sweeper.pruner.min_resource=6",
         f"hydra.sweeper.time_budget={int(args.budget_minutes * 60)}", f"hydra.sweeper.storage=sqlite:///{workdir}/cifar10.db",
         f"hydra.sweep.dir={workdir}/sweep"], capture_output=True, text=True)
    sweep_wall = time.perf_counter() - start
    (workdir / "sweep.log").write_text(sweep.stdout + sweep.stderr)
    if sweep.returncode != 0:
        raise SystemExit(f"the sweep failed (exit {sweep.returncode}); its output is in {workdir / 'sweep.log'}")
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{workdir}/cifar10.db")  # the one study there
    results = pages.show(TABLE, tutorial_rows(tutorial, tutorial_wall, pipeline_epoch)
                         + [sweep_row(study, sweep_wall, int(args.budget_minutes * 60))])
    best = study.best_trial
    best_table = pages.show(["setting", "value"], [[f"`{k}`", f"{v:.4g}" if isinstance(v, float) else f"`{v}`"]
                                                   for k, v in best.params.items()])
    print(f"best run: {best.user_attrs.get('run_dir')}")
    if args.save:
        spread = "one run of each: the sweep's best is the highest of its trials, on the validation images that picked it"
        print(f"saved {pages.save('cifar10-results', *results, spread)}")
        print(f"saved {pages.save('cifar10-best', *best_table, f'trial {best.number} of that sweep, {best.value:.4f}')}")


def rebuild(workdir: Path, budget: int) -> None:
    saved = json.loads((pages.RESULTS / "cifar10-results.json").read_text())
    wall = 60 * float(saved["rows"][-1][2].split()[0])
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{workdir}/cifar10.db")
    where = {k: saved[k] for k in ("command", "machine", "date")}
    table = pages.show(saved["columns"], saved["rows"][:-1] + [sweep_row(study, wall, budget)])
    print(f"saved {pages.save('cifar10-results', *table, saved['spread'], where)}")


def sweep_row(study: optuna.Study, wall: float, budget: int) -> list[str]:
    best = study.best_trial
    states = [t.state.name for t in study.trials]
    late = sum("time_budget" in t.user_attrs.get(STOP_REASON, "") for t in study.trials)  # not pruned by halving
    return [f"sweep: `search=cifar10`, halving pruner (first rung at epoch 6), `hydra.sweeper.time_budget={budget}`",
            f"**{best.value:.4f}** (trial {best.number})", f"{wall / 60:.1f} min",
            f"{sum(len(t.intermediate_values) for t in study.trials)} in {len(states)} trials",
            f"{states.count('COMPLETE')} complete, {states.count('PRUNED') - late} pruned, {late} stopped by the budget, "
            f"{states.count('FAIL')} failed"]


TABLE = ["run", "val accuracy", "wall-clock", "epochs", "notes"]


def tutorial_rows(tutorial: dict, tutorial_wall: float, pipeline_epoch: float) -> list[list[str]]:
    return [
        [f"tutorial config (`+experiment=tutorial`), this harness, {tutorial['precision']}",
         f"{tutorial['val_accuracy']:.4f}", f"{tutorial_wall / 60:.1f} min ({tutorial['train_seconds']:.0f} s training)",
         str(tutorial["epochs_run"]), ""],
        ["tutorial config, tutorial pipeline (2 epochs timed, x25)", "-", f"{50 * pipeline_epoch / 60:.1f} min", "50",
         f"the harness takes **{tutorial['train_seconds'] / (50 * pipeline_epoch):.3f}** of its time"]]


if __name__ == "__main__":
    main()
