"""Training: `train(cfg, out_dir, trial) -> metrics` is the whole loop, from data to the last epoch's metrics.
sweep/mlp/app.py is the Hydra app around it (`python -m sweep.train`), which imports this module, and torch, only
when a run starts: a sweep's own process never needs them.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import sweep
from sweep import atomic, tracking
from sweep.mlp.config import check_config
from sweep.mlp.data import Loader, build_splits
from sweep.mlp.device import auto_threads, choose_precision, others_running, resolve_device
from sweep.errors import UserError
from sweep.launchers.protocol import cpu_cores
from sweep.mlp.model import build_model, build_optimizer, count_parameters

log = logging.getLogger(__name__)

# The metric the sweeper maximizes and the report ranks by: the best epoch's validation accuracy.
METRIC = "val_accuracy"
ONECYCLE_WARMUP = 0.3  # share of steps spent warming up in the one-cycle schedule
LAST = "last.pt"  # the resumable state after a recent epoch; removed once the run ends
CHECKPOINT_SECONDS = 30  # last.pt is rewritten at most this often (and after the first epoch): short epochs don't
                         # pay a checkpoint each, and a resumed run loses at most this much work


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier on the peak learning rate at optimizer step `step` of `total`."""
    t = step / max(total, 1)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    if schedule == "onecycle":  # linear warm-up from lr/25, then cosine decay to 0
        if t < ONECYCLE_WARMUP:
            return 0.04 + 0.96 * t / ONECYCLE_WARMUP
        return 0.5 * (1 + math.cos(math.pi * (t - ONECYCLE_WARMUP) / (1 - ONECYCLE_WARMUP)))
    return 1.0


def autocast(device: torch.device, precision: str):
    """bf16 runs the matmuls in bfloat16 and keeps the weights, optimizer and losses in float32."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_epoch(model, loader: Loader, optimizer, scheduler, label_smoothing: float,
                generator: torch.Generator, precision: str = "fp32") -> tuple[float, float]:
    model.train()
    device = loader.y.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in loader.batches(generator, augment=True):
        with autocast(device, precision):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        # Accumulate on the device: one host sync per epoch, not per step.
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
    n = len(loader.y)
    return loss_sum.item() / n, correct.item() / n


@torch.no_grad()
def evaluate(model, loader: Loader, precision: str = "fp32") -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for x, y in loader.batches():
        with autocast(y.device, precision):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    n = len(loader.y)
    return loss_sum / n, correct / n


def train(cfg: DictConfig, out_dir: Path, trial=None) -> dict:
    """Train one model; write metrics.json and history.csv into out_dir, and best.pt when asked.

    `trial` (sweep.trial(), or anything with report/should_prune) hears each epoch's validation accuracy;
    when it says prune, the run stops with status "pruned" ("paused" when asha may resume it). Now and then, and
    on pausing, the run's whole state goes to out_dir/last.pt, and a run that finds one there (or in the run its
    trial retries) continues from it.
    """
    check_config(cfg)
    trial = trial or sweep.LocalTrial()
    device = resolve_device(cfg.trainer.device)
    apply_threads(cfg.trainer.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = choose_precision(cfg.trainer.precision, device, _cache_dir(cfg))
    torch.manual_seed(cfg.trainer.seed)

    data = build_splits(cfg.data, device)
    model = build_model(cfg.model, data.input_shape, len(data.classes)).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), device)
    total_steps = cfg.trainer.epochs * len(data.train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg.trainer.schedule, step, total_steps))
    shuffle = torch.Generator(device=device).manual_seed(cfg.trainer.seed)

    metrics = {
        METRIC: 0.0, "final_val_accuracy": 0.0, "best_epoch": 0, "epochs_run": 0, "epochs": cfg.trainer.epochs,
        "train_seconds": 0.0, "param_count": count_parameters(model), "device": str(device), "precision": precision,
        "threads": torch.get_num_threads(), "status": "running",
    }
    history: list[dict] = []
    getattr(trial, "checkpoint_dir", None)  # tells hydra/sweeper/pruner=asha that last.pt lets this run pause
    resumed = resume(cfg, out_dir, trial, model, optimizer, scheduler, shuffle)
    if resumed:
        history, done = resumed["history"], resumed["metrics"]
        metrics.update({k: done[k] for k in (METRIC, "final_val_accuracy", "best_epoch", "epochs_run", "train_seconds")})
        for row in history:  # the trial hears every epoch once: a retried trial's copy already has them
            trial.report(row[METRIC], row["epoch"])
    log.info("training %s on %s (%s): %d train / %d val images, %d parameters%s",
             list(cfg.model.hidden_sizes), device, precision, len(data.train.y), len(data.val.y),
             metrics["param_count"], f"; resumed after epoch {metrics['epochs_run']}" if resumed else "")
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    bar = tqdm(range(metrics["epochs_run"] + 1, cfg.trainer.epochs + 1), desc="epochs", unit="epoch",
               initial=metrics["epochs_run"], total=cfg.trainer.epochs, disable=True if in_sweep else None)
    saved_at = -math.inf  # when last.pt was last written
    with tracking.Runs(cfg.get("logger"), tracked_params(cfg), trial, out_dir) as runs, logging_redirect_tqdm():
        for epoch in bar:
            start = time.perf_counter()
            train_loss, train_acc = train_epoch(model, data.train, optimizer, scheduler,
                                                cfg.trainer.label_smoothing, shuffle, precision)
            val_loss, val_acc = evaluate(model, data.val, precision)
            seconds = time.perf_counter() - start
            history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                            "val_loss": val_loss, METRIC: val_acc,
                            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds})
            metrics["epochs_run"] = epoch
            metrics["train_seconds"] += seconds
            metrics["final_val_accuracy"] = val_acc
            log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
                     epoch, cfg.trainer.epochs, train_loss, train_acc, val_loss, val_acc, seconds)
            bar.set_postfix(train_loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.4f}")
            runs.log({k: v for k, v in history[-1].items() if k != "epoch"}, epoch)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                metrics["status"] = "diverged"
                break
            if val_acc > metrics[METRIC] or metrics["best_epoch"] == 0:
                metrics[METRIC], metrics["best_epoch"] = val_acc, epoch
                if cfg.trainer.save_checkpoint:
                    save_checkpoint(out_dir / "best.pt", model, cfg, data, epoch, val_acc)
            _save(out_dir, metrics, history)  # a few KB: every epoch, so a killed run keeps its record
            if time.monotonic() - saved_at >= CHECKPOINT_SECONDS:  # the whole state: now and then
                save_state(out_dir / LAST, cfg, model, optimizer, scheduler, shuffle, metrics, history)
                saved_at = time.monotonic()
            trial.report(val_acc, epoch)
            # A run that already did its last epoch is complete: pruning it would save nothing.
            if epoch < cfg.trainer.epochs and trial.should_prune():
                metrics["status"] = "paused" if getattr(trial, "pausing", False) else "pruned"
                if metrics["status"] == "paused":  # asha may promote it later: it resumes from this very epoch
                    save_state(out_dir / LAST, cfg, model, optimizer, scheduler, shuffle, metrics, history)
                break
        if metrics["status"] == "running":
            metrics["status"] = "completed"
        runs.state = metrics["status"]
        if cfg.trainer.save_checkpoint:
            runs.artifact(out_dir / "best.pt")
    _save(out_dir, metrics, history)
    if metrics["status"] != "paused":
        (out_dir / LAST).unlink(missing_ok=True)  # finished: nothing left to resume
    return metrics


def tracked_params(cfg: DictConfig) -> dict:
    """What a tracker records as the run's parameters: the config without the trackers' own and the search space."""
    params = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in params.items() if k not in ("logger", "search")}


def apply_threads(setting) -> None:
    """trainer.threads: a count; null: torch's default (one per core, or cores / n_jobs in a pool worker); auto: the
    same, but no more than the cores other processes leave free when the run starts. OpenMP's passive waiting is
    set before torch loads."""
    if isinstance(setting, int):
        torch.set_num_threads(setting)
    elif setting == "auto":
        threads, cores = torch.get_num_threads(), cpu_cores()
        wanted = auto_threads(threads, cores, others_running())
        if wanted != threads:
            log.info("trainer.threads=auto: %d thread(s), as other processes keep %d of %d cores busy",
                     wanted, cores - wanted, cores)
            torch.set_num_threads(wanted)


def _cache_dir(cfg: DictConfig) -> Path | None:
    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else None


def _save(out_dir: Path, metrics: dict, history: list[dict]) -> None:
    atomic.write_bytes(out_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["epoch", "train_loss", "train_accuracy", "val_loss", METRIC, "lr", "seconds"])
    writer.writeheader()
    writer.writerows(history)
    atomic.write_bytes(out_dir / "history.csv", text.getvalue().encode())


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, model, cfg: DictConfig, data, epoch: int, val_acc: float) -> None:
    # Plain tensors, numbers and strings only, so torch.load(weights_only=True) can read it without running code.
    atomic.write_bytes(path, _torch_bytes({
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "classes": list(data.classes), "input_shape": list(data.input_shape),
        "mean": data.mean.cpu(), "std": data.std.cpu(), "epoch": epoch, METRIC: val_acc,
    }))


def save_state(path: Path, cfg, model, optimizer, scheduler, shuffle, metrics: dict, history: list[dict]) -> None:
    """Everything the next epoch depends on, so a resumed run ends exactly where an unbroken one would."""
    atomic.write_bytes(path, _torch_bytes({
        "config": OmegaConf.to_container(cfg, resolve=True),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(), "shuffle_rng": shuffle.get_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "metrics": dict(metrics), "history": list(history),
    }))


def resume(cfg, out_dir: Path, trial, model, optimizer, scheduler, shuffle) -> dict | None:
    """Load last.pt from this run, or from the run its trial retries, into the live objects; None when there is
    none. A checkpoint is data: read with weights_only, and ignored (with a warning) unless it matches."""
    candidates = [out_dir / LAST]
    previous = sweep.previous_run_dir(trial)
    if previous is not None:
        candidates.append(previous / LAST)
    if (out_dir / LAST).exists() and not (out_dir / LAST).is_file():
        raise UserError(f"{out_dir / LAST} is not a file (a folder?); remove it, it is where the run keeps its state")
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        same = isinstance(state, dict) and state.get("config") == OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # truncated or foreign: nothing was touched yet, so start over
        log.warning("not resuming from %s: not a readable checkpoint (%s)", path, type(e).__name__)
        return None
    if not same:
        log.warning("not resuming from %s: it was written by a different config", path)
        return None
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        shuffle.set_state(state["shuffle_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history = [dict(row) for row in state["history"]]
        metrics = dict(state["metrics"])
        if [row["epoch"] for row in history] != list(range(1, int(metrics["epochs_run"]) + 1)):
            raise ValueError("its history and epoch count disagree")
    except Exception as e:
        raise UserError(f"{path} matches this run's config but cannot be resumed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); delete it to start the run over") from None
    return {"history": history, "metrics": metrics}
