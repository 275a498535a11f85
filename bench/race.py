"""The race: one sweep, the same work, against the peers a user would pick instead, side by side in one run.

    python bench/race.py [--rounds 3] [--trials 40] [--epochs 40] [--plot docs/race.png]

Every contender trains sweep.train's MLP on the bundled digits, over conf/search/digits.yaml's space, for up to
--epochs epochs a trial, --trials trials, two at a time on this machine, each from a fresh process (start-up
counts). Rounds interleave the contenders; the table shows medians.

- sweep, halving: this project's sweeper, pool launcher, successive halving (min_resource 1, reduction factor 4)
- sweep, median: the same with the median pruner (this app's preset)
- hydra-optuna-sweeper: upstream's sweeper with Hydra's joblib launcher (two at a time), no pruning
- Ray Tune: OptunaSearch with ASHA (grace period 1, reduction factor 4), reuse_actors=True (bench/race_tune.py)

Needs the bench extra: pip install -e '.[mlp,bench]'.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import header

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.97  # val accuracy whose time-to-reach the table reports


def ours(work: Path, trials: int, epochs: int, seed: int, pruner: list[str]) -> dict:
    args = ["--multirun", "data=digits", "search=digits", f"trainer.epochs={epochs}", f"hydra.sweeper.n_trials={trials}",
            "hydra.sweeper.n_jobs=2", "hydra/sweeper/sampler=tpe", f"hydra.sweeper.sampler.seed={seed}",
            f"data.cache_dir={work / 'cache'}", "hydra.sweeper.study_name=race", *pruner]
    return _run_sweep([sys.executable, "-m", "sweep.train", *args], work, "race")


def upstream(work: Path, trials: int, epochs: int, seed: int) -> dict:
    conf = work / "conf"  # sweep.train's configs without the sweeper settings upstream does not have
    subprocess.run(["cp", "-r", str(ROOT / "conf"), str(conf)], check=True)
    text = (conf / "config.yaml").read_text().splitlines()
    keep = [line for line in text if not any(k in line for k in ("metric_names", "check:", "override hydra/sweeper",
                                                                  "override hydra/launcher", "override hydra/help"))]
    (conf / "config.yaml").write_text("\n".join(keep) + "\n")
    (work / "multirun" / "studies").mkdir(parents=True)  # upstream does not make the SQLite file's folder
    args = ["--multirun", f"--config-path={conf}", "hydra/sweeper=optuna", "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "data=digits", "search=digits", f"trainer.epochs={epochs}",
            f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.n_jobs=2", "hydra/sweeper/sampler=tpe",
            f"hydra.sweeper.sampler.seed={seed}", f"data.cache_dir={work / 'cache'}", "hydra.sweeper.study_name=race",
            "trainer.threads=1"]
    return _run_sweep([sys.executable, "-m", "sweep.train", *args], work, "race")


def tune(work: Path, trials: int, epochs: int, seed: int) -> dict:
    start = time.time()
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "race_tune.py"), str(work), f"--trials={trials}",
                             f"--epochs={epochs}", f"--seed={seed}"], capture_output=True, text=True, cwd=work)
    wall = time.time() - start
    if result.returncode != 0:
        raise SystemExit(f"Ray Tune failed:\n{result.stderr[-3000:]}")
    data = json.loads((work / "tune.json").read_text())
    offset = wall - data["wall"]  # the interpreter's start, before race_tune.py took its clock
    points = [(t["ended"] + offset, t["best"]) for t in data["trials"]]
    return {"wall": wall, "first": min(t["started"] for t in data["trials"]) + offset,
            "epochs": sum(t["epochs"] for t in data["trials"]), "points": points}


def _run_sweep(argv: list[str], work: Path, study_name: str) -> dict:
    import optuna

    start = time.time()
    result = subprocess.run(argv, cwd=work, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[3:6]} failed:\n{result.stderr[-3000:]}")
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{work}/multirun/studies/{study_name}.db")
    trials = [t for t in study.trials if t.datetime_complete]
    points = []
    for t in trials:
        best = max(t.intermediate_values.values()) if t.intermediate_values else t.value
        if best is not None:
            points.append((t.datetime_complete.timestamp() - start, best))
    epochs = sum(json.loads(p.read_text())["epochs_run"] for p in work.glob("multirun/*/*/*/metrics.json"))
    return {"wall": wall, "first": min(t.datetime_start.timestamp() for t in study.trials) - start, "epochs": epochs,
            "points": points}


def time_to(points: list[tuple[float, float]], target: float) -> float | None:
    reached = [t for t, v in sorted(points) if v >= target]
    return reached[0] if reached else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--only", nargs="*", help="contenders to run (default: all)")
    parser.add_argument("--plot", type=Path, help="write the best-so-far curves of the last round here")
    args = parser.parse_args()
    header(f"The race: digits, {args.trials} trials of up to {args.epochs} epochs, 2 at a time, {args.rounds} rounds")
    contenders = {
        "sweep, halving (pool)": lambda w, s: ours(w, args.trials, args.epochs, s, [
            "hydra/sweeper/pruner=halving", "hydra.sweeper.pruner.min_resource=1", "hydra.sweeper.pruner.reduction_factor=4"]),
        "sweep, median (pool)": lambda w, s: ours(w, args.trials, args.epochs, s, []),
        "hydra-optuna-sweeper (joblib)": lambda w, s: upstream(w, args.trials, args.epochs, s),
        "Ray Tune, ASHA, reuse_actors": lambda w, s: tune(w, args.trials, args.epochs, s),
    }
    if args.only:
        contenders = {k: v for k, v in contenders.items() if any(o in k for o in args.only)}
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name, run in contenders.items():
            with tempfile.TemporaryDirectory() as tmp:
                result = run(Path(tmp), r)
            runs[name].append(result)
            print(f"round {r + 1}: {name}: {result['wall']:.1f} s, first trial at {result['first']:.1f} s, "
                  f"{result['epochs']} epochs, best {max(v for _, v in result['points']):.4f}", flush=True)
    print()
    tune_wall = statistics.median(x["wall"] for x in runs.get("Ray Tune, ASHA, reuse_actors", [{"wall": float("nan")}]))
    up_first = statistics.median(x["first"] for x in runs.get("hydra-optuna-sweeper (joblib)", [{"first": float("nan")}]))
    print(f"| contender | wall s (median) | vs Ray Tune | first trial starts at s | epochs trained | "
          f"best val acc | s to {TARGET} |")
    print("|---|---|---|---|---|---|---|")
    for name, results in runs.items():
        wall = statistics.median(x["wall"] for x in results)
        first = statistics.median(x["first"] for x in results)
        epochs = statistics.median(x["epochs"] for x in results)
        best = statistics.median(max(v for _, v in x["points"]) for x in results)
        reach = [time_to(x["points"], TARGET) for x in results]
        reach_s = f"{statistics.median([t for t in reach if t is not None]):.1f}" if any(t is not None for t in reach) else "-"
        print(f"| {name} | {wall:.1f} | {wall / tune_wall:.2f}x | {first:.1f} | {epochs:.0f} | {best:.4f} | {reach_s} |")
    print(f"\nfirst trial vs upstream: ours starts {statistics.median(x['first'] for x in runs[next(iter(runs))]) - up_first:+.1f} s"
          " later (target: no more than +2 s)" if "hydra-optuna-sweeper (joblib)" in runs else "")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, results in runs.items():
            pts = sorted(results[-1]["points"])
            best, xs, ys = 0.0, [0.0], [None]
            for t, v in pts:
                best = max(best, v)
                xs.append(t)
                ys.append(best)
            ax.step(xs[1:], ys[1:], where="post", label=name)
        ax.set(title=f"Best val accuracy so far: digits, {args.trials} trials x {args.epochs} epochs, 2 at a time",
               xlabel="seconds since the command started", ylabel="best val accuracy")
        ax.set_ylim(0.9, 1.0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        fig.savefig(args.plot, dpi=90, bbox_inches="tight")
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
