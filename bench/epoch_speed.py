"""Epoch time of the tutorial's MLP: this harness against the tutorial's own pipeline, side by side.

    python bench/epoch_speed.py [--epochs 5] [--tutorial-epochs 2] [--device cpu]

Both train hidden [128], SGD lr 1e-3, momentum 0.9, weight decay 1e-4, batch 256 on the 45,000
training images of ../shared/data/cifar10-jpeg (5,000 held out for validation), and both evaluate
the validation split every epoch. Also prints the GFLOP/s the harness's training reaches next to
a plain matmul measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import pages
from common import CIFAR_JPEG, header
from sweep.mlp.model import MLP
from sweep.mlp.config import CONF_DIR
from sweep.mlp.train import train
from sweep.mlp.config import register_resolvers

register_resolvers()  # ${mlp_layers:...} in conf/model/mlp.yaml

TUTORIAL = ["+experiment=tutorial", "data=imagefolder", f"data.root={CIFAR_JPEG}", "data.val_size=5000"]


def harness_epochs(epochs: int, device: str, precision: str = "fp32") -> tuple[list[float], float]:
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose("config", overrides=[*TUTORIAL, f"trainer.epochs={epochs}", f"trainer.device={device}",
                                           f"trainer.precision={precision}"])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train(cfg, Path(out))  # decodes (or reads the cache), then trains
        total = time.perf_counter() - start
        rows = (Path(out) / "history.csv").read_text().splitlines()[1:]
    seconds = [float(r.split(",")[-1]) for r in rows]
    return seconds, total - sum(seconds)


def tutorial_epochs(epochs: int, workers: int) -> list[float]:
    """The tutorial's pipeline: ImageFolder + per-image ToTensor/Normalize through a DataLoader."""
    from torch.utils.data import DataLoader, random_split
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    full = datasets.ImageFolder(str(CIFAR_JPEG / "train"), transform=transform)
    train_set, val_set = random_split(full, [45000, 5000], generator=torch.Generator().manual_seed(0))
    train_loader = DataLoader(train_set, batch_size=256, shuffle=True, num_workers=workers)
    val_loader = DataLoader(val_set, batch_size=256, shuffle=False, num_workers=workers)
    model = MLP(3 * 32 * 32, [128], 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                model(x).argmax(1).eq(y).sum()
        seconds.append(time.perf_counter() - start)
    return seconds


def epoch_flops() -> float:
    """FLOPs of one harness epoch: forward + backward over 45,000 images, forward over 5,000."""
    layers = [(3072, 128), (128, 10)]
    macs = sum(i * o for i, o in layers)
    train = 45000 * (2 * macs + 2 * macs + 2 * (macs - 3072 * 128))  # fwd, weight grads, input grads (not of the images)
    return train + 5000 * 2 * macs


def matmul_gflops(m: int, k: int, n: int, device: str, repeat: int = 50) -> float:
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    for _ in range(5):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * m * k * n * repeat / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="harness epochs (median reported)")
    parser.add_argument("--tutorial-epochs", type=int, default=2, help="tutorial-pipeline epochs (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the tutorial pipeline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--save", action="store_true", help="keep the tables for the docs (bench/pages.py)")
    args = parser.parse_args()
    header("Epoch time: tutorial MLP on CIFAR-10 (JPEG copy), harness vs tutorial pipeline")

    harness_epochs(1, args.device)  # fill the decode cache, so the timed run measures training only
    harness, setup = harness_epochs(args.epochs, args.device)
    auto, _ = harness_epochs(args.epochs, args.device, "auto")  # bf16 only where it is native
    tutorial = tutorial_epochs(args.tutorial_epochs, args.workers)
    h, t, b = statistics.median(harness), statistics.median(tutorial), statistics.median(auto)
    from sweep.mlp.device import choose_precision

    picked = choose_precision("auto", torch.device(args.device))
    achieved = epoch_flops() / h / 1e9
    peak_square = matmul_gflops(2048, 2048, 2048, args.device)
    peak_layer = matmul_gflops(256, 3072, 128, args.device)

    speed = pages.show(["pipeline", f"seconds / epoch (median of {args.epochs}; tutorial: of {args.tutorial_epochs})",
                        "speed-up"], [
        [f"tutorial: ImageFolder + ToTensor/Normalize per image, DataLoader ({args.workers} workers)", f"{t:.2f}", "1.0x"],
        [f"this harness: uint8 tensors on {args.device}, index-sliced batches, `trainer.precision=fp32`", f"{h:.3f}",
         f"**{t / h:.1f}x**"],
        [f"this harness, `trainer.precision=auto` (the default; picks {picked} here)", f"{b:.3f}", f"{t / b:.1f}x"]])
    print()
    print(f"harness start-up from the decode cache: {setup:.1f}s; fp32 epochs: {', '.join(f'{s:.3f}' for s in harness)}; "
          f"auto epochs: {', '.join(f'{s:.3f}' for s in auto)}")
    print(f"tutorial epochs: {', '.join(f'{s:.2f}' for s in tutorial)}")
    print()
    compute = pages.show(["compute", "GFLOP/s"], [
        [f"harness training, fp32 (forward + backward + validation, {epoch_flops() / 1e9:.1f} GFLOP / epoch)", f"{achieved:.1f}"],
        ["plain fp32 matmul 2048x2048x2048", f"{peak_square:.1f}"],
        ["plain fp32 matmul of the first layer's shape, 256x3072 @ 3072x128", f"{peak_layer:.1f}"]])
    print(f"\nspeed-up: {t / h:.1f}x (target >= 12x); harness reaches {100 * achieved / peak_square:.0f}% of the square-matmul peak")
    if args.save:
        print(f"saved {pages.save('epoch-speed', *speed, 'medians of the epochs, one after the other in one process')}")
        print(f"saved {pages.save('epoch-compute', *compute, 'one measurement each')}")


if __name__ == "__main__":
    main()
