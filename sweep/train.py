"""Training: `train(cfg) -> metrics` is the whole loop; `main` is the Hydra entry point the sweeper calls.

    python -m sweep.train model.hidden_sizes=[256,128]
    python -m sweep.train --multirun                     # Optuna sweep over conf/search/default.yaml
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Callable

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sweep.config import UserError, check_config, resolve_device
from sweep.data import Loader, build_splits
from sweep.model import build_model, build_optimizer, count_parameters

log = logging.getLogger(__name__)

# The metric the sweeper maximizes and the report ranks by: the best epoch's validation accuracy.
METRIC = "val_accuracy"
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # absolute: works from -m, scripts and tests alike
ONECYCLE_WARMUP = 0.3  # share of steps spent warming up in the one-cycle schedule


class Diverged(Exception):
    """The training loss became NaN or infinite."""


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


def train(cfg: DictConfig, out_dir: Path, on_epoch: Callable[[int, float], bool] | None = None) -> dict:
    """Train one model; write metrics.json and history.csv into out_dir, and best.pt when asked.

    on_epoch(epoch, val_accuracy) is called after every epoch; returning True stops the run as pruned.
    """
    check_config(cfg)
    device = resolve_device(cfg.trainer.device)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    out_dir.mkdir(parents=True, exist_ok=True)
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
        "train_seconds": 0.0, "param_count": count_parameters(model), "device": str(device),
        "threads": torch.get_num_threads(), "status": "running",
    }
    history: list[dict] = []
    log.info("training %s on %s: %d train / %d val images, %d parameters",
             list(cfg.model.hidden_sizes), device, len(data.train.y), len(data.val.y), metrics["param_count"])
    bar = tqdm(range(1, cfg.trainer.epochs + 1), desc="epochs", unit="epoch", disable=None)
    with logging_redirect_tqdm():
        for epoch in bar:
            start = time.perf_counter()
            train_loss, train_acc = train_epoch(model, data.train, optimizer, scheduler,
                                                cfg.trainer.label_smoothing, shuffle, cfg.trainer.precision)
            val_loss, val_acc = evaluate(model, data.val, cfg.trainer.precision)
            seconds = time.perf_counter() - start
            history.append({"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_acc,
                            "val_loss": val_loss, "val_accuracy": val_acc,
                            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds})
            metrics["epochs_run"] = epoch
            metrics["train_seconds"] += seconds
            metrics["final_val_accuracy"] = val_acc
            log.info("epoch %d/%d  train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1fs",
                     epoch, cfg.trainer.epochs, train_loss, train_acc, val_loss, val_acc, seconds)
            bar.set_postfix(train_loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.4f}")
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                metrics["status"] = "diverged"
                _save(out_dir, metrics, history)
                break
            if val_acc > metrics[METRIC] or metrics["best_epoch"] == 0:
                metrics[METRIC], metrics["best_epoch"] = val_acc, epoch
                if cfg.trainer.save_checkpoint:
                    save_checkpoint(out_dir / "best.pt", model, cfg, data, epoch, val_acc)
            _save(out_dir, metrics, history)  # after every epoch, so a killed run keeps what it did
            # A run that already did its last epoch is complete: pruning it would save nothing.
            if on_epoch is not None and on_epoch(epoch, val_acc) and epoch < cfg.trainer.epochs:
                metrics["status"] = "pruned"
                break
    if metrics["status"] == "running":
        metrics["status"] = "completed"
    _save(out_dir, metrics, history)
    return metrics


def _save(out_dir: Path, metrics: dict, history: list[dict]) -> None:
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out_dir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def save_checkpoint(path: Path, model, cfg: DictConfig, data, epoch: int, val_acc: float) -> None:
    # Plain tensors, numbers and strings only, so torch.load(weights_only=True) can read it without running code.
    torch.save({
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": OmegaConf.to_container(cfg, resolve=True),
        "classes": list(data.classes), "input_shape": list(data.input_shape),
        "mean": data.mean.cpu(), "std": data.std.cpu(), "epoch": epoch, METRIC: val_acc,
    }, path)


@hydra.main(config_path=CONF_DIR, config_name="config")  # Hydra 1.4 defaults: no chdir
def main(cfg: DictConfig) -> float:
    """Train one model and return its best validation accuracy: the value the sweeper maximizes."""
    from sweep.sweeper import TrialReporter  # Optuna is only touched inside a sweep

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    reporter = TrialReporter.connect(cfg, hydra_cfg, out_dir)
    try:
        metrics = train(cfg, out_dir, reporter.on_epoch if reporter else None)
        if metrics["status"] == "diverged":
            raise Diverged(f"training diverged: loss became NaN or inf at epoch {metrics['epochs_run']}; "
                           "lower optimizer.lr or add model.norm=batch")
    except (UserError, Diverged) as e:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as FAIL with this reason and goes on
        raise SystemExit(f"error: {e}") from None
    if reporter:
        reporter.finish(metrics)  # raises optuna.TrialPruned for a pruned run
    log.info("%s %.4f (best epoch %d of %d, %.1fs)", METRIC, metrics[METRIC], metrics["best_epoch"],
             metrics["epochs_run"], metrics["train_seconds"])
    return metrics[METRIC]


def search_space_argv(argv: list[str]) -> list[str]:
    """Hydra refuses sweep syntax on hydra.* keys, so `hydra.sweeper.params.KEY=SPACE` becomes the
    equivalent sweep override `KEY=SPACE`, which replaces KEY's entry in the search space."""
    prefix = "hydra.sweeper.params."
    return [a[len(prefix):] if a.startswith(prefix) else a for a in argv]


def cli() -> None:
    sys.argv = search_space_argv(sys.argv)
    main()


if __name__ == "__main__":
    # Run the importable sweep.train, not this __main__ copy, so launchers that pickle the task
    # (pool, joblib, submitit) can find it by name in their worker processes.
    from sweep.train import cli as _cli

    _cli()
