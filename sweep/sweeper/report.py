"""The sweep report: one table row per trial, plots that show what worked, and one self-contained HTML page.

    python -m sweep.report multirun/2026-11-27/10-00-00            # one sweep (also while it runs)
    python -m sweep.report --storage sqlite:///multirun/studies/cifar10.db --study cifar10
    python -m sweep.report multirun/tpe multirun/random             # several sweeps side by side

It reads only the study: its direction(s), metric names, trials, intermediate values and user attributes, so it
serves any app. Columns and plots that need something a study may lack (intermediate values, a second objective,
sweep.train's run attributes) appear when it is there.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pandas as pd
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweep import atomic
from sweep.sweeper import storage as st
from sweep.attrs import (FAIL_REASON, GPUS, NODE, REPEAT_ATTRS, REPEAT_OF, RUN_DIR, RUN_SECONDS, SEED,
                         STARTUP_SECONDS, STOP_REASON, SWEEP_ATTRS)
from sweep.errors import UserError, first_line, shorten
from sweep.sweeper.asha import paused_step
from sweep.sweeper.repeats import ranking

log = logging.getLogger(__name__)

TOP = 5  # learning curves highlighted
FENCE = 3.0  # learning curves show values within this many interquartile ranges of the middle half (Tukey's far fences)
TITLES = {
    "best_so_far.png": "Best so far",
    "pareto.png": "Pareto front",
    "learning_curves.png": "Learning curves",
    "params.png": "Objective against each hyperparameter",
    "importance.png": "Hyperparameter importance",
    "cost.png": "Objective against cost",
}


# ------------------------------------------------------------------ reading a study


def open_study(storage: str, study_name: str, setting: str = "--storage") -> optuna.Study:
    """Load a study without creating or migrating anything in its storage."""
    return st.load_study(st.parse(storage, setting), study_name, setting)


def study_of_sweep_dir(sweep_dir: Path, storage: str | None = None) -> optuna.Study:
    """The study a sweep folder names in its study.json. A study in a file is opened from there; one in a database
    only from the `storage` the user gives (--storage): the folder never decides where to connect."""
    info = sweep_dir / "study.json"
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir} is not a directory")
    if not info.is_file():
        raise UserError(f"{sweep_dir} is not a sweep directory: it has no study.json (written by a --multirun sweep)")
    try:
        meta = json.loads(info.read_text())
        saved, name = meta["storage"], meta["study_name"]
        if not (saved is None or isinstance(saved, str)) or not isinstance(name, str):
            raise ValueError("storage must be a string or null, study_name a string")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{info} is damaged ({first_line(e)}); report the study with --storage URL --study NAME") from None
    if storage is not None:
        return open_study(storage, name)
    if saved is None:
        raise UserError(f"{sweep_dir}: the study was kept in memory and ended with its sweep; its report was "
                        "written then (report.html there). Set hydra.sweeper.storage to keep studies")
    if saved.startswith("sqlite:///") and not Path(saved[len("sqlite:///"):]).is_absolute():
        # Written by an older sweep, relative to where it ran: try the sweep's ancestors, then here.
        path = saved[len("sqlite:///"):]
        for base in [*sweep_dir.resolve().parents, Path.cwd()]:
            if (base / path).exists():
                saved = f"sqlite:///{base / path}"
                break
    setting = f"{info} (storage)"
    return st.load_study(st.from_file(saved, setting, base=sweep_dir), name, setting)


def objectives(study: optuna.Study) -> list[tuple[str, bool]]:
    """(name, maximize) per objective: the study's metric names, or value / value_0, value_1, ..."""
    directions = study.directions
    names = study.metric_names or (["value"] if len(directions) == 1 else [f"value_{i}" for i in range(len(directions))])
    return [(n, d == optuna.study.StudyDirection.MAXIMIZE) for n, d in zip(names, directions)]


def _best_step_value(t: FrozenTrial, maximize: bool) -> float | None:
    values = [v for v in t.intermediate_values.values() if v is not None and math.isfinite(v)]
    return (max(values) if maximize else min(values)) if values else None


def _seconds(t: FrozenTrial) -> float | None:
    """The trial's own wall time: as its worker measured it, else from the study's clock less the start-up."""
    if isinstance(t.user_attrs.get(RUN_SECONDS), (int, float)):
        return float(t.user_attrs[RUN_SECONDS])
    if t.datetime_start and t.datetime_complete:
        startup = t.user_attrs.get(STARTUP_SECONDS)
        return (t.datetime_complete - t.datetime_start).total_seconds() - (startup if isinstance(startup, (int, float)) else 0)
    return None


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, best first (Pareto-optimal first for several objectives): state, why it stopped, every
    swept parameter, the objective(s), steps reported, its own seconds and its start-up, where it ran, and every
    user attribute the task set (trial.set_user_attr)."""
    trials = study.get_trials(deepcopy=False)
    objs = objectives(study)
    names = sorted({name for t in trials for name in t.params})
    front = {t.number for t in study.best_trials} if len(objs) > 1 and any(
        t.state == TrialState.COMPLETE for t in trials) else set()
    own = sorted({k for t in trials for k in t.user_attrs if k not in SWEEP_ATTRS + REPEAT_ATTRS} - set(names))
    repeated = any(REPEAT_OF in t.user_attrs for t in trials)
    placed = any(t.user_attrs.get(NODE) for t in trials)
    has_steps = any(t.intermediate_values for t in trials)
    rows = []
    for t in trials:
        attrs = t.user_attrs
        paused = paused_step(t) is not None  # asha: RUNNING to Optuna, waiting for its rung to promote it
        row = {"trial": t.number, "state": "PAUSED" if paused else t.state.name,
               "reason": attrs.get(STOP_REASON, "") if paused else
               attrs.get({TrialState.FAIL: FAIL_REASON, TrialState.PRUNED: STOP_REASON}.get(t.state, ""), "")}
        if len(objs) > 1:
            row["pareto"] = t.number in front
        row.update({n: t.params.get(n) for n in names})
        for i, (metric, maximize) in enumerate(objs):
            if t.state == TrialState.COMPLETE:
                row[metric] = t.values[i]
            else:  # pruned or running: the best value it reported so far
                row[metric] = _best_step_value(t, maximize) if len(objs) == 1 else None
        if has_steps:
            row["steps"] = len(t.intermediate_values)
        if repeated:
            row["repeat_of"], row["seed"] = attrs.get(REPEAT_OF), attrs.get(SEED)
        row["seconds"] = _seconds(t)
        row["startup_seconds"] = attrs.get(STARTUP_SECONDS)
        if placed:
            row["node"], row["gpus"] = attrs.get(NODE, ""), attrs.get(GPUS, "")
        row.update({k: _cell_value(attrs.get(k)) for k in own})
        row["run_dir"] = attrs.get(RUN_DIR, "")
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    if df["startup_seconds"].isna().all():
        df = df.drop(columns=["startup_seconds"])
    if not df["run_dir"].astype(bool).any():
        df = df.drop(columns=["run_dir"])
    if len(objs) == 1:
        metric, maximize = objs[0]
        return df.sort_values(metric, ascending=not maximize, na_position="last", kind="stable").reset_index(drop=True)
    return df.sort_values(["pareto", "trial"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _cell_value(value):
    """A user attribute as a table cell: numbers and text as they are, anything else as JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def headline(study: optuna.Study, table: pd.DataFrame, ranked: list[dict]) -> str:
    """The report's first lines: the best trial, its parameters and value, the sweep's wall time, trials by state,
    and the best mean over seeds when configurations were repeated (`ranked`: repeats.ranking)."""
    trials = study.get_trials(deepcopy=False)
    objs = objectives(study)
    counts = table["state"].value_counts().to_dict()
    states = ", ".join(f"{counts[s]} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "PAUSED", "WAITING")
                       if s in counts)
    started = [t.datetime_start for t in trials if t.datetime_start]
    ended = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ended) - min(started)).total_seconds() if started and ended else 0.0
    goal = ", ".join(f"{'maximize' if mx else 'minimize'} {name}" for name, mx in objs)
    lines = [f"{len(trials)} trials ({states}) in {_duration(wall)} of wall time; {goal}."]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(objs) == 1:
        best = study.best_trial
        params = ", ".join(f"{k}={_cell(v)}" for k, v in best.params.items()) or "no swept parameters"
        lines.append(f"Best: trial {best.number}, {objs[0][0]} = {best.value:.6g}, with {params}.")
        if ranked:
            top = ranked[0]
            lines.append(f"Best mean over seeds: trial {top['trial']}, {objs[0][0]} = {top['mean']:.6g} ± "
                         f"{top['std']:.2g} over {top['runs']} runs ({len(ranked)} configuration(s) repeated; "
                         "table below).")
    elif complete:
        lines.append(f"Pareto front: {len(study.best_trials)} trial(s), listed first below.")
    else:
        lines.append("No trial completed yet.")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h} h {rest // 60:02d} min" if h else (f"{rest // 60} min {rest % 60:02d} s" if rest >= 60 else f"{rest} s")


# ------------------------------------------------------------------ plots


def best_so_far(trials: list[FrozenTrial], maximize: bool) -> pd.DataFrame:
    """Running best objective value, by trial number and by minutes since the first trial started."""
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete), key=lambda t: t.number)
    if not done:
        return pd.DataFrame(columns=["trial", "value", "minutes", "best"])
    start = min(t.datetime_start for t in trials if t.datetime_start)
    df = pd.DataFrame({"trial": [t.number for t in done], "value": [t.value for t in done],
                       "minutes": [(t.datetime_complete - start).total_seconds() / 60 for t in done]})
    df["best"] = df["value"].cummax() if maximize else df["value"].cummin()
    return df


def plot_best_so_far(curves: dict[str, pd.DataFrame], metric: str, maximize: bool, path: Path) -> None:
    fig, axes = _subplots(1, 2, figsize=(11, 4))
    for label, df in curves.items():
        axes[0].step(df["trial"], df["best"], where="post", label=label)
        wall = df.sort_values("minutes")
        running = wall["value"].cummax() if maximize else wall["value"].cummin()
        axes[1].step(wall["minutes"], running, where="post", label=label)
    word = "highest" if maximize else "lowest"
    axes[0].set(title=f"Best {metric} so far by trial ({word} is best)", xlabel="trial number", ylabel=f"best {metric}")
    axes[1].set(title="Best so far by wall-clock time", xlabel="minutes since the sweep started", ylabel=f"best {metric}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if maximize else "upper right")
    _save(fig, path)


def plot_learning_curves(trials: list[FrozenTrial], metric: str, maximize: bool, path: Path) -> None:
    """Every trial's reported values per step, the top ones labelled with their result; the y-axis keeps to the
    bulk of the values (a pruned trial's wild values would squash the rest) and says when it clips."""
    def result(t: FrozenTrial) -> float | None:
        return t.values[0] if t.state == TrialState.COMPLETE else None

    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.intermediate_values),
                  key=lambda t: result(t), reverse=maximize)
    top = {t.number for t in done[:TOP]}
    values = [v for t in trials for v in t.intermediate_values.values() if v is not None and math.isfinite(v)]
    rank = {t.number: i for i, t in enumerate(done[:TOP])}
    fig, ax = _subplots(figsize=(8, 5))
    labelled = {}
    for t in sorted(trials, key=lambda t: -rank.get(t.number, TOP)):  # the best drawn last, on top
        steps = sorted(t.intermediate_values)
        ys = [t.intermediate_values[s] for s in steps]
        if t.number in top:
            (labelled[rank[t.number]],) = ax.plot(steps, ys, lw=2, label=f"trial {t.number}: {result(t):.4g}")
        elif t.state == TrialState.PRUNED:
            ax.plot(steps, ys, color="tab:red", alpha=0.25, lw=1)
        else:
            ax.plot(steps, ys, color="grey", alpha=0.5, lw=1)
    extra = [ax.plot([], [], color="tab:red", alpha=0.4, label="pruned")[0],
             ax.plot([], [], color="grey", alpha=0.6, label="other")[0]]
    title = f"{metric} per reported step (top {TOP} by result)"
    limits = robust_limits(values)
    if limits is not None:
        ax.set_ylim(*limits[:2])
        title += f"\ny clipped to the bulk of the values: {limits[2]} of {len(values)} points outside"
    ax.set(title=title, xlabel="step", ylabel=metric)
    ax.grid(alpha=0.3)
    ax.legend(handles=[labelled[i] for i in sorted(labelled)] + extra, loc="lower right" if maximize else "upper right",
              fontsize=8)
    _save(fig, path)


def robust_limits(values: list[float]) -> tuple[float, float, int] | None:
    """(low, high, points outside) of a y-axis that keeps to the bulk of `values`, or None when none stray far."""
    if len(values) < 8:
        return None
    q1, q3 = pd.Series(values).quantile([0.25, 0.75]).tolist()
    spread = q3 - q1
    if spread <= 0:
        return None
    inside = [v for v in values if q1 - FENCE * spread <= v <= q3 + FENCE * spread]
    outside = len(values) - len(inside)
    if not outside:
        return None
    pad = (max(inside) - min(inside)) * 0.05 or spread
    return min(inside) - pad, max(inside) + pad, outside


def plot_params(trials: list[FrozenTrial], metric: str, path: Path) -> None:
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    names = sorted({n for t in done for n in t.params})
    cols = min(3, max(len(names), 1))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = _subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        pts = [(t.params[name], t.values[0]) for t in done if name in t.params]
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
        ax.set(title=name, xlabel=name + (" (log scale)" if getattr(dist, "log", False) else ""), ylabel=metric)
        ax.grid(alpha=0.3)
    if not names:
        axes[0, 0].text(0.5, 0.5, "no swept parameters", ha="center", va="center", transform=axes[0, 0].transAxes)
    for ax in list(axes.flat)[max(len(names), 1):]:
        ax.axis("off")
    fig.suptitle(f"{metric} against each swept hyperparameter (completed trials)")
    _save(fig, path)


def plot_importance(study: optuna.Study, objs: list[tuple[str, bool]], path: Path) -> None:
    from optuna.importance import PedAnovaImportanceEvaluator

    fig, ax = _subplots(figsize=(7, 4))
    metric = objs[0][0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental in Optuna 4.0, and says so
            evaluator = PedAnovaImportanceEvaluator()  # Optuna 5's default, named here so the title can say so
            importance = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=(lambda t: t.values[0]) if len(objs) > 1 else None)
    except Exception as e:  # too few completed trials, or a single point in the space
        importance = {}
        ax.text(0.5, 0.5, f"not enough completed trials to rank importance\n({type(e).__name__})",
                ha="center", va="center", transform=ax.transAxes)
    names = list(importance)[::-1]
    ax.barh(names, [importance[n] for n in names], color="tab:blue")
    ax.set(title="Hyperparameter importance (Optuna's PED-ANOVA evaluator)",
           xlabel=f"importance for {metric} (shares sum to 1)")
    ax.grid(alpha=0.3, axis="x")
    _save(fig, path)


def pareto_front(costs: list[float], values: list[float], maximize: bool = True) -> list[int]:
    """Indices of points no other point beats on both lower cost and a better value, by increasing cost."""
    sign = 1 if maximize else -1
    front, best = [], -math.inf
    for i in sorted(range(len(costs)), key=lambda i: (costs[i], -sign * values[i])):
        if sign * values[i] > best:
            front.append(i)
            best = sign * values[i]
    return front


def plot_cost(table: pd.DataFrame, metric: str, maximize: bool, path: Path) -> None:
    done = table[table["state"] == "COMPLETE"]
    costs = [(c, label) for c, label in [("seconds", "trial's own seconds, start-up excluded (log scale)"),
                                         ("param_count", "parameters (log scale)")] if c in done.columns]
    fig, axes = _subplots(1, len(costs), figsize=(5.5 * len(costs), 4), squeeze=False)
    for ax, (col, label) in zip(axes.flat, costs):
        pts = done.dropna(subset=[col, metric])
        xs, ys = pts[col].astype(float).tolist(), pts[metric].astype(float).tolist()
        ax.scatter(xs, ys, alpha=0.6, label="trials")
        front = pareto_front(xs, ys, maximize)
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="tab:red", label="Pareto front")
        if xs and min(xs) > 0:
            ax.set_xscale("log")
        ax.set(title=f"{metric} against {col.replace('_', ' ')}", xlabel=label, ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if maximize else "upper right")
    _save(fig, path)


def plot_pareto(study: optuna.Study, objs: list[tuple[str, bool]], path: Path) -> None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = {t.number for t in study.best_trials} if done else set()
    (x_name, x_max), (y_name, y_max) = objs[0], objs[1]
    fig, ax = _subplots(figsize=(7, 5))
    other = [t for t in done if t.number not in front]
    best = sorted((t for t in done if t.number in front), key=lambda t: t.values[0])
    ax.scatter([t.values[0] for t in other], [t.values[1] for t in other], color="grey", alpha=0.5, label="dominated")
    ax.plot([t.values[0] for t in best], [t.values[1] for t in best], "o-", color="tab:red",
            label=f"Pareto front ({len(best)} trials)")
    for t in best:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    more = "; objectives 3+ not drawn" if len(objs) > 2 else ""
    ax.set(title=f"Pareto front{more}",
           xlabel=f"{x_name} ({'higher' if x_max else 'lower'} is better)",
           ylabel=f"{y_name} ({'higher' if y_max else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def _subplots(*grid, figsize, **kw):
    """A figure of its own, not pyplot's: drawing files never switches the host's backend (a notebook's)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def _save(fig, path: Path) -> None:
    try:
        with atomic.replacing(path) as tmp:  # a killed report never leaves half a PNG
            # bbox_inches="tight" fits the labels in one pass (tight_layout took twice as long); a light PNG
            # compression writes several times faster for a few percent more bytes.
            fig.savefig(tmp, dpi=90, format="png", bbox_inches="tight", pil_kwargs={"compress_level": 1})
    finally:
        fig.clear()


def _out_dir(path: Path) -> Path:
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file; expected a folder for the report")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {path}: cannot create it ({first_line(e)})") from None
    return path


# ------------------------------------------------------------------ writing


def warm_up() -> None:
    """Import what drawing the report needs besides this module: a sweep calls it while its last trials run, so
    its process ends sooner after them. Most of it is optuna.importance, which imports scikit-learn."""
    import matplotlib.backends.backend_agg  # noqa: F401  (what savefig draws with)
    import optuna.importance  # noqa: F401


def write_report(study: optuna.Study, out_dir: Path, plots: bool = True) -> pd.DataFrame:
    """report.csv, report.md, the PNG plots and report.html in out_dir; returns the table. Without plots, the page
    says they are on their way and reloads itself until they come (draw_in_background)."""
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise UserError(f"study {study.study_name!r} has no trials yet")
    out_dir = _out_dir(out_dir)
    objs = objectives(study)
    metric, maximize = objs[0]
    table = trials_table(study)
    atomic.write_text(out_dir / "report.csv", table.to_csv(index=False))
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    drawn: list[str] = []

    def draw(name: str, plot, *args) -> None:
        """One plot, its labels taken literally (a '$' in a metric name or a choice is not math markup); a plot
        that cannot be drawn (values no axis can hold) is left out with a warning, never the whole report."""
        import matplotlib

        try:
            with matplotlib.rc_context({"text.parse_math": False}):
                plot(*args, out_dir / name)
            drawn.append(name)
        except (ValueError, OverflowError, RuntimeError, TypeError, MemoryError) as e:
            log.warning("report: %s not drawn (%s)", name, first_line(e)[:200])

    if plots:
        if len(objs) == 1:
            draw("best_so_far.png", plot_best_so_far, {study.study_name: best_so_far(trials, maximize)}, metric,
                 maximize)
        else:
            draw("pareto.png", plot_pareto, study, objs)
        if any(t.intermediate_values for t in finished):
            draw("learning_curves.png", plot_learning_curves, finished, metric, maximize)
        draw("params.png", plot_params, finished, metric)
        draw("importance.png", plot_importance, study, objs)
        if len(objs) == 1:
            draw("cost.png", plot_cost, table, metric, maximize)
    ranked = ranking(trials, maximize) if len(objs) == 1 else []  # hydra.sweeper.repeats
    top = headline(study, table, ranked)
    sections = []
    if ranked:
        sections.append(("Repeated configurations, best mean first", repeats_table(ranked, metric)))
    atomic.write_text(out_dir / "report.md", top + "\n\n" + "".join(
        f"## {title}\n\n{markdown(part)}\n" for title, part in sections) + markdown(table))
    _write_html(out_dir / "report.html", f"Sweep report: {study.study_name}", top, table, drawn, sections,
                pending=not plots)
    if plots:
        log.info("report written to %s", out_dir / "report.html")
    return table


def draw_in_background(storage: str, study_name: str, out_dir: Path) -> bool:
    """Draw the report's plots in a process of its own that outlives this one (the sweep's command ends without
    waiting for matplotlib): it writes the whole report again, plots included, each file atomically, and says what
    it did in report.log. `storage` is the URL as saved (a secret only as ${oc.env:VAR}, read by the drawer from the
    environment it inherits). False when no such process could start."""
    import sweep

    home = str(Path(sweep.__file__).resolve().parents[1])  # the same sweep package, however this one was found
    # Optuna's importance package imports scikit-learn where it is installed (MLflow brings it) for the fANOVA
    # evaluator, which the report does not use: 2-3 s of the drawer's CPU, spared by hiding it in that process.
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); sys.modules.setdefault('sklearn', None); "
            "from sweep.sweeper.report import drawer; drawer(*sys.argv[1:])")
    out_dir = out_dir.resolve()
    try:
        with open(out_dir / "report.log", "ab") as out:
            subprocess.Popen([sys.executable, "-c", code, home, storage, study_name, str(out_dir)],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True,
                             close_fds=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    except OSError as e:
        log.warning("report: the plots could not be drawn in the background (%s); drawing them now", first_line(e))
        return False
    log.info("report written to %s; its plots follow in a few seconds (drawn in the background, see report.log)",
             out_dir / "report.html")
    return True


def repeats_table(ranked: list[dict], metric: str) -> pd.DataFrame:
    """hydra.sweeper.repeats: each repeated configuration's mean and spread over its seeds."""
    return pd.DataFrame([{"trial": r["trial"], f"mean {metric}": r["mean"], "std": r["std"], "runs": r["runs"],
                          f"first run's {metric}": r["first run"],
                          "params": ", ".join(f"{k}={_cell(v)}" for k, v in r["params"].items())} for r in ranked])


def compare(sweep_dirs: list[Path], out_dir: Path) -> pd.DataFrame:
    """Several sweeps side by side: overlaid best-so-far curves and a summary table."""
    out_dir = _out_dir(out_dir)
    rows, curves = [], {}
    objs = None
    for d in sweep_dirs:
        study = study_of_sweep_dir(d)
        these = objectives(study)
        if objs is None:
            objs = these
        elif [m for _, m in these] != [m for _, m in objs] or len(these) != len(objs):
            raise UserError(f"{d}: its study's objectives {these} differ from the first sweep's {objs}; "
                            "compare sweeps of one kind")
        trials = study.get_trials(deepcopy=False)
        label = d.name if d.name not in curves else str(d)
        metric, maximize = these[0]
        curves[label] = best_so_far(trials, maximize)
        finished = [t for t in trials if t.datetime_start and t.datetime_complete]
        wall = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds() / 60 if finished else 0.0
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        row = {"sweep": label}
        if len(these) == 1:
            values = [t.value for t in complete]
            row[f"best {metric}"] = (max(values) if maximize else min(values)) if values else None
        else:
            row["pareto trials"] = len(study.best_trials) if complete else 0
        row.update({"trials": len(trials), "pruned": sum(t.state == TrialState.PRUNED for t in trials),
                    "failed": sum(t.state == TrialState.FAIL for t in trials),
                    "total_steps": sum(len(t.intermediate_values) for t in trials), "wall_minutes": round(wall, 2)})
        rows.append(row)
    table = pd.DataFrame(rows)
    atomic.write_text(out_dir / "comparison.csv", table.to_csv(index=False))
    atomic.write_text(out_dir / "comparison.md", markdown(table))
    images = []
    if objs and len(objs) == 1:
        plot_best_so_far(curves, objs[0][0], objs[0][1], out_dir / "best_so_far.png")
        images.append("best_so_far.png")
    _write_html(out_dir / "comparison.html", "Sweep comparison", ", ".join(curves), table, images)
    return table


CELL = 200  # characters a cell shows in report.md, report.html and on the terminal (report.csv keeps everything)


def _capped(v):
    return shorten(v, CELL) if isinstance(v, str) else v


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else shorten(str(v), CELL).replace("|", "\\|")


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _html_table(table: pd.DataFrame, table_id: str) -> str:
    return table.apply(lambda col: col.map(_capped)).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}",
                                                             table_id=table_id)


def drawer(storage: str, study_name: str, out_dir: str) -> None:
    """The process draw_in_background starts: the report again, with its plots. When it cannot, report.log says why
    and the page stops waiting for them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(out_dir)
    try:
        write_report(open_study(storage, study_name), out)
    except Exception as e:  # the study gone, a full disk: the table stays, the page says what is missing
        log.error("the plots could not be drawn: %s", st.redact(first_line(e)))
        page = out / "report.html"
        try:
            text = page.read_text(errors="replace")
        except OSError:
            sys.exit(1)
        atomic.write_text(page, text.replace(REFRESH, "").replace(PENDING, "<p>The plots could not be drawn: see "
                                                                           "report.log beside this page.</p>"))
        sys.exit(1)


REFRESH = '<meta http-equiv="refresh" content="2">'
PENDING = '<p class="pending">The plots are being drawn; this page reloads until they are in.</p>'


def _write_html(path: Path, title: str, summary: str, table: pd.DataFrame, images: list[str],
                sections: list[tuple[str, pd.DataFrame]] = (), pending: bool = False) -> None:
    figures = "\n".join(
        f'<figure><img alt="{html.escape(TITLES.get(name, name))}" src="data:image/png;base64,'
        f'{base64.b64encode((path.parent / name).read_bytes()).decode()}"><figcaption>{html.escape(TITLES.get(name, name))}'
        f" ({name})</figcaption></figure>"
        for name in images)
    if pending:  # the plots are being drawn by another process: the page reloads until they are in
        figures = PENDING
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>{REFRESH if pending else ""}
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
th {{ background: #f0f0f0; position: sticky; top: 0; }}
figure {{ display: inline-block; margin: 1em; }}
img {{ max-width: 100%; }}
.scroll {{ max-height: 30em; overflow: auto; }}
</style></head>
<body><h1>{html.escape(title)}</h1>{"".join(f"<p>{html.escape(line)}</p>" for line in summary.splitlines())}
{figures}
{"".join(f"<h2>{html.escape(name)}</h2>{_html_table(part, f'section-{i}')}" for i, (name, part) in enumerate(sections))}
<h2>All runs</h2><div class="scroll">{_html_table(table, "runs")}</div>
</body></html>
"""
    atomic.write_text(path, page)


def print_top(table: pd.DataFrame, n: int = 10) -> None:
    """The best rows on the terminal, without the columns report.html has room for."""
    shown = table.drop(columns=["run_dir", "node", "gpus", "startup_seconds"], errors="ignore").head(n)
    shown = shown.apply(lambda col: col.map(lambda v: shorten(v, 60) if isinstance(v, str) else v))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-"))


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dirs", nargs="*", type=Path, help="sweep directories (several: compare them)")
    parser.add_argument("--storage", help="Optuna storage URL: with --study, or with one sweep directory whose study "
                                          "is in a database")
    parser.add_argument("--study", help="study name, with --storage")
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep directory; report-<study> for --storage; comparison/ for several)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    warnings.formatwarning = lambda msg, *a, **k: f"warning: {msg}\n"
    try:
        if args.storage and not args.sweep_dirs:
            if not args.study:
                raise UserError("--storage needs --study NAME, or one sweep directory")
            study = open_study(args.storage, args.study)
            table = write_report(study, args.out or Path(f"report-{args.study}"))
        elif len(args.sweep_dirs) == 1:
            if args.study:
                raise UserError("--study goes with --storage and no sweep directory; a sweep directory names its study")
            table = write_report(study_of_sweep_dir(args.sweep_dirs[0], args.storage), args.out or args.sweep_dirs[0])
        elif args.storage:
            raise UserError("--storage goes with one sweep directory, or with --study NAME")
        elif args.sweep_dirs:
            table = compare(args.sweep_dirs, args.out or Path("comparison"))
            print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            return 0
        else:
            raise UserError("give a sweep directory, several to compare, or --storage URL --study NAME")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder we may not write
        print(f"error: the report could not be written: {st.redact(first_line(e))}", file=sys.stderr)
        return 2
    print_top(table)
    return 0
