"""The race: one sweep, the same work, against the peers a user would pick instead, side by side in one run.

    python bench/race.py [--rounds 3] [--trials 40] [--epochs 40] [--plot docs/img/race.png]
    python bench/race.py --data cifar10 --budget 1800 --rounds 1 [--plot docs/img/race_cifar10.png]
    python bench/race.py --data cifar10 --replot docs/race_cifar10.json --plot docs/img/race_cifar10.png
    python bench/race.py --data cifar10 --space default --budget 900 --rounds 3 --plot docs/img/race_cifar10_default.png

Rounds kept in --plot's .json are not run again: run the same command with more --rounds (a round at a time, in
the background, over several sittings) and only the missing rounds run, round r seeding every contender with r.

Every contender trains sweep.train's MLP, two trials at a time on this machine, each from a fresh process
(start-up counts). Rounds interleave the contenders; the table shows medians.

- digits (default): the bundled digits, conf/search/digits.yaml's space, --trials trials of up to --epochs epochs;
- cifar10: the shared CIFAR-10 JPEG train split (45,000 train / 5,000 validation), up to --epochs (20) epochs a
  trial, for --budget seconds each: time to accuracy, trials as many as fit. --space tutorial (the default) is
  conf/search/tutorial.yaml: the tutorial's MLP, searching SGD's lr, momentum, weight decay and batch size;
  --space default is conf/search/default.yaml, the whole MLP space (depth, width, optimizer, normalization, ...).

- sweep, halving: this project's sweeper, pool launcher, successive halving (min_resource 1, reduction factor 4)
- sweep, median: the same with the median pruner (this app's preset; digits only)
- sweep, budget + median: the sweeper as it comes (its default sampler and pruner; cifar10 only)
- sweep, budget across + median and sweep, budget last + median: the same with `hydra.sweeper.sampler.rungs=across`
  or `last`; sweep, budget + asha: with `hydra/sweeper/pruner=asha` (rungs as Ray Tune's ASHA below, with
  promotion); sweep, budget + early median: the median pruner judging once 2 trials finished instead of 5
  (--space default, when --only names them)
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
from common import CIFAR_JPEG, commit, conditions, cpu_hogs, header, upstream_conf

from sweep import atomic

ROOT = Path(__file__).resolve().parents[1]
# Per data set: the overrides every contender trains with and its spaces (conf/search/); per space, the accuracies
# whose time-to-reach the table reports and the plot's y range.
DATA = {
    "digits": {"overrides": ["data=digits"], "spaces": {"digits": {"targets": [0.97], "ylim": (0.9, 1.0)}}},
    "cifar10": {"overrides": ["data=imagefolder", f"data.root={CIFAR_JPEG}", "data.val_size=5000"],
                "spaces": {"tutorial": {"targets": [0.50, 0.51, 0.515, 0.52], "ylim": (0.49, 0.525)},
                           "default": {"targets": [0.50, 0.52, 0.54, 0.56], "ylim": (0.45, 0.60)}}},
}
UPSTREAM, RAY = "hydra-optuna-sweeper (joblib)", "Ray Tune, ASHA, reuse_actors"


class Race:
    def __init__(self, data: str, space: str, trials: int, epochs: int, budget: float | None,
                 cache: Path | None) -> None:
        self.data, self.space, self.trials, self.epochs, self.budget = data, space, trials, epochs, budget
        self.cache = cache
        self.targets, self.ylim = DATA[data]["spaces"][space]["targets"], DATA[data]["spaces"][space]["ylim"]

    @property
    def n_trials(self) -> int:
        return 10000 if self.budget else self.trials  # with a budget, trials as many as fit

    def common(self, work: Path) -> list[str]:
        return [*DATA[self.data]["overrides"], f"search={self.space}", f"trainer.epochs={self.epochs}",
                f"hydra.sweeper.n_trials={self.n_trials}",
                "hydra.sweeper.n_jobs=2", f"data.cache_dir={self.cache or work / 'cache'}",
                "hydra.sweeper.study_name=race"]


def ours(race: Race, work: Path, seed: int, pruner: list[str], sampler: str | None = "tpe") -> dict:
    """This sweeper with `sampler` and `pruner`; sampler None keeps its default (budget)."""
    args = ["--multirun", *race.common(work), *([f"hydra/sweeper/sampler={sampler}"] if sampler else []),
            f"hydra.sweeper.sampler.seed={seed}", *pruner]
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
    argv = [sys.executable, str(ROOT / "bench" / "race_tune.py"), str(work), f"--space={race.space}",
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
    return {"wall": wall, "first": first, "epochs": epochs, "points": points, "failed": failed,
            "trials": [_trial_record(t, start) for t in study.trials]}


def _trial_record(t, start: float) -> dict:
    """What a trial tried and how it went, kept with the round: where a search spent its time can be read later."""
    seconds = lambda d: None if d is None else round(d.timestamp() - start, 2)  # noqa: E731
    return {"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
            "curve": [t.intermediate_values[s] for s in sorted(t.intermediate_values)],
            "started": seconds(t.datetime_start), "ended": seconds(t.datetime_complete)}


def _failed(wall: float) -> dict:
    """A contender that ended before it found anything: a row that says so, not the end of the race."""
    return {"wall": wall, "first": math.nan, "epochs": 0, "points": [], "failed": True}


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    reached = [t for t, v in sorted(points) if v >= target]
    return reached[0] if reached else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(DATA), default="digits")
    parser.add_argument("--space", help="cifar10: tutorial (default) or default, a space in conf/search/")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, help="per trial (digits: 40, cifar10: 20)")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/sweep"), help="cifar10: the decoded data's cache")
    parser.add_argument("--budget", type=float, help="seconds per contender (cifar10: 1800); trials as many as fit")
    parser.add_argument("--only", nargs="*", help="contenders to run (default: all)")
    parser.add_argument("--plot", type=Path, help="write the best-so-far curves here, and every result, as it "
                                                  "comes, next to it as .json (rounds already there are kept)")
    parser.add_argument("--replot", type=Path, help="no race: the table and --plot from a race's saved .json")
    parser.add_argument("--load", type=int, default=0, help="also race beside this many CPU-bound processes")
    parser.add_argument("--save", action="store_true", help="keep the table for the docs (bench/pages.py)")
    parser.add_argument("--page", help="the docs' table --save writes (default: race-DATA, or race-DATA-SPACE), "
                                       "so a race on another machine gets a table of its own")
    args = parser.parse_args()
    cifar = args.data == "cifar10"
    args.space = args.space or ("tutorial" if cifar else "digits")
    if args.space not in DATA[args.data]["spaces"]:
        parser.error(f"--space for --data {args.data}: one of {', '.join(DATA[args.data]['spaces'])}")
    args.epochs = args.epochs or (20 if cifar else 40)
    args.budget = args.budget or (1800 if cifar else None)
    work = f"{args.budget:.0f} s each" if args.budget else f"{args.trials} trials"
    what = f"{args.data} ({args.space} space), {work}, up to {args.epochs} epochs a trial"
    race = Race(args.data, args.space, args.trials, args.epochs, args.budget, None)
    page = args.page or f"race-{args.data}" + ("" if args.space in ("digits", "tutorial") else f"-{args.space}")
    if args.replot:
        runs = json.loads(args.replot.read_text())
        where = runs.pop("measured", None)  # the race's command, machine and date
        runs.pop("setup", None)
        print(f"# The race as saved in {args.replot}, measured {where}")
        columns, rows = summarize(runs, race)
        if args.plot:
            plot(runs, args.plot, race, what)
        if args.save and where:
            print(f"saved {pages.save(page, ['condition'] + columns, [['idle'] + r for r in rows], spread(runs), where)}")
        return
    header(f"The race: {what}, 2 at a time, {args.rounds} round(s)")
    if cifar:  # decoded once, before the race (or found in the cache): no contender pays for it
        race.cache = args.cache.expanduser()
        subprocess.run([sys.executable, "-m", "sweep.train", *DATA["cifar10"]["overrides"], "trainer.epochs=1",
                        f"data.cache_dir={race.cache}", f"hydra.run.dir={tempfile.mkdtemp(prefix='race-warm-up-')}"],
                       check=True, capture_output=True)
    contenders = {
        "sweep, halving (pool)": lambda w, s: ours(race, w, s, [
            "hydra/sweeper/pruner=halving", "hydra.sweeper.pruner.min_resource=1", "hydra.sweeper.pruner.reduction_factor=4"]),
        "sweep, median (pool)": lambda w, s: ours(race, w, s, []),
        "sweep, budget + median (pool)": lambda w, s: ours(race, w, s, [], sampler=None),
        "sweep, budget across + median (pool)": lambda w, s: ours(race, w, s, ["hydra.sweeper.sampler.rungs=across"],
                                                                   sampler=None),
        "sweep, budget last + median (pool)": lambda w, s: ours(race, w, s, ["hydra.sweeper.sampler.rungs=last"],
                                                                 sampler=None),
        "sweep, budget + asha (pool)": lambda w, s: ours(race, w, s, ["hydra/sweeper/pruner=asha"], sampler=None),
        "sweep, budget + early median (pool)": lambda w, s: ours(
            race, w, s, ["hydra.sweeper.pruner.n_startup_trials=2"], sampler=None),
        UPSTREAM: lambda w, s: upstream(race, w, s),
        RAY: lambda w, s: tune(race, w, s),
    }
    if cifar:  # the sweeper as it comes; halving, for the tutorial's space, as that race was first run
        del contenders["sweep, median (pool)"]
        del contenders["sweep, halving (pool)" if args.space == "default" else "sweep, budget + median (pool)"]
    else:
        del contenders["sweep, budget + median (pool)"]
    if not (cifar and args.space == "default" and args.only):  # variants of the default sampler: raced when named
        for variant in ("budget across + median", "budget last + median", "budget + asha", "budget + early median"):
            del contenders[f"sweep, {variant} (pool)"]
    if args.only:
        contenders = {k: v for k, v in contenders.items() if any(o in k for o in args.only)}
    setup = {"data": args.data, "space": args.space, "budget": args.budget, "epochs": args.epochs,
             "trials": race.n_trials}
    kept = args.plot.with_suffix(".json") if args.plot else None
    columns, rows = [], []
    for condition, load in conditions(args.load):
        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        others: dict[str, list[dict]] = {}  # contenders this run leaves out (--only): kept in the .json as they were
        if kept and not load and kept.exists():  # rounds measured before: kept, not run again
            old = json.loads(kept.read_text())
            if old.get("setup") == setup:
                others = {k: v for k, v in old.items() if k not in contenders and k not in ("setup", "measured")}
                runs = {name: old.get(name, [])[:args.rounds] for name in contenders}
                print(f"kept from {kept}: " + ", ".join(f"{n}: {len(r)} round(s)" for n, r in runs.items()), flush=True)
        with cpu_hogs(load):
            for r in range(args.rounds):
                for name, run in contenders.items():
                    if len(runs[name]) > r:
                        continue
                    with tempfile.TemporaryDirectory() as tmp:
                        result = run(Path(tmp), r)
                    result.update(seed=r, measured=pages.measured_here(), load=os.getloadavg()[0], commit=commit())
                    runs[name].append(result)
                    print(f"{condition}, round {r + 1}: {name}: {result['wall']:.1f} s, first trial at "
                          f"{result['first']:.1f} s, {result['epochs']} epochs, best {best_by(result['points'], race.budget):.4f}"
                          f"{' (ended early: failed)' * result['failed']}", flush=True)
                    if kept and not load:  # every result so far, so a race cut short keeps what it measured
                        atomic.write_text(kept, json.dumps({**others, **runs, "setup": setup,
                                                            "measured": pages.measured_here()}, indent=1))
        print(f"\n## {condition} (load average {os.getloadavg()[0]:.1f} at the end)")
        found = summarize(runs, race)
        columns = ["condition"] + found[0]
        rows += [[condition] + row for row in found[1]]
        if args.plot and not load:
            plot(runs, args.plot, race, what)
    if args.save:
        print(f"saved {pages.save(page, columns, rows, spread(runs) if args.budget else spread_rounds(args.rounds))}")


def spread(runs: dict[str, list[dict]]) -> str:
    """A budgeted race's spread: how many rounds, and where each was measured (sittings may differ)."""
    results = [x for r in runs.values() for x in r]
    rounds = max((len(r) for r in runs.values()), default=0)
    where = sorted({f"{x['measured']['date']} on {x['measured']['machine']}" for x in results if "measured" in x})
    return (f"medians (range) of {rounds} round(s), round r seeding every contender with r"
            + (f"; rounds measured {'; '.join(where)}" if where else ""))


def spread_rounds(rounds: int) -> str:
    return f"medians (range) of {rounds} interleaved rounds, each contender from a fresh process"


def best_by(points: list[tuple[float, float]], t: float | None) -> float:
    """The best value among the points that ended by time t (all of them when t is None)."""
    return max((v for s, v in points if t is None or s <= t), default=math.nan)


def _median_best(values: list[float]) -> str:
    """The median over rounds of a best so far, a round that had nothing yet counting as the lowest ("-" when the
    median falls there)."""
    median = statistics.median(-math.inf if math.isnan(v) else v for v in values)
    return f"{median:.4f}" if median > -math.inf else "-"


def _median_time(times: list[float | None]) -> str:
    """The median over rounds of a time to reach something, a round that never did counting as the longest."""
    med = statistics.median(math.inf if t is None else t for t in times)
    return "never" if math.isinf(med) else f"{med:.0f}"


def summarize(runs: dict[str, list[dict]], race: Race) -> tuple[list[str], list[list[str]]]:
    """The race's table, printed; returned as columns and rows for bench/pages.py. Only rounds every contender
    finished count: a race cut short mid-round leaves the same seeds for all."""
    runs = {k: v for k, v in runs.items() if v}
    rounds = min((len(v) for v in runs.values()), default=0)
    runs = {k: v[:rounds] for k, v in runs.items()}
    if race.budget:  # time to accuracy: what each had found by when, and when it matched each peer's final best
        budget = race.budget
        marks = [t for t in (300, 600, 900, 1200, 1800, 3600) if t < budget]
        peers = [p for p in (UPSTREAM, RAY) if p in runs]
        columns = (["contender", "rounds", "first trial starts at s", "trials", "epochs", "final best, median (range)"]
                   + [f"best by {t} s" for t in marks] + [f"s to {a}" for a in race.targets]
                   + [f"s to {'upstream' if p == UPSTREAM else 'Ray'}'s final best" for p in peers])
        rows = []
        for name, results in runs.items():
            finals = [best_by(x["points"], budget) for x in results]
            med = statistics.median
            to_peer = []
            for p in peers:  # round by round: the same seed for both
                to_peer.append(_median_time([time_to([q for q in x["points"] if q[0] <= budget], best_by(y["points"], budget))
                                             for x, y in zip(results, runs[p])]))
            failed = sum(x["failed"] for x in results)
            note = f" (failed in {failed} of {len(results)} rounds)" if failed else ""
            rows.append([f"{name}{note}", str(len(results)), f"{med([x['first'] for x in results]):.1f}",
                         f"{med([len(x['points']) for x in results]):.0f}", f"{med([x['epochs'] for x in results]):.0f}",
                         f"{med(finals):.4f} ({min(finals):.4f}..{max(finals):.4f})"]
                        + [_median_best([best_by(x["points"], m) for x in results]) for m in marks]
                        + [_median_time([time_to(x["points"], a) for x in results]) for a in race.targets] + to_peer)
        print()
        return pages.show(columns, rows)
    target = race.targets[0]
    tune_wall = statistics.median(x["wall"] for x in runs.get(RAY, [{"wall": float("nan")}]))
    columns = ["contender", "wall s, median (range)", "vs Ray Tune", "first trial starts at s", "epochs trained",
               "best val acc", f"s to {target}"]
    rows = []
    for name, results in runs.items():
        walls = [x["wall"] for x in results]
        wall = statistics.median(walls)
        first = statistics.median(x["first"] for x in results)
        epochs = statistics.median(x["epochs"] for x in results)
        best = statistics.median(best_by(x["points"], None) for x in results)
        reach = [time_to(x["points"], target) for x in results]
        reach_s = f"{statistics.median([t for t in reach if t is not None]):.1f}" if any(t is not None for t in reach) else "-"
        failed = sum(x["failed"] for x in results)
        note = f" (failed in {failed} of {len(results)} rounds)" if failed else ""
        rows.append([f"{name}{note}", f"{wall:.1f} ({min(walls):.1f}-{max(walls):.1f})", f"{wall / tune_wall:.2f}x",
                     f"{first:.1f}", f"{epochs:.0f}", f"{best:.4f}", reach_s])
    print()
    return pages.show(columns, rows)


def plot(runs: dict[str, list[dict]], path: Path, race: Race, what: str) -> None:
    """Best-so-far against time: with one round, each contender's steps; with several, the median over rounds
    with the range of the rounds as a band."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    end = race.budget or max(x["wall"] for results in runs.values() for x in results)
    grid = np.geomspace(1, end, 400) if race.budget else np.linspace(0, end, 400)
    rounds = 0
    for name, results in runs.items():
        curves = [[best_by(x["points"], t) for t in grid] for x in results if x["points"]]
        if not curves:
            continue
        rounds = max(rounds, len(curves))
        # Nothing found yet counts as the lowest, so the median over rounds never falls as time goes on.
        values = np.nan_to_num(np.array(curves, dtype=float), nan=-np.inf)
        median, lo, hi = (np.where(np.isinf(v), np.nan, v) for v in
                          (np.median(values, axis=0), values.min(axis=0), values.max(axis=0)))
        line, = ax.step(grid, median, where="post", label=name)
        if len(curves) > 1:
            ax.fill_between(grid, lo, hi, step="post", alpha=0.15, color=line.get_color())
    kind = f"median of {rounds} rounds, band: their range" if rounds > 1 else "one round"
    ax.set(title=f"Best val accuracy so far ({kind}): {what}, 2 at a time", ylabel="best val accuracy",
           xlabel="seconds since the command started" + (" (log scale)" if race.budget else ""))
    if race.budget:  # minutes-long trials: the first minutes decide most, and would be a sliver on a linear axis
        ax.set_xscale("log")
    ax.set_ylim(*race.ylim)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    ax.title.set_fontsize(9)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
