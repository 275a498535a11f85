"""Search quality on synthetic learning curves, in virtual time: who finds a better model sooner.

Each trial's learning curve is a published shape with crossing curves (fast starters end worse) and noise, and
each epoch costs virtual seconds that grow with the model's width; nothing sleeps. Every contender is the real
policy object fed on the same virtual clock, `--workers` trials at a time:

- upstream: hydra-optuna-sweeper's loop (ask n_jobs trials, run them all to the end, tell, repeat), TPE, no pruning;
- ray: Ray Tune's own ASHAScheduler (grace 1, reduction 4) and OptunaSearch (TPE), a stopped trial told its last value;
- ours: asynchronous refill (a free worker asks at once) with each sampler/pruner pair, including
  `budget` (sweep.sweeper.sampler.BudgetSampler) and `last` (a pruned trial told its last value, Ray's way).

What counts is the true (noise-free) accuracy of the model a user would keep: the epoch with the best reported
value so far. Printed per shape and worker count, over seeds: the median final best with its range, and the
median time to reach each peer's final best as a fraction of the budget (the goal is at most 0.5).

    python bench/curves.py --seeds 10 --workers 2 8
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

EPOCHS = 50
SPACE_NAMES = ("lr", "width", "weight_decay", "dropout")


def distributions(shape: str):
    """The space searched: four numbers; a shape whose name ends in -mixed adds two choices, one with a region where
    training diverges."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {"lr": FloatDistribution(1e-4, 1.0, log=True), "width": IntDistribution(32, 1024, log=True),
             "weight_decay": FloatDistribution(1e-6, 1e-2, log=True), "dropout": FloatDistribution(0.0, 0.6)}
    if shape.endswith("-mixed"):
        space |= {"optimizer": CategoricalDistribution(["sgd", "adamw"]),
                  "norm": CategoricalDistribution(["none", "batch", "layer"])}
    return space


def diverges(p: dict) -> bool:
    """-mixed: AdamW above lr 0.01, or SGD above 0.3, never learns (the CIFAR-10 MLP's runs at 10%)."""
    return p.get("optimizer") == "adamw" and p["lr"] > 1e-2 or p.get("optimizer") == "sgd" and p["lr"] > 0.3


# ---------------------------------------------------------------- the curves

def final_quality(p: dict) -> float:
    """Where a curve ends: best at a middling learning rate, better when wider, with some weight decay, a
    little dropout for wide models (an interaction TPE has to find)."""
    lr = math.log10(p["lr"])
    width = math.log2(p["width"]) - 5  # 0..5
    wd = math.log10(p["weight_decay"])
    best_lr = -3.3 if p.get("optimizer") == "adamw" else -2.0  # -mixed: AdamW's best rate is 20x lower
    q = 0.30 + 0.25 * math.exp(-((lr - best_lr) / 0.7) ** 2)
    q += 0.02 * width + {"batch": 0.02, "layer": 0.01}.get(p.get("norm"), 0.0) - 0.01 * (p.get("optimizer") == "adamw")
    q -= 0.04 * ((wd + 3.5) / 2.5) ** 2
    q -= 0.15 * (p["dropout"] - 0.08 * width) ** 2
    return q


def speed(p: dict) -> float:
    """Epochs to get halfway: a larger learning rate starts faster (and, in final_quality, ends worse above 0.01);
    -mixed: AdamW starts as fast as SGD at a 20x larger rate, and normalization speeds both."""
    lr = p["lr"] * (20 if p.get("optimizer") == "adamw" else 1)
    s = 1.0 + 12.0 * (1e-1 / lr) ** 0.45 / (1 + (1e-1 / lr) ** 0.45) * 2
    return s * {"batch": 0.7, "layer": 0.85}.get(p.get("norm"), 1.0)


def curve(shape: str, p: dict) -> np.ndarray:
    """True accuracy after each of EPOCHS epochs."""
    q, s, t = final_quality(p), speed(p), np.arange(1, EPOCHS + 1, dtype=float)
    start = 0.10
    if diverges(p):
        return np.full(EPOCHS, start)
    shape = shape.removesuffix("-mixed")
    if shape == "power":  # a power law, as in Domhan et al.'s and LCBench's curves
        return q - (q - start) * (1 + t / s) ** -1.2
    if shape == "late":  # sigmoid: slow learners bloom late (a low learning rate's warm-up)
        return start + (q - start) / (1 + np.exp(-(t - 1.5 * s) / (0.4 * s + 1)))
    if shape == "overfit":  # rises fast, then loses what it gained when weight decay and dropout are low
        rise = q - (q - start) * np.exp(-t / s)
        guard = math.log10(p["weight_decay"]) + 6 + 6 * p["dropout"]  # 0 (none) .. ~7.6 (strong)
        return rise - 0.004 * max(0.0, 6 - guard) * np.maximum(0, t - 2 * s) ** 0.8 / 3
    raise ValueError(shape)


def epoch_cost(p: dict) -> float:
    return 1.0 + p["width"] / 256


# ---------------------------------------------------------------- a run: the clock, the workers, the best model


@dataclass
class Run:
    shape: str
    seed: int
    rng: np.random.Generator = field(init=False)
    best_seen: float = -math.inf
    best_true: float = 0.0
    trace: list = field(default_factory=list)  # (time, true accuracy of the model kept)
    trials: int = 0
    epochs: int = 0

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)

    def observe(self, now: float, truth: float) -> float:
        value = truth + self.rng.normal(0, 0.01)
        self.epochs += 1
        if value > self.best_seen:
            self.best_seen, self.best_true = value, truth
            self.trace.append((now, truth))
        return value


RESUME_COST = 1.0  # virtual seconds to resume a paused trial: a fresh process loading its checkpoint


def run_async(policy, shape: str, seed: int, workers: int, budget: float) -> Run:
    """Trials run epoch by epoch on `workers` workers; a worker that frees asks the policy for its next work: a new
    trial, or (asha) a paused one to resume at its next epoch."""
    run = Run(shape, seed)
    clock, events, order = 0.0, [], 0

    def next_work(now: float) -> None:
        nonlocal order
        handle, params, first = policy.start()
        run.trials += first == 1
        cost = epoch_cost(params) + (RESUME_COST if first > 1 else 0.0)
        heapq.heappush(events, (now + cost, order, handle, params, curve(shape, params), first))
        order += 1

    for _ in range(workers):
        next_work(0.0)
    while events:
        clock, _, handle, params, truth, epoch = heapq.heappop(events)
        if clock > budget:
            break
        value = run.observe(clock, float(truth[epoch - 1]))
        if policy.report(handle, epoch, value) and epoch < EPOCHS:
            heapq.heappush(events, (clock + epoch_cost(params), order, handle, params, truth, epoch + 1))
            order += 1
        else:
            next_work(clock)
    return run


def run_batches(shape: str, seed: int, workers: int, budget: float) -> Run:
    """hydra-optuna-sweeper: ask a batch of n_jobs trials, run each to its end, tell them all, ask the next batch."""
    import optuna

    run = Run(shape, seed)
    # hydra-optuna-sweeper's TPE config passes constant_liar=False (Optuna 5's default would be True)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=False))
    clock = 0.0
    while clock < budget:
        batch = [study.ask(distributions(shape)) for _ in range(workers)]
        ends = []
        for trial in batch:
            truth, cost, t, best = curve(shape, trial.params), epoch_cost(trial.params), clock, -math.inf
            for epoch in range(1, EPOCHS + 1):
                t += cost
                if t > budget:
                    break
                best = max(best, _observe_sorted(run, t, float(truth[epoch - 1])))
            ends.append((t, trial, best))
            run.trials += 1
        for _, trial, best in ends:
            if best > -math.inf:
                study.tell(trial, best)
        clock = max(t for t, _, _ in ends)
    run.trace.sort()
    return _rebuild(run)


def _observe_sorted(run: Run, t: float, truth: float) -> float:
    """In the batch loop, trials are simulated one after another; observations are re-ordered by time at the end."""
    value = truth + run.rng.normal(0, 0.01)
    run.epochs += 1
    run.trace.append((t, truth, value))
    return value


def _rebuild(run: Run) -> Run:
    events, run.trace, run.best_seen = sorted(run.trace), [], -math.inf
    for t, truth, value in events:
        if value > run.best_seen:
            run.best_seen, run.best_true = value, truth
            run.trace.append((t, truth))
    return run


class OptunaPolicy:
    """Ours: one in-memory study, a trial asked the moment a worker frees, pruned through Optuna's pruner."""

    def __init__(self, shape: str, seed: int, sampler: str, pruner: str, tell_last: bool = False):
        import optuna

        from sweep.sweeper.asha import PromotingHalving
        from sweep.sweeper.sampler import BudgetSampler

        samplers = {
            # constant_liar spelled out: Optuna 5 turned it on by default, sweep's TPE config still turns it off
            "tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=False),
            "tpe-liar": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True),
            "budget": lambda: BudgetSampler(seed=seed),
            "budget-noliar": lambda: BudgetSampler(seed=seed, constant_liar=False),
            "budget-across": lambda: BudgetSampler(seed=seed, rungs="across"),
            "budget-last": lambda: BudgetSampler(seed=seed, rungs="last"),
            # Optuna 5's TPE is multivariate unless told otherwise (Optuna 4's is not); the plugin says so either way
            "budget-multivariate": lambda: BudgetSampler(seed=seed, multivariate=True),
            "budget-independent": lambda: BudgetSampler(seed=seed, multivariate=False),
            "budget-startup5": lambda: BudgetSampler(seed=seed, n_startup_trials=5),
            "budget-startup20": lambda: BudgetSampler(seed=seed, n_startup_trials=20),
        }
        pruners = {
            "none": optuna.pruners.NopPruner,
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5),
            "median-startup2": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
            "median-warm10": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=EPOCHS // 10),
            "median-warm25": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=EPOCHS // 4),
            # Optuna's percentile is the share kept: 25 keeps the top quarter (harsher than the median), 75 three quarters
            "percentile25": lambda: optuna.pruners.PercentilePruner(25.0, n_startup_trials=5),
            "percentile75": lambda: optuna.pruners.PercentilePruner(75.0, n_startup_trials=5),
            "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource="auto", reduction_factor=4),
            "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=EPOCHS,
                                                                reduction_factor=3),
            "asha": lambda: PromotingHalving(min_resource=1, reduction_factor=4),
            "asha-first2": lambda: PromotingHalving(min_resource=2, reduction_factor=4),  # rungs at 2, 8, 32
            "asha-first3": lambda: PromotingHalving(min_resource=3, reduction_factor=4),  # rungs at 3, 12, 48
        }
        self.study = optuna.create_study(direction="maximize", sampler=samplers[sampler](), pruner=pruners[pruner]())
        self.tell_last = tell_last
        self.space = distributions(shape)
        self.best: dict[int, float] = {}
        self.paused: dict[int, tuple] = {}  # asha: number -> (trial, step)

    def start(self):
        if self.paused:  # asha: the sweep's scheduler promotes before it asks (sweep/sweeper/scheduler.py)
            from sweep.attrs import PAUSED, PROMOTED

            number = self.study.pruner.promotable(self.study.get_trials(deepcopy=False),
                                                  {n: s for n, (_, s) in self.paused.items()}, self.study.direction)
            if number is not None:
                trial, step = self.paused.pop(number)
                self.study._storage.set_trial_system_attr(trial._trial_id, PROMOTED, step)
                self.study._storage.set_trial_system_attr(trial._trial_id, PAUSED, None)
                return trial, trial.params, step + 1
        trial = self.study.ask(self.space)
        self.best[trial.number] = -math.inf
        return trial, trial.params, 1

    def report(self, trial, epoch: int, value: float) -> bool:
        import optuna

        self.best[trial.number] = max(self.best[trial.number], value)
        if epoch == EPOCHS:
            self.study.tell(trial, self.best[trial.number])
            return False
        trial.report(value, epoch)
        if trial.should_prune():
            if type(self.study.pruner).__name__ == "PromotingHalving":  # as a task does when it pauses
                from sweep.attrs import PAUSED

                self.study._storage.set_trial_system_attr(trial._trial_id, PAUSED, epoch)
                self.paused[trial.number] = (trial, epoch)
                return False
            if self.tell_last:
                self.study.tell(trial, value)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return False
        return True


class RayPolicy:
    """Ray Tune's ASHAScheduler and OptunaSearch, driven as Tune's controller drives them."""

    def __init__(self, shape: str, seed: int):
        import optuna
        from ray.tune.schedulers import ASHAScheduler
        from ray.tune.search.optuna import OptunaSearch

        np.random.seed(seed)  # ASHA draws a bracket from NumPy's global generator
        self.scheduler = ASHAScheduler(time_attr="training_iteration", metric="acc", mode="max", max_t=EPOCHS,
                                       grace_period=1, reduction_factor=4)
        self.searcher = OptunaSearch(space=distributions(shape), metric="acc", mode="max",
                                     sampler=optuna.samplers.TPESampler(seed=seed))  # what seed=... would make
        self.count = 0

    def start(self):
        self.count += 1
        trial = SimpleNamespace(trial_id=f"t{self.count}")
        config = self.searcher.suggest(trial.trial_id)
        self.scheduler.on_trial_add(None, trial)
        return trial, config, 1

    def report(self, trial, epoch: int, value: float) -> bool:
        from ray.tune.schedulers import TrialScheduler

        result = {"acc": value, "training_iteration": epoch}
        self.searcher.on_trial_result(trial.trial_id, result)
        if epoch == EPOCHS:
            self.scheduler.on_trial_complete(None, trial, result)
            self.searcher.on_trial_complete(trial.trial_id, result)
            return False
        if self.scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            self.scheduler.on_trial_remove(None, trial)
            self.searcher.on_trial_complete(trial.trial_id, result)
            return False
        return True


CONTENDERS = {
    "upstream (TPE, no pruning, batches)": None,
    "ray (ASHA + OptunaSearch)": None,
    "ours: tpe + median (the earlier default)": ("tpe", "median", False),
    "ours: tpe-liar + median": ("tpe-liar", "median", False),
    "ours: tpe + halving": ("tpe", "halving", False),
    "ours: tpe-liar + halving, last value": ("tpe-liar", "halving", True),
    "ours: budget + median": ("budget", "median", False),
    "ours: budget without liar + median": ("budget-noliar", "median", False),
    "ours: budget + halving": ("budget", "halving", False),
    "ours: budget + hyperband": ("budget", "hyperband", False),
    "ours: tpe + asha (promotion)": ("tpe", "asha", False),
    "ours: budget + asha (promotion)": ("budget", "asha", False),
    "ours: budget across rungs + median": ("budget-across", "median", False),
    "ours: budget last value + median": ("budget-last", "median", False),
    "ours: budget multivariate + median": ("budget-multivariate", "median", False),
    "ours: budget independent + median": ("budget-independent", "median", False),
    "ours: budget, 5 startup trials + median": ("budget-startup5", "median", False),
    "ours: budget, 20 startup trials + median": ("budget-startup20", "median", False),
    "ours: budget across rungs + asha": ("budget-across", "asha", False),
    "ours: budget + asha, first rung 2": ("budget", "asha-first2", False),
    "ours: budget + asha, first rung 3": ("budget", "asha-first3", False),
    "ours: budget + median, 2 startup trials": ("budget", "median-startup2", False),
    "ours: budget + median, warm-up 10%": ("budget", "median-warm10", False),
    "ours: budget + median, warm-up 25%": ("budget", "median-warm25", False),
    "ours: budget + percentile 25": ("budget", "percentile25", False),
    "ours: budget + percentile 75": ("budget", "percentile75", False),
}


def simulate(job: tuple[str, str, int, int, float]) -> tuple[str, str, int, int, list, int, int, float]:
    name, shape, seed, workers, budget = job
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    if name.startswith("upstream"):
        run = run_batches(shape, seed, workers, budget)
    elif name.startswith("ray"):
        run = run_async(RayPolicy(shape, seed), shape, seed, workers, budget)
    else:
        sampler, pruner, last = CONTENDERS[name]
        run = run_async(OptunaPolicy(shape, seed, sampler, pruner, last), shape, seed, workers, budget)
    return name, shape, seed, workers, run.trace, run.trials, run.epochs, time.perf_counter() - started


def named(name: str, fragments: list[str]) -> bool:
    """--only and --plot-only: a contender's whole name picks it alone; any other text, every name containing it."""
    return any(f == name if f in CONTENDERS else f in name for f in fragments)


def best_at(trace: list, t: float) -> float:
    best = 0.0
    for when, truth in trace:
        if when > t:
            break
        best = truth
    return best


def reach(trace: list, target: float) -> float:
    for when, truth in trace:
        if truth >= target:
            return when
    return math.inf


def plot(results: dict, names: list[str], shapes: list[str], workers: list[int], budget: float, seeds: int,
         path: Path) -> None:
    """Median best-so-far against time, with the seeds' interquartile band, per shape and worker count."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(shapes), 3.8 * len(workers)), layout="constrained")
    axes = fig.subplots(len(workers), len(shapes), squeeze=False)
    for row, w in enumerate(workers):
        grid = np.linspace(0, budget / w, 200)
        for col, shape in enumerate(shapes):
            ax = axes[row][col]
            for name in names:
                curves_ = np.array([[best_at(results[name, shape, seed, w][0], t) for t in grid]
                                    for seed in range(seeds)])
                lo, mid, hi = np.percentile(curves_, [25, 50, 75], axis=0)
                line, = ax.plot(grid, mid, label=name, lw=2 if "ours" in name and "default" not in name else 1.2)
                ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.12)
            ax.set(title=f"{shape} curves, {w} workers", xlabel="virtual seconds", ylabel="true accuracy of the best",
                   ylim=(0.4, None))
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def keep(path: Path, results: dict, header_text: str, args) -> None:
    """Every run's trace in `path`, rewritten whole (atomically) as runs end."""
    import json

    from sweep import atomic

    runs = [{"name": k[0], "shape": k[1], "seed": k[2], "workers": k[3], "trace": v[0], "trials": v[1],
             "epochs": v[2]} for k, v in results.items()]
    atomic.write_text(path, json.dumps({
        "header": header_text, "seeds": max(k[2] for k in results) + 1, "workers": sorted({k[3] for k in results}),
        "shapes": sorted({k[1] for k in results}), "budget": args.budget,
        "names": [n for n in CONTENDERS if any(k[0] == n for k in results)], "runs": runs}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--shapes", nargs="+",
                        help="power, late, overfit; each with -mixed: the space gets an optimizer and a normalization "
                             "choice, and a region where training diverges (default: the three plain ones; "
                             "--replot: every shape kept)")
    parser.add_argument("--budget", type=float, default=6000.0,
                        help="virtual worker-seconds for each contender: 3000 s on 2 workers, 750 s on 8")
    parser.add_argument("--only", nargs="*", help="contenders whose name contains one of these (a whole name: only it)")
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, help="keep every run's best-so-far trace here (JSON)")
    parser.add_argument("--replot", type=Path, help="the table and plot from traces kept with --out; runs nothing")
    parser.add_argument("--plot", type=Path, help="draw median best-so-far against time into this PNG")
    parser.add_argument("--plot-only", nargs="*", help="contenders the plot shows (name fragments)")
    parser.add_argument("--save", action="store_true",
                        help="keep the table for the docs (bench/pages.py): curves, or curves-mixed for -mixed shapes")
    args = parser.parse_args()

    import json

    from common import header

    if args.replot:
        saved = json.loads(args.replot.read_text())
        print(saved["header"])
        for key in ("seeds", "workers", "budget"):
            setattr(args, key, saved[key])
        args.shapes = args.shapes or saved["shapes"]
        names = saved["names"]
        results = {(r["name"], r["shape"], r["seed"], r["workers"]): (r["trace"], r["trials"], r["epochs"], 0)
                   for r in saved["runs"]}
    else:
        import contextlib
        import io

        import optuna
        import ray

        args.shapes = args.shapes or ["power", "late", "overfit"]
        text = io.StringIO()
        with contextlib.redirect_stdout(text):
            header("search quality on synthetic learning curves, virtual time")
            print(f"optuna {optuna.__version__}, ray {ray.__version__}")
        print(text.getvalue())
        names = [n for n in CONTENDERS if not args.only or n.startswith(("upstream", "ray")) or named(n, args.only)]
        results: dict = {}
        if args.out and args.out.exists():  # virtual time: a kept run is what a rerun would give, on any machine
            saved = json.loads(args.out.read_text())
            if saved["budget"] == args.budget:
                results = {(r["name"], r["shape"], r["seed"], r["workers"]): (r["trace"], r["trials"], r["epochs"], 0)
                           for r in saved["runs"] if r["name"] in CONTENDERS}
        jobs = [(n, s, seed, w, args.budget / w) for w in args.workers for s in args.shapes
                for seed in range(args.seeds) for n in names if (n, s, seed, w) not in results]
        print(f"{len(jobs)} simulations to run ({len(results)} kept in {args.out}): {len(names)} contenders x "
              f"{len(args.shapes)} shapes x {args.seeds} seeds x workers {args.workers}; budget {args.budget:g} "
              f"virtual worker-seconds, {EPOCHS} epochs a trial\n", flush=True)
        done = 0
        with Pool(args.processes) as pool:
            for name, shape, seed, workers, trace, trials, epochs, took in pool.imap_unordered(simulate, jobs):
                results[name, shape, seed, workers] = (trace, trials, epochs, took)
                done += 1
                if done % max(1, len(jobs) // 20) == 0:
                    print(f"  {done}/{len(jobs)} done", file=sys.stderr, flush=True)
                if args.out:  # each run as it ends: a long run cut short keeps what it simulated
                    keep(args.out, results, text.getvalue(), args)
        if args.out:
            print(f"wrote {args.out}")

    if args.only:  # --replot too: the peers and the contenders named
        names = [n for n in names if n.startswith(("upstream", "ray")) or named(n, args.only)]
    grid = [(shape, seed, workers) for workers in args.workers for shape in args.shapes for seed in range(args.seeds)]
    missing = [n for n in names if any((n, *g) not in results for g in grid)]
    if missing:
        print(f"left out, not simulated on every shape, seed and worker count: {', '.join(missing)}\n")
        names = [n for n in names if n not in missing]
    rows = []
    for workers in args.workers:
        for shape in args.shapes:
            budget = args.budget / workers
            print(f"## {shape} curves, {workers} workers, budget {budget:g} s")
            print(f"{'contender':40} {'final best (min..max)':>26} {'to upstream':>12} {'to ray':>8} "
                  f"{'beats both':>10} {'trials':>7} {'epochs':>7}")
            for name in names:
                finals, to_up, to_ray, wins, trials, epochs = [], [], [], 0, [], []
                for seed in range(args.seeds):
                    trace, n, e, _ = results[name, shape, seed, workers]
                    finals.append(best_at(trace, budget))
                    up = best_at(results[names[0], shape, seed, workers][0], budget)
                    ray = best_at(results[names[1], shape, seed, workers][0], budget)
                    to_up.append(reach(trace, up) / budget)
                    to_ray.append(reach(trace, ray) / budget)
                    wins += finals[-1] > max(up, ray)
                    trials.append(n)
                    epochs.append(e)
                med = statistics.median(finals)
                cell = f"{med:.4f} ({min(finals):.3f}..{max(finals):.3f})"
                fu, fr = (statistics.median(x) for x in (to_up, to_ray))
                fu, fr = (f"{f:.2f}" if f <= 1 else "never" for f in (fu, fr))
                print(f"{name:40} {cell:>26} {fu:>12} {fr:>8} {f'{wins}/{args.seeds}':>10} "
                      f"{statistics.median(trials):>7g} {statistics.median(epochs):>7g}")
                rows.append([shape, str(workers), name, cell, fu, fr, f"{wins}/{args.seeds}"])
            print()
    if args.save:
        import pages

        table = "curves-mixed" if all(s.endswith("-mixed") for s in args.shapes) else "curves"
        print(pages.save(table, ["curves", "workers", "contender", "final best, median (range)",
                                    "time to upstream's final best", "time to Ray's final best",
                                    "seeds ending above both"], rows,
                         f"medians over {args.seeds} seeds; times are fractions of the budget"))
    if args.plot:
        shown = [n for n in names if not args.plot_only or named(n, args.plot_only)]
        plot(results, shown, args.shapes, args.workers, args.budget, args.seeds, args.plot)


if __name__ == "__main__":
    main()
