"""The sweep report: one table row per trial, plots that show what worked, and one self-contained HTML page.

    python -m sweep.report multirun/2026-11-27/10-00-00            # one sweep (also while it runs)
    python -m sweep.report --storage sqlite:///multirun/studies/cifar10.db --study cifar10
    python -m sweep.report multirun/tpe multirun/random             # several sweeps side by side
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import sys
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from optuna.distributions import CategoricalDistribution  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

log = logging.getLogger(__name__)

METRIC = "val_accuracy"  # sweep.train.METRIC; kept import-free of torch, and checked equal by a test
COLUMNS = ["trial", "state", "reason", METRIC, "best_epoch", "epochs_run", "train_seconds", "param_count", "run_dir"]
TOP = 5  # learning curves highlighted
PLOTS = {
    "best_so_far.png": "Best validation accuracy so far",
    "learning_curves.png": "Learning curves",
    "params.png": "Accuracy against each hyperparameter",
    "importance.png": "Hyperparameter importance",
    "cost.png": "Accuracy against cost",
}


class ReportError(Exception):
    pass


# ------------------------------------------------------------------ reading a study


def open_study(storage: str, study_name: str) -> optuna.Study:
    """Load a study without creating or migrating anything in its storage."""
    from sweep.sweeper import open_storage

    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        raise ReportError(f"storage {storage} does not exist")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage, read_only=True))
    except KeyError:
        raise ReportError(f"no study named {study_name!r} in {storage}") from None


def study_of_sweep_dir(sweep_dir: Path) -> optuna.Study:
    info = sweep_dir / "study.json"
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir} is not a directory")
    if not info.exists():
        raise ReportError(f"{sweep_dir} is not a sweep directory: it has no study.json (written by `python -m sweep.train --multirun`)")
    meta = json.loads(info.read_text())
    storage = meta["storage"]
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_absolute():
        # Relative to where the sweep ran: try the sweep's own ancestors, then the current directory.
        path = storage[len("sqlite:///"):]
        for base in [*sweep_dir.resolve().parents, Path.cwd()]:
            if (base / path).exists():
                storage = f"sqlite:///{base / path}"
                break
    return open_study(storage, meta["study_name"])


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, best first: state, failure reason, every swept parameter and the run's metrics."""
    trials = study.get_trials(deepcopy=False)
    names = sorted({name for t in trials for name in t.params})
    rows = []
    for t in trials:
        attrs = t.user_attrs
        metrics = _run_metrics(attrs.get("run_dir")) if t.state == TrialState.RUNNING else {}
        value = t.value if t.state == TrialState.COMPLETE else _best(t)
        rows.append({
            "trial": t.number, "state": t.state.name,
            "reason": attrs.get({TrialState.FAIL: "fail_reason", TrialState.PRUNED: "stop_reason"}.get(t.state, ""), ""),
            **{n: t.params.get(n) for n in names},
            METRIC: value,
            "best_epoch": attrs.get("best_epoch", metrics.get("best_epoch")),
            "epochs_run": attrs.get("epochs_run", len(t.intermediate_values)),
            "train_seconds": attrs.get("train_seconds", metrics.get("train_seconds")),
            "param_count": attrs.get("param_count", metrics.get("param_count")),
            "run_dir": attrs.get("run_dir", ""),
        })
    order = ["trial", "state", "reason", *names, *COLUMNS[3:]]
    df = pd.DataFrame(rows, columns=order)
    return df.sort_values(METRIC, ascending=False, na_position="last", kind="stable").reset_index(drop=True)


def _best(t: FrozenTrial) -> float | None:
    values = [v for v in t.intermediate_values.values() if v is not None and math.isfinite(v)]
    return max(values) if values else None


def _run_metrics(run_dir: str | None) -> dict:
    if not run_dir:
        return {}
    path = Path(run_dir) / "metrics.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        warnings.warn(f"skipping {path}: {type(e).__name__}")
        return {}


# ------------------------------------------------------------------ plots


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


def best_so_far(trials: list[FrozenTrial]) -> pd.DataFrame:
    """Running best validation accuracy, by trial number and by minutes since the first trial started."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete), key=lambda t: t.number)
    if not done:
        return pd.DataFrame(columns=["trial", "value", "minutes", "best"])
    start = min(t.datetime_start for t in trials if t.datetime_start)
    df = pd.DataFrame({"trial": [t.number for t in done], "value": [t.value for t in done],
                       "minutes": [(t.datetime_complete - start).total_seconds() / 60 for t in done]})
    df["best"] = df["value"].cummax()
    return df


def plot_best_so_far(curves: dict[str, pd.DataFrame], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, df in curves.items():
        axes[0].step(df["trial"], df["best"], where="post", label=label)
        wall = df.sort_values("minutes")
        axes[1].step(wall["minutes"], wall["value"].cummax(), where="post", label=label)
    axes[0].set(title="Best so far by trial", xlabel="trial number", ylabel="best validation accuracy")
    axes[1].set(title="Best so far by wall-clock time", xlabel="minutes since the sweep started", ylabel="best validation accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    _save(fig, path)


def plot_learning_curves(trials: list[FrozenTrial], path: Path) -> None:
    ranked = sorted((t for t in trials if t.intermediate_values), key=lambda t: _best(t) or 0, reverse=True)
    top = {t.number for t in ranked[:TOP] if t.state == TrialState.COMPLETE}
    fig, ax = plt.subplots(figsize=(8, 5))
    for t in reversed(ranked):  # best drawn last, on top
        epochs = sorted(t.intermediate_values)
        values = [t.intermediate_values[e] for e in epochs]
        if t.number in top:
            ax.plot(epochs, values, lw=2, label=f"trial {t.number}: {max(values):.4f}")
        elif t.state == TrialState.PRUNED:
            ax.plot(epochs, values, color="tab:red", alpha=0.25, lw=1)
        else:
            ax.plot(epochs, values, color="grey", alpha=0.5, lw=1)
    ax.plot([], [], color="tab:red", alpha=0.4, label="pruned")
    ax.plot([], [], color="grey", alpha=0.6, label="other")
    ax.set(title=f"Validation accuracy per epoch (top {TOP} highlighted)", xlabel="epoch", ylabel="validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    _save(fig, path)


def plot_params(trials: list[FrozenTrial], path: Path) -> None:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    names = sorted({n for t in done for n in t.params})
    cols = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(t.params[name], t.value) for t in done if name in t.params]
        dist = next(t.distributions[name] for t in done if name in t.distributions)
        if isinstance(dist, CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            xs = [labels.index(str(x)) for x, _ in pts]
            ax.set_xticks(range(len(labels)), labels)
        else:
            xs = [x for x, _ in pts]
            if getattr(dist, "log", False):
                ax.set_xscale("log")
        ax.scatter(xs, [v for _, v in pts], alpha=0.7)
        ax.set(title=name, xlabel=name + (" (log scale)" if getattr(dist, "log", False) else ""), ylabel="validation accuracy")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("Validation accuracy against each swept hyperparameter (completed trials)")
    _save(fig, path)


def plot_importance(study: optuna.Study, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        importance = optuna.importance.get_param_importances(study)  # fANOVA on completed trials
    except Exception as e:  # too few completed trials, or a single point in the space
        importance = {}
        ax.text(0.5, 0.5, f"not enough completed trials to rank importance\n({type(e).__name__})",
                ha="center", va="center", transform=ax.transAxes)
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set(title="Hyperparameter importance (Optuna's fANOVA)", xlabel="share of explained variance in validation accuracy")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def pareto_front(costs: list[float], values: list[float]) -> list[int]:
    """Indices of points no other point beats on both lower cost and higher value, by increasing cost."""
    front, best = [], -math.inf
    for i in sorted(range(len(costs)), key=lambda i: (costs[i], -values[i])):
        if values[i] > best:
            front.append(i)
            best = values[i]
    return front


def plot_cost(table: pd.DataFrame, path: Path) -> None:
    done = table[table["state"] == "COMPLETE"].dropna(subset=["param_count", "train_seconds", METRIC])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, col, label in [(axes[0], "param_count", "parameters (log scale)"), (axes[1], "train_seconds", "training seconds (log scale)")]:
        costs, values = done[col].astype(float).tolist(), done[METRIC].astype(float).tolist()
        ax.scatter(costs, values, alpha=0.6, label="trials")
        front = pareto_front(costs, values)
        ax.step([costs[i] for i in front], [values[i] for i in front], where="post", color="tab:red", label="Pareto front")
        ax.set_xscale("log")
        ax.set(title=f"Accuracy against {col.replace('_', ' ')}", xlabel=label, ylabel="validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    _save(fig, path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ------------------------------------------------------------------ writing


def write_report(study: optuna.Study, out_dir: Path) -> pd.DataFrame:
    """report.csv, report.md, the PNG plots and report.html in out_dir; returns the table."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise ReportError(f"study {study.study_name!r} has no trials yet")
    out_dir.mkdir(parents=True, exist_ok=True)
    table = trials_table(study)
    table.to_csv(out_dir / "report.csv", index=False)
    (out_dir / "report.md").write_text(markdown(table))
    finished = _finished(study)
    plot_best_so_far({study.study_name: best_so_far(trials)}, out_dir / "best_so_far.png")
    plot_learning_curves(finished, out_dir / "learning_curves.png")
    plot_params(finished, out_dir / "params.png")
    plot_importance(study, out_dir / "importance.png")
    plot_cost(table, out_dir / "cost.png")
    counts = table["state"].value_counts().to_dict()
    summary = f"{len(table)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    _write_html(out_dir / "report.html", f"Sweep report: {study.study_name}", summary, table, list(PLOTS))
    log.info("report written to %s", out_dir / "report.html")
    return table


def compare(sweep_dirs: list[Path], out_dir: Path) -> pd.DataFrame:
    """Several sweeps side by side: overlaid best-so-far curves and a summary table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, curves = [], {}
    for d in sweep_dirs:
        study = study_of_sweep_dir(d)
        trials = study.get_trials(deepcopy=False)
        label = d.name if d.name not in curves else str(d)
        curves[label] = best_so_far(trials)
        finished = [t for t in trials if t.datetime_start and t.datetime_complete]
        wall = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds() / 60 if finished else 0.0
        complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
        rows.append({"sweep": label, "best " + METRIC: max(complete) if complete else None, "trials": len(trials),
                     "pruned": sum(t.state == TrialState.PRUNED for t in trials),
                     "failed": sum(t.state == TrialState.FAIL for t in trials),
                     "total_epochs": sum(len(t.intermediate_values) for t in trials), "wall_minutes": round(wall, 2)})
    table = pd.DataFrame(rows)
    table.to_csv(out_dir / "comparison.csv", index=False)
    (out_dir / "comparison.md").write_text(markdown(table))
    plot_best_so_far(curves, out_dir / "best_so_far.png")
    _write_html(out_dir / "comparison.html", "Sweep comparison", ", ".join(curves), table, ["best_so_far.png"])
    return table


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|")


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _write_html(path: Path, title: str, summary: str, table: pd.DataFrame, images: list[str]) -> None:
    figures = "\n".join(
        f'<figure><img alt="{html.escape(PLOTS.get(name, name))}" src="data:image/png;base64,'
        f'{base64.b64encode((path.parent / name).read_bytes()).decode()}"><figcaption>{html.escape(PLOTS.get(name, name))}'
        f" ({name})</figcaption></figure>"
        for name in images)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
th {{ background: #f0f0f0; position: sticky; top: 0; }}
figure {{ display: inline-block; margin: 1em; }}
img {{ max-width: 100%; }}
.scroll {{ max-height: 30em; overflow: auto; }}
</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>
{figures}
<h2>All runs</h2><div class="scroll">{table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", table_id="runs")}</div>
</body></html>
"""
    path.write_text(page)


def print_top(table: pd.DataFrame, n: int = 10) -> None:
    shown = table.drop(columns=["run_dir"], errors="ignore").head(n)
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="*", type=Path, help="sweep directories (several: compare them)")
    parser.add_argument("--storage", help="Optuna storage URL, instead of a sweep directory")
    parser.add_argument("--study", help="study name, with --storage")
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep directory; report-<study> for --storage; comparison/ for several)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"
    try:
        if args.storage:
            if not args.study or args.sweep_dirs:
                raise ReportError("--storage needs --study NAME and no sweep directories")
            study = open_study(args.storage, args.study)
            table = write_report(study, args.out or Path(f"report-{args.study}"))
        elif len(args.sweep_dirs) == 1:
            table = write_report(study_of_sweep_dir(args.sweep_dirs[0]), args.out or args.sweep_dirs[0])
        elif args.sweep_dirs:
            table = compare(args.sweep_dirs, args.out or Path("comparison"))
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            return 0
        else:
            raise ReportError("give a sweep directory, several to compare, or --storage URL --study NAME")
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_top(table)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
