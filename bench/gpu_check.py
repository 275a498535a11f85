"""GPU check: trainer.device=cuda end to end, and epoch times on CIFAR-10-sized data.

    python bench/gpu_check.py OUT_DIR

Needs a CUDA GPU. CIFAR-10 itself may be out of reach there, so the epoch timings use random images
in CIFAR-10's batch format (50,000 of 3x32x32): speed does not depend on the pixels.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

import pages
from common import header
from sweep.mlp.config import CONF_DIR
from sweep.mlp.train import train
from sweep.mlp.config import register_resolvers

register_resolvers()  # ${mlp_layers:...} in conf/model/mlp.yaml


def fake_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 10000) for i in range(1, 6)], ("test_batch", 10000)]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    return root


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    header("GPU check")
    assert torch.cuda.is_available(), "no CUDA GPU visible"

    run = subprocess.run([sys.executable, "-m", "sweep.train", "data=digits", "trainer.device=cuda", "model.hidden_sizes=[256,128]",
                          f"hydra.run.dir={out}/digits", f"data.cache_dir={out}/cache"], capture_output=True, text=True)
    digits = json.loads((out / "digits" / "metrics.json").read_text()) if run.returncode == 0 else {"error": run.stderr[-2000:]}
    print("digits on cuda:", json.dumps(digits))

    root = fake_cifar10(Path("/tmp/fake-cifar10"))
    rows = []
    for label, extra in [("tutorial MLP [128], fp32", ["+experiment=tutorial"]),
                         ("tutorial MLP [128], bf16", ["+experiment=tutorial", "trainer.precision=bf16"]),
                         ("3x2048 batch norm, batch 512, flip+crop, bf16",
                          ["model.width=2048", "model.depth=3", "model.norm=batch", "data.batch_size=512", "data.flip=true",
                           "data.crop_padding=4", "trainer.precision=bf16"])]:
        with initialize_config_dir(config_dir=CONF_DIR):
            cfg = compose("config", overrides=[f"data.root={root}", "data.download=false", f"data.cache_dir={out}/cache",
                                               "trainer.device=cuda", "trainer.epochs=4", *extra])
        start = time.perf_counter()
        metrics = train(cfg, out / "epochs")
        hist = (out / "epochs" / "history.csv").read_text().splitlines()[1:]
        seconds = [float(r.split(",")[-1]) for r in hist]
        rows.append((label, min(seconds[1:]), time.perf_counter() - start, metrics["device"]))
    table = pages.show(["config (50,000 CIFAR-10-sized images, 5,000 val)", "seconds / epoch (best of epochs 2-4)",
                        "device"], [[label, f"{sec:.3f}", dev] for label, sec, _, dev in rows])
    print(f"saved {pages.save('gpu-epochs', *table, 'the best of epochs 2-4 of one run each')}")

    # The pool on every visible GPU, two trials per GPU: each trial records the CUDA_VISIBLE_DEVICES it was given.
    sweep = subprocess.run([sys.executable, "-m", "sweep.train", "--multirun", "data=digits", "search=digits",
                            "trainer.device=cuda", "hydra.sweeper.n_trials=8", "hydra.launcher.trials_per_gpu=2",
                            f"hydra.sweeper.storage=sqlite:///{out}/gpu.db", f"hydra.sweep.dir={out}/sweep",
                            f"data.cache_dir={out}/cache"], capture_output=True, text=True)
    log = (sweep.stdout + sweep.stderr).splitlines()
    summary = [line for line in log if "worker process" in line or "Sweep done" in line or "error" in line]
    print("digits sweep on cuda, 2 trials per GPU:", sweep.returncode, summary)
    import optuna

    study = optuna.load_study(study_name="digits", storage=f"sqlite:///{out}/gpu.db")
    for t in study.trials:
        run = Path(str(t.user_attrs.get("run_dir", "")))
        device = json.loads((run / "metrics.json").read_text()).get("device") if (run / "metrics.json").is_file() else None
        print(f"trial {t.number}: {t.state.name}, gpus={t.user_attrs.get('gpus')!r}, node={t.user_attrs.get('node')}, "
              f"device={device}, seconds={t.user_attrs.get('run_seconds')}")
    # How many trials ran at once on each GPU, from the study's own start and end times.
    spans = [(t.user_attrs.get("gpus"), t.datetime_start, t.datetime_complete) for t in study.trials if t.datetime_complete]
    for gpu in sorted({g for g, _, _ in spans}, key=str):
        mine = [(a, b) for g, a, b in spans if g == gpu]
        most = max(sum(a <= start < b for a, b in mine) for start, _ in mine)
        print(f"GPU {gpu!r}: {len(mine)} trials, at most {most} at once")


if __name__ == "__main__":
    main()
