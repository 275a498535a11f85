"""The race: one sweep, the same work, against the peers a user would pick instead, side by side in one run.

    python bench/race.py [--rounds 3] [--trials 40] [--epochs 40] [--plot docs/img/race.png]
    python bench/race.py --data cifar10 --budget 1800 --rounds 1 [--plot docs/img/race_cifar10.png]
    python bench/race.py --data cifar10 --replot docs/race_cifar10.json --plot docs/img/race_cifar10.png

Every contender trains sweep.train's MLP, two trials at a time on this machine, each from a fresh process
(start-up counts). Rounds interleave the contenders; the table shows medians.

- digits (default): the bundled digits, conf/search/digits.yaml's space, --trials trials of up to --epochs epochs;
- cifar10: the tutorial's MLP on the shared CIFAR-10 JPEG train split (45,000 train / 5,000 validation),
  conf/search/tutorial.yaml's space (SGD's lr, momentum, weight decay, batch size), up to --epochs (20) epochs a
  trial, for --budget seconds each: time to accuracy, trials as many as fit.

- sweep, halving: this project's sweeper, pool launcher, successive halving (min_resource 1, reduction factor 4)
- sweep, median: the same with the median pruner (this app's preset; digits only)
- hydra-optuna-sweeper: upstream's sweeper with Hydra's joblib launcher (two at a time), no pruning (it has none),
  max_failure_rate=1 (by default it ends the sweep at the first diverged trial)
- Ray Tune: OptunaSearch with ASHA (grace period 1, reduction factor 4), reuse_actors=True (bench/race_tune.py)

Needs the bench extra: pip install -e '.[mlp,bench]'.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pages
from common import CIFAR_JPEG, conditions, cpu_hogs, header, upstream_conf

from sweep import atomic

ROOT = Path(__file__).resolve().parents[1]
# Per data set: the overrides every contender trains with, the accuracies whose time-to-reach the table reports,
# and the plot's y range.
DATA = {
    "digits": {"overrides": ["data=digits", "search=digits"], "targets": [0.97], "ylim": (0.9, 1.0)},
    "cifar10": {"overrides": ["data=imagefolder", f"data.root={CIFAR_JPEG}", "data.val_size=5000", "search=tutorial"],
                "targets": [0.50, 0.51, 0.515, 0.52], "ylim": (0.49, 0.525)},
}


class Race:
    def __init__(self, data: str, trials: int, epochs: int, budget: float | None, cache: Path | None) -> None:
        self.data, self.trials, self.epochs, self.budget = data, trials, epochs, budget
        self.cache = cache

    @property
    def n_trials(self) -> int:
        return 10000 if self.budget else self.trials  # with a budget, trials as many as fit

    def common(self, work: Path) -> list[str]:
        return [*DATA[self.data]["overrides"], f"trainer.epochs={self.epochs}", f"hydra.sweeper.n_trials={self.n_trials}",
                "hydra.sweeper.n_jobs=2", f"data.cache_dir={self.cache or work / 'cache'}",
                "hydra.sweeper.study_name=race"]


def ours(race: Race, work: Path, seed: int, pruner: list[str]) -> dict:
    args = ["--multirun", *race.common(work), "hydra/sweeper/sampler=tpe", f"hydra.sweeper.sampler.seed={seed}", *pruner]
    if race.budget:
        args.append(f"hydra.sweeper.time_budget={race.budget}")
    return _run_sweep([sys.executable, "-m", "sweep.train", *args], work, "race")


def upstream(race: Race, work: Path, seed: int) -> dict:
    conf = upstream_conf(work)
    (work / "multirun" / "studies").mkdir(parents=True)  # upstream does not make the SQLite file's folder
    # Upstream has no time budget: it is stopped when the budget ends. Set as a user would who expects some
    # trials to diverge: by default upstream ends the sweep at the first failed trial.
    args = ["--multirun", f"--config-path={conf}", "hydra/sweeper=optuna", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", *race.common(work), "hydra/sweeper/sampler=tpe",
            f"hydra.sweeper.sampler.seed={seed}", "hydra.sweeper.max_failure_rate=1.0", "trainer.threads=1"]
    return _run_sweep([sys.executable, "-m", "sweep.train", *args], work, "race", stop_after=race.budget)


def tune(race: Race, work: Path, seed: int) -> dict:
    start = time.time()
    argv = [sys.executable, str(ROOT / "bench" / "race_tune.py"), str(work), f"--space={race.data}",
            f"--trials={race.n_trials}", f"--epochs={race.epochs}", f"--seed={seed}",
            *(["--budget", str(race.budget)] if race.budget else []),
            "--fixed", *[o for o in race.common(work) if not o.startswith(("hydra.", "search="))]]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=work)
    wall = time.time() - start
    if result.returncode != 0:
        print(f"Ray Tune ended with code {result.returncode} after {wall:.0f} s:\n{result.stderr[-3000:]}",
              file=sys.stderr, flush=True)
        return _failed(wall)
    data = json.loads((work / "tune.json").read_text())
    offset = wall - data["wall"]  # the interpreter's start, before race_tune.py took its clock
    points = [(t["ended"] + offset, t["best"]) for t in data["trials"]]
    return {"wall": wall, "first": min(t["started"] for t in data["trials"]) + offset,
            "epochs": sum(t["epochs"] for t in data["trials"]), "points": points, "failed": False}


def _run_sweep(argv: list[str], work: Path, study_name: str, stop_after: float | None = None) -> dict:
    import optuna

    start = time.time()
    with open(work / "stderr.txt", "w+") as err:
        proc = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=err, text=True, start_new_session=True)
        try:
            proc.wait(timeout=stop_after)
        except subprocess.TimeoutExpired:  # the budget is spent: everything the command started ends now
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        wall = time.time() - start
        err.seek(0)
        failed = proc.returncode != 0 and (stop_after is None or wall < stop_after)
        if failed:  # kept as a row: what it found until then still counts
            print(f"{argv[3:6]} ended with code {proc.returncode} after {wall:.0f} s:\n{err.read()[-3000:]}",
                  file=sys.stderr, flush=True)
    db = work / "multirun" / "studies" / f"{study_name}.db"
    if not db.exists():
        return _failed(wall)
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    trials = [t for t in study.trials if t.datetime_complete]
    points = []
    for t in trials:
        best = max(t.intermediate_values.values()) if t.intermediate_values else t.value
        if best is not None:
            points.append((t.datetime_complete.timestamp() - start, best))
    epochs = sum(json.loads(p.read_text())["epochs_run"] for p in work.glob("multirun/*/*/*/metrics.json"))
    first = min((t.datetime_start.timestamp() - start for t in study.trials if t.datetime_start), default=math.nan)
    return {"wall": wall, "first": first, "epochs": epochs, "points": points, "failed": failed}


def _failed(wall: float) -> dict:
    """A contender that ended before it found anything: a row that says so, not the end of the race."""
    return {"wall": wall, "first": math.nan, "epochs": 0, "points": [], "failed": True}


def best_of(result: dict) -> float:
    return max((v for _, v in result["points"]), default=math.nan)


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    reached = [t for t, v in sorted(points) if v >= target]
    return reached[0] if reached else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, help="per trial (digits: 40, cifar10: 20)")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/sweep"), help="cifar10: the decoded data's cache")
    parser.add_argument("--budget", type=float, help="seconds per contender (cifar10: 1800); trials as many as fit")
    parser.add_argument("--only", nargs="*", help="contenders to run (default: all)")
    parser.add_argument("--plot", type=Path, help="write the best-so-far curves of the last round here "
                                                  "(and every result, as it comes, next to it as .json)")
    parser.add_argument("--replot", type=Path, help="no race: the table and --plot from a race's saved .json")
    parser.add_argument("--load", type=int, default=0, help="also race beside this many CPU-bound processes")
    parser.add_argument("--save", action="store_true", help="keep the table for the docs (bench/pages.py)")
    args = parser.parse_args()
    cifar = args.data == "cifar10"
    args.epochs = args.epochs or (20 if cifar else 40)
    args.budget = args.budget or (1800 if cifar else None)
    work = f"{args.budget:.0f} s each" if args.budget else f"{args.trials} trials"
    what = f"{args.data}, {work}, up to {args.epochs} epochs a trial"
    if args.replot:
        runs = json.loads(args.replot.read_text())
        where = runs.pop("measured", None)  # the race's command, machine and date
        print(f"# The race as saved in {args.replot}, measured {where}")
        columns, rows = summarize(runs, args.data, args.budget)
        if args.plot:
            plot(runs, args.plot, args.data, args.budget, what)
        if args.save and where:
            print(f"saved {pages.save(f'race-{args.data}', ['condition'] + columns, [['idle'] + r for r in rows], spread(args), where)}")
        return
    header(f"The race: {what}, 2 at a time, {args.rounds} round(s)")
    cache = None
    if cifar:  # decoded once, before the race (or found in the cache): no contender pays for it
        cache = args.cache.expanduser()
        subprocess.run([sys.executable, "-m", "sweep.train", *DATA["cifar10"]["overrides"], "trainer.epochs=1",
                        f"data.cache_dir={cache}", f"hydra.run.dir={tempfile.mkdtemp(prefix='race-warm-up-')}"],
                       check=True, capture_output=True)
    race = Race(args.data, args.trials, args.epochs, args.budget, cache)
    contenders = {
        "sweep, halving (pool)": lambda w, s: ours(race, w, s, [
            "hydra/sweeper/pruner=halving", "hydra.sweeper.pruner.min_resource=1", "hydra.sweeper.pruner.reduction_factor=4"]),
        "sweep, median (pool)": lambda w, s: ours(race, w, s, []),
        "hydra-optuna-sweeper (joblib)": lambda w, s: upstream(race, w, s),
        "Ray Tune, ASHA, reuse_actors": lambda w, s: tune(race, w, s),
    }
    if cifar:
        del contenders["sweep, median (pool)"]
    if args.only:
        contenders = {k: v for k, v in contenders.items() if any(o in k for o in args.only)}
    columns, rows = [], []
    for condition, load in conditions(args.load):
        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        with cpu_hogs(load):
            for r in range(args.rounds):
                for name, run in contenders.items():
                    with tempfile.TemporaryDirectory() as tmp:
                        result = run(Path(tmp), r)
                    runs[name].append(result)
                    print(f"{condition}, round {r + 1}: {name}: {result['wall']:.1f} s, first trial at "
                          f"{result['first']:.1f} s, {result['epochs']} epochs, best {best_of(result):.4f}"
                          f"{' (ended early: failed)' * result['failed']}", flush=True)
                    if args.plot and not load:  # every result so far, so a race cut short keeps what it measured
                        atomic.write_text(args.plot.with_suffix(".json"),
                                          json.dumps({**runs, "measured": pages.measured_here()}, indent=1))
        print(f"\n## {condition} (load average {os.getloadavg()[0]:.1f} at the end)")
        found = summarize(runs, args.data, args.budget)
        columns = ["condition"] + found[0]
        rows += [[condition] + row for row in found[1]]
        if args.plot and not load:
            plot(runs, args.plot, args.data, args.budget, what)
    if args.save:
        print(f"saved {pages.save(f'race-{args.data}', columns, rows, spread(args))}")


def spread(args) -> str:
    return (f"the last of {args.rounds} round(s), {args.budget:.0f} s each" if args.budget else
            f"medians (range) of {args.rounds} interleaved rounds, each contender from a fresh process")


def summarize(runs: dict[str, list[dict]], data: str, budget: float | None) -> tuple[list[str], list[list[str]]]:
    """The race's table, printed; returned as columns and rows for bench/pages.py."""
    if budget:  # time to accuracy: what each had found by when
        marks = [t for t in (300, 600, 900, 1200, 1800, 3600) if t <= budget]
        targets = DATA[data]["targets"]
        columns = (["contender", "first trial starts at s", "trials", "epochs"] + [f"best by {t} s" for t in marks]
                   + [f"s to {a}" for a in targets])
        rows = []
        for name, results in runs.items():
            x = results[-1]
            by = [max((v for t, v in x["points"] if t <= m), default=math.nan) for m in marks]
            to = [time_to(x["points"], a) for a in targets]
            note = " (ended early: failed)" if x["failed"] else ""
            rows.append([f"{name}{note}", f"{x['first']:.1f}", str(len(x["points"])), str(x["epochs"])]
                        + [f"{v:.4f}" for v in by] + ["-" if t is None else f"{t:.0f}" for t in to])
        print()
        return pages.show(columns, rows)
    target = DATA[data]["targets"][0]
    tune_wall = statistics.median(x["wall"] for x in runs.get("Ray Tune, ASHA, reuse_actors", [{"wall": float("nan")}]))
    columns = ["contender", "wall s, median (range)", "vs Ray Tune", "first trial starts at s", "epochs trained",
               "best val acc", f"s to {target}"]
    rows = []
    for name, results in runs.items():
        walls = [x["wall"] for x in results]
        wall = statistics.median(walls)
        first = statistics.median(x["first"] for x in results)
        epochs = statistics.median(x["epochs"] for x in results)
        best = statistics.median(best_of(x) for x in results)
        reach = [time_to(x["points"], target) for x in results]
        reach_s = f"{statistics.median([t for t in reach if t is not None]):.1f}" if any(t is not None for t in reach) else "-"
        failed = sum(x["failed"] for x in results)
        note = f" (failed in {failed} of {len(results)} rounds)" if failed else ""
        rows.append([f"{name}{note}", f"{wall:.1f} ({min(walls):.1f}-{max(walls):.1f})", f"{wall / tune_wall:.2f}x",
                     f"{first:.1f}", f"{epochs:.0f}", f"{best:.4f}", reach_s])
    print()
    return pages.show(columns, rows)


def plot(runs: dict[str, list[dict]], path: Path, data: str, budget: float | None, what: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, results in runs.items():
        pts = sorted(results[-1]["points"])
        if not pts:
            continue
        best, xs, ys = 0.0, [], []
        for t, v in pts:
            best = max(best, v)
            xs.append(t)
            ys.append(best)
        xs.append(results[-1]["wall"])  # the line runs on to the contender's end
        ys.append(best)
        ax.step(xs, ys, where="post", label=name)
    ax.set(title=f"Best val accuracy so far: {what}, 2 at a time", ylabel="best val accuracy",
           xlabel="seconds since the command started" + (" (log scale)" if budget else ""))
    if budget:  # minutes-long trials: the first minutes decide most, and would be a sliver on a linear axis
        ax.set_xscale("log")
    ax.set_ylim(*DATA[data]["ylim"])
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
