"""A Hydra app the plugin's tests sweep: a training loop without torch, whose 'learning curve' depends on lr and
width, with knobs for what tests need (slow epochs, a crash, sys.exit, a bad return value, a barrier)."""

import math
import os
import sys
import time
from pathlib import Path

import hydra
import optuna
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import sweep

HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


def score(lr: float, width: int, epoch: int) -> float:
    """Best near lr=0.1 and wide layers; approaches its ceiling as epochs pass."""
    ceiling = max(0.0, 1 - (math.log10(lr) + 1) ** 2 / 4) * (1 - 1 / (1 + width / 8))
    return ceiling * (1 - 0.5 ** epoch)


@hydra.main(config_path="conf", config_name="curve", **HYDRA_DEFAULTS)
def main(cfg: DictConfig) -> float:
    trial = sweep.trial()
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "span").write_text(f"{time.time()}\n")
    (out / "pid").write_text(str(os.getpid()))
    if cfg.barrier_dir:  # each trial leaves a file there; barrier > 0 waits until that many trials have started
        folder = Path(cfg.barrier_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(trial.number)).touch()
        deadline = time.monotonic() + 120
        while len(list(folder.iterdir())) < cfg.barrier and time.monotonic() < deadline:
            time.sleep(0.05)
    for _ in range(cfg.fork_children):  # children that inherit every descriptor, the worker's pipe among them
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
    if cfg.resumable:  # asks where to keep its state: hydra/sweeper/pruner=asha may pause it and resume it later
        assert trial.checkpoint_dir == out
    done = 0
    for folder in (out, sweep.previous_run_dir(trial)):  # resume where this run, or the run it retries, stopped
        if folder is not None and (folder / "last_epoch").is_file():
            done = max(done, int((folder / "last_epoch").read_text()))
    (out / "resumed_from").write_text(str(done))
    for epoch in range(1, done + 1):  # as sweep.train does: a kill may land between a checkpoint and its report
        trial.report(score(cfg.lr, cfg.width, epoch), epoch)  # (the first report of a step stands)
    value = score(cfg.lr, cfg.width, max(done, 1))
    for epoch in range(done + 1, cfg.epochs + 1):
        if cfg.epoch_seconds:
            time.sleep(cfg.epoch_seconds)
        if cfg.print:
            print(cfg.print, flush=True)
        if cfg.fail or cfg.fail_trial == trial.number:
            raise RuntimeError("cfg.fail is true")
        if cfg.exit_code is not None:
            sys.exit(cfg.exit_code)
        value = score(cfg.lr, cfg.width, epoch)
        (out / "last_epoch.tmp").write_text(str(epoch))  # a kill mid-write must not leave an empty checkpoint
        os.replace(out / "last_epoch.tmp", out / "last_epoch")
        with open(out / "epochs_run", "a") as f:  # every epoch this trial's runs trained, for the resume tests
            f.write(f"{epoch}\n")
        trial.report(value, epoch)
        if epoch < cfg.epochs and trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("note", f"pid {os.getpid()}")
    trial.set_user_attr("env", os.environ.get("SWEEP_TEST_BROKEN", ""))
    if cfg.break_trial == trial.number:  # what a careless task can do to the process it runs in
        os.environ["SWEEP_TEST_BROKEN"] = "yes"
        os.chdir("/")
        sys.stdout = None
        sys.stderr = None
    with open(out / "span", "a") as f:
        f.write(f"{time.time()}\n")
    (out / "seed").write_text(str(cfg.seed))
    value += cfg.noise * math.sin(12.9898 * (cfg.seed + 1))  # a noisy objective: each seed shifts the result
    return cfg.returns if cfg.returns is not None else value


if __name__ == "__main__":
    main()
