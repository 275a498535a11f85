"""What a sweep says while it runs and when it ends: a line per finished trial, then the summary, the best
trial, optimization_results.yaml (hydra-optuna-sweeper's format) and the report."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

from sweep import atomic
from sweep.sweeper.asha import paused_step
from sweep.sweeper.repeats import ranking
from sweep.attrs import STOP_REASON
from sweep.errors import UserError, first_line

log = logging.getLogger(__name__)


class Progress:
    """One line per finished trial: where the sweep stands, the best so far, and how long is left."""

    def __init__(self, n_trials: int, directions: list[str], study: optuna.Study):
        self.n_trials, self.directions = n_trials, directions
        self.start = time.monotonic()
        self.deadline: float | None = None
        self.running: set[int] = set()
        self.waiting: set[int] = set()  # paused by asha
        self.counts = {TrialState.COMPLETE: 0, TrialState.PRUNED: 0, TrialState.FAIL: 0}
        self.best: tuple[float, int] | None = None
        if len(directions) == 1:
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                self._consider(t.value, t.number)

    def _consider(self, value: float, number: int) -> None:
        better = self.best is None or (value > self.best[0] if self.directions[0] == "maximize" else value < self.best[0])
        if better:
            self.best = (value, number)

    def started(self, number: int) -> None:
        self.running.add(number)

    def paused(self, number: int, step: int) -> None:
        self.running.discard(number)
        self.waiting.add(number)
        log.info("trial %d paused at step %d (asha): it resumes if its rung promotes it | running %d, paused %d",
                 number, step, len(self.running), len(self.waiting))

    def resumed(self, number: int, step: int) -> None:
        self.waiting.discard(number)
        self.running.add(number)
        log.info("trial %d promoted past step %d (asha): resuming from its checkpoint | running %d, paused %d",
                 number, step, len(self.running), len(self.waiting))

    def ended(self, number: int, state: TrialState, values: list[float] | None, why: str | None = None) -> None:
        self.running.discard(number)
        self.waiting.discard(number)
        self.counts[state] += 1
        if state == TrialState.COMPLETE and len(self.directions) == 1:
            self._consider(values[0], number)
        done = sum(self.counts.values())
        what = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "FAILED"}[state]
        result = ", ".join(f"{v:.6g}" for v in values) if values else (why or "")
        elapsed = time.monotonic() - self.start
        total = max(self.n_trials, done)
        parts = [f"[{done:>{len(str(total))}}/{total}] trial {number} {what}: {result}",
                 f"running {len(self.running)}, " + (f"paused {len(self.waiting)}, " if self.waiting else "")
                 + f"pruned {self.counts[TrialState.PRUNED]}, failed {self.counts[TrialState.FAIL]}"]
        if self.best is not None:
            parts.append(f"best {self.best[0]:.6g} (trial {self.best[1]})")
        left = self._eta(done, elapsed)
        parts.append(f"{clock(elapsed)} elapsed" + (f", ~{clock(left)} left" if left is not None else ""))
        log.info(" | ".join(parts))

    def _eta(self, done: int, elapsed: float) -> float | None:
        if done == 0 or done >= self.n_trials:
            return None
        left = (self.n_trials - done) * elapsed / done  # trials so far ran as many at a time as the rest will
        if self.deadline is not None:
            left = min(left, max(0.0, self.deadline - time.monotonic()))
        return left


def clock(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def pruning_savings(trials, mine, max_resource=None) -> tuple[int, int] | None:
    """(steps the pruner saved, steps the finished trials would have taken), or None when a trial's full length is
    unknown. A full length is the pruner's max_resource when it has one, else the longest completed trial's.
    Trials the time budget stopped saved nothing: they were cut short, not judged."""
    full = max_resource
    if not (isinstance(full, int) and not isinstance(full, bool)):
        lengths = [max(t.intermediate_values) for t in trials if t.state == TrialState.COMPLETE and t.intermediate_values]
        full = max(lengths) if lengths else None
    if full is None:
        return None
    saved = total = 0
    for t in mine:
        steps = max(t.intermediate_values, default=0)
        judged = t.state == TrialState.PRUNED and t.user_attrs.get(STOP_REASON, "").startswith("pruned")
        if t.state == TrialState.COMPLETE or judged:
            total += max(full, steps)
            saved += max(full, steps) - steps if judged else 0
    return saved, total


def plots_later(report: bool | str, storage: str | None) -> bool:
    """Whether the report's plots are drawn by a process of their own after the sweep: not with report=wait, and not
    for a study in this process's memory (storage None), which no other process can read."""
    return bool(report) and report != "wait" and storage is not None


def finish(study: optuna.Study, directions: list[str], launched: list[int], sweep_dir: Path, *, interrupted: bool,
           failures: list[str], max_failure_rate: float, n_trials: int, time_budget: float | None,
           max_resource=None, report: bool | str = True, storage: str | None = None, started: float | None = None,
           stopped: str | None = None) -> None:
    """The sweep's last words: a summary line, the best trial, the results file and the report; then a UserError
    when the sweep did not do what it was asked (interrupted, too many failures, nothing completed). The report's
    plots are drawn by a process of their own, from `storage` (the URL as saved), unless report is "wait" or the
    study lives in this process's memory."""
    mine_numbers = set(launched)
    trials = study.get_trials(deepcopy=False)
    mine = [t for t in trials if t.number in mine_numbers]
    count = {s: sum(t.state == s for t in mine) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    paused = sum(paused_step(t) is not None for t in mine)
    summary = (f"Sweep {'interrupted' if interrupted else 'done'}: {len(mine)} trial(s): "
               f"{count[TrialState.COMPLETE]} complete, {count[TrialState.PRUNED]} pruned, "
               f"{count[TrialState.FAIL]} failed" + (f", {paused} paused (the next sweep resumes them)" if paused else ""))
    saved = pruning_savings(trials, mine, max_resource)
    if saved is not None and saved[0]:
        summary += f"; pruning saved {saved[0]} of {saved[1]} steps ({100 * saved[0] / max(saved[1], 1):.0f}%)"
    if started is not None:
        summary += f"; {clock(time.monotonic() - started)}"
    if stopped:
        summary += f"; stopped early: {stopped}"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    results = None
    if complete and len(directions) == 1:
        best = study.best_trial
        log.info("Best parameters: %s", best.params)
        log.info("Best value: %s (trial %d)", best.value, best.number)
        results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        ranked = ranking(trials, directions[0] == "maximize")
        if ranked:  # hydra.sweeper.repeats: what a configuration is worth beyond one lucky seed
            log.info("Best by the mean over seeds:")
            for r in ranked:
                log.info("    trial %d: %.6g ± %.2g over %d run(s), params %s", r["trial"], r["mean"], r["std"],
                         r["runs"], r["params"])
            results["repeats"] = [{k: r[k] for k in ("trial", "mean", "std", "runs", "params")} for r in ranked]
    elif complete:
        front = study.best_trials
        log.info("Pareto front: %d trial(s)", len(front))
        for t in front:
            log.info("    trial %d: values %s, params %s", t.number, t.values, t.params)
        results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in front]}
    if results is not None:
        try:
            atomic.write_text(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(OmegaConf.create(results)))
        except OSError as e:
            log.warning("optimization_results.yaml not written: %s", first_line(e))
    log.info(summary)
    if report and trials:
        try:
            from sweep.sweeper.report import draw_in_background, print_top, write_report

            later = plots_later(report, storage)
            print_top(write_report(study, sweep_dir, plots=not later))
            if later and not draw_in_background(storage, study.study_name, sweep_dir):
                write_report(study, sweep_dir)
        except Exception as e:  # a full disk or a broken plot must not cost the user the sweep's results
            log.warning("report not written: %s", first_line(e))
    if interrupted:
        raise UserError("sweep interrupted; rerun the same command to resume the study")
    if len(failures) > max_failure_rate * n_trials:
        raise UserError(
            f"{len(failures)} of {len(launched)} trials failed, more than hydra.sweeper.max_failure_rate="
            f"{max_failure_rate} of n_trials={n_trials} allows; first failure: {failures[0]}")
    if not complete:
        if time_budget and count[TrialState.PRUNED]:
            raise UserError(f"no trial completed within hydra.sweeper.time_budget={time_budget} seconds; "
                            "raise it or shorten the trials")
        raise UserError("no trial completed; see the failures above")
