"""Final evaluation: score one saved model once on the data set's held-out test split.

    python -m sweep.evaluate multirun/2026-11-27/10-00-00      # the sweep's best trial
    python -m sweep.evaluate outputs/2026-11-27/10-00-00       # one run

It evaluates the checkpoint of the run's best epoch (best.pt, written when trainer.save_checkpoint=true):
no retraining, so the number is exactly the model the sweep selected on validation accuracy. The test
split (CIFAR-10's official 10,000 images, imagefolder's root/test/, digits' fixed 20%) is never read
during training or sweeping.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sweep import atomic
from sweep.mlp.config import DEVICES, check_config
from sweep.mlp.data import EVAL_BATCH, Loader, load_dataset
from sweep.mlp.device import resolve_device
from sweep.errors import UserError, first_line
from sweep.mlp.model import build_model


def find_checkpoint(path: Path, storage: str | None = None) -> Path:
    """best.pt of a run directory, or of the best completed trial of a sweep directory (whose study is in
    `storage`, when that is a database)."""
    if (path / "best.pt").exists():
        return path / "best.pt"
    if (path / "study.json").exists():
        from sweep.sweeper.report import study_of_sweep_dir

        study = study_of_sweep_dir(path, storage)
        if len(study.directions) > 1:
            raise UserError(f"{path}: a multi-objective sweep has no single best trial; evaluate one of its Pareto "
                            "trials' run directories (report.csv lists them)")
        try:
            best = study.best_trial
        except ValueError:
            raise UserError(f"{path}: the sweep has no completed trial to evaluate") from None
        run = Path(best.user_attrs.get("run_dir", ""))
        if (run / "best.pt").exists():
            return run / "best.pt"
        raise UserError(f"{path}: best trial {best.number} ({run}) has no best.pt; sweep with "
                        "trainer.save_checkpoint=true, or train its config again with trainer.save_checkpoint=true")
    if (path / "metrics.json").exists():
        raise UserError(f"{path}: the run has no best.pt; train it with trainer.save_checkpoint=true")
    raise UserError(f"{path} is neither a run directory (with best.pt) nor a sweep directory (with study.json)")


def load_model(checkpoint: Path, device: torch.device):
    """The checkpoint's model and config. A checkpoint is data: loaded with weights_only (tensors and plain
    values, no code), and its config checked like any config before anything it names is used."""
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{checkpoint} is not a readable checkpoint ({first_line(e)})") from None
    missing = [k for k in ("model", "config", "classes", "input_shape", "mean", "std", "epoch", "val_accuracy")
               if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise UserError(f"{checkpoint} is not a sweep.train checkpoint: it has no {missing[0]!r}")
    try:
        cfg = OmegaConf.create(ckpt["config"])
        check_config(cfg)
        classes, shape = list(ckpt["classes"]), tuple(int(d) for d in ckpt["input_shape"])
    except UserError as e:
        raise UserError(f"{checkpoint}: its config is invalid: {e}") from None
    except Exception as e:
        raise UserError(f"{checkpoint}: its config is unreadable ({first_line(e)})") from None
    model = build_model(cfg.model, shape, len(classes))
    try:
        model.load_state_dict(ckpt["model"])
    except Exception as e:
        raise UserError(f"{checkpoint}: its weights do not match its config ({first_line(e)})") from None
    return model.to(device).eval(), cfg, ckpt


@torch.no_grad()
def predict(model, loader: Loader) -> torch.Tensor:
    return torch.cat([model(x).argmax(1) for x, _ in loader.batches()])


def data_of(cfg, checkpoint: Path, base: Path, data_root: Path | None):
    """The data to evaluate on. A checkpoint is someone else's file: it never decides a download, a cache folder or
    where data is read, except from inside the run or sweep folder the user named (base); --data-root says so
    otherwise."""
    data = cfg.data.copy()
    data.download, data.cache_dir = False, None
    if data.name == "digits":  # bundled
        return data
    if data_root is not None:
        data.root = str(data_root)
    elif not (isinstance(data.root, str) and Path(base, data.root).resolve().is_relative_to(base.resolve())):
        raise UserError(f"{checkpoint}: its data.root={data.root!r} is outside {base}; evaluation reads data only "
                        "where you say: give the data set's folder with --data-root PATH")
    else:
        data.root = str(Path(base, data.root).resolve())
    return data


def evaluate_checkpoint(checkpoint: Path, out_dir: Path, device: str = "auto", data_root: Path | None = None,
                        base: Path | None = None) -> dict:
    if device not in DEVICES:
        raise UserError(f"--device {device!r} is invalid: expected one of {', '.join(DEVICES)}")
    dev = resolve_device(device)
    model, cfg, ckpt = load_model(checkpoint, dev)
    dataset = load_dataset(data_of(cfg, checkpoint, base or checkpoint.parent, data_root))
    if dataset.test is None:
        raise UserError(f"data.root: this data set has no test split ({cfg.data.name}: "
                        "imagefolder needs root/test/<class>/*); nothing to evaluate on")
    test = Loader(dataset.test, dev, ckpt["mean"], ckpt["std"], EVAL_BATCH)
    pred = predict(model, test).cpu()
    truth = dataset.test.y
    classes = ckpt["classes"]
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.long)
    confusion.index_put_((truth, pred), torch.ones_like(truth), accumulate=True)
    per_class = (confusion.diag().double() / confusion.sum(1).clamp_min(1)).tolist()
    metrics = {
        "test_accuracy": (pred == truth).double().mean().item(),
        "test_images": len(truth),
        "per_class_accuracy": dict(zip(classes, per_class)),
        "confusion_matrix": confusion.tolist(),  # rows: true class, columns: predicted class
        "checkpoint": str(checkpoint.resolve()),
        "best_epoch": ckpt["epoch"],
        "val_accuracy": ckpt["val_accuracy"],
    }
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; expected a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out_dir / "test_metrics.json", json.dumps(metrics, indent=2) + "\n")
    plot_confusion(confusion, classes, metrics["test_accuracy"], out_dir / "confusion_matrix.png")
    return metrics


def plot_confusion(confusion: torch.Tensor, classes: list[str], accuracy: float, path: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: the host's backend stays as it is

    share = confusion.double() / confusion.sum(1, keepdim=True).clamp_min(1)
    fig = Figure(figsize=(1 + 0.6 * len(classes), 0.8 + 0.6 * len(classes)))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set(title=f"Test confusion matrix (accuracy {accuracy:.4f})", xlabel="predicted class", ylabel="true class")
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.tight_layout()
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="a sweep directory or a run directory")
    parser.add_argument("--out", type=Path, help="where to write test_metrics.json (default: beside best.pt)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--storage", help="the sweep's storage URL, when its study is in a database")
    parser.add_argument("--data-root", type=Path, help="the data set's folder (a checkpoint's own data.root is used "
                                                       "only when it lies inside the folder evaluated)")
    args = parser.parse_args(argv)
    try:
        checkpoint = find_checkpoint(args.path, args.storage)
        metrics = evaluate_checkpoint(checkpoint, args.out or checkpoint.parent, args.device, args.data_root,
                                      base=args.path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    print(f"test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']} images "
          f"(val accuracy {metrics['val_accuracy']:.4f} at epoch {metrics['best_epoch']}); "
          f"wrote {(args.out or checkpoint.parent) / 'test_metrics.json'}")
    return 0
