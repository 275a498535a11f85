"""The MLP harness as a Hydra app: `main` is the task function the sweeper's launchers call, `cli` the command.

    python -m sweep.train model.hidden_sizes=[256,128]
    python -m sweep.train --multirun                     # Optuna sweep over conf/search/default.yaml

The training loop (sweep/mlp/train.py) and torch are imported when a run starts, not here: a sweep's own process
composes configs and schedules trials, and never trains.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import sweep
from sweep.errors import EXIT_INTERRUPTED, UserError, exit_with, first_line, hydra_error
from sweep.mlp.config import CONF_DIR, HYDRA_DEFAULTS, register_resolvers

log = logging.getLogger(__name__)

# What the pool's fork server imports once, for every worker it forks (docs/launchers.md): the loop with torch,
# and torch._dynamo, which a run's first optimizer imports (1.3 s on this project's machine).
SWEEP_PRELOAD = ("sweep.mlp.train", "torch._dynamo")


class Diverged(Exception):
    """The training loss became NaN or infinite."""


@hydra.main(config_path=CONF_DIR, config_name="config", **HYDRA_DEFAULTS)
def main(cfg: DictConfig) -> float:
    """Train one model and return its best validation accuracy: the value the sweeper maximizes."""
    from sweep.mlp.train import LAST, METRIC, train

    register_resolvers()
    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        trial = sweep.trial()
        metrics = train(cfg, out_dir, trial)
        diverged = (f"training diverged: loss became NaN or inf at epoch {metrics['epochs_run']}; "
                    "lower optimizer.lr or add model.norm=batch")
        if metrics["status"] == "diverged" and not in_sweep:
            raise Diverged(diverged)
    except (UserError, Diverged) as e:
        if in_sweep:
            raise  # the sweeper records the trial as FAIL with this reason and goes on
        exit_with(str(e))
    except KeyboardInterrupt:
        if in_sweep:
            raise
        exit_with(f"interrupted; rerun the same command to resume from {out_dir / LAST}", EXIT_INTERRUPTED)
    except (OSError, MemoryError, RuntimeError) as e:  # a full or read-only disk, or out of memory
        problem = resource_problem(e, out_dir)
        if problem is None:
            raise
        if in_sweep:
            raise UserError(problem) from None
        exit_with(problem)
    for key in ("best_epoch", "epochs_run", "train_seconds", "param_count", "device", "precision", "status"):
        trial.set_user_attr(key, metrics[key])
    if metrics["status"] in ("pruned", "paused", "diverged"):
        import optuna

        # A diverged trial is pruned, not failed: Optuna's samplers learn from pruned trials (ranking one with no
        # reports last) but skip failed ones, and would keep proposing learning rates that diverge.
        raise optuna.TrialPruned(diverged if metrics["status"] == "diverged" else f"after epoch {metrics['epochs_run']}")
    log.info("%s %.4f (best epoch %d of %d, %.1fs)", METRIC, metrics[METRIC], metrics["best_epoch"],
             metrics["epochs_run"], metrics["train_seconds"])
    return metrics[METRIC]


def resource_problem(e: BaseException, out_dir: Path | str) -> str | None:
    """One line for running out of disk or memory, naming the path or the setting; None for anything else."""
    import errno

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT):
        where = e.filename or out_dir
        why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
               errno.EDQUOT: "the disk quota is used up"}.get(e.errno, "permission denied")
        return f"cannot write {where}: {why}; free space or point hydra.run.dir / hydra.sweep.dir elsewhere"
    text = str(e)
    if isinstance(e, MemoryError) or "DefaultCPUAllocator" in text or "out of memory" in text.lower():
        return ("out of memory while training; lower model.width, model.depth or data.batch_size "
                f"({first_line(e)[:160]})")
    return None


def _run_dir_setting() -> str:
    """The run (or sweep) folder as the command line set it, for naming it in an error before Hydra made it."""
    key = "hydra.sweep.dir=" if {"-m", "--multirun"} & set(sys.argv) else "hydra.run.dir="
    given = [a for a in sys.argv if a.startswith(key)]
    return given[-1] if given else f"{key[:-1]} (outputs/<date>/<time> by default)"


def search_space_argv(argv: list[str]) -> list[str]:
    """Hydra refuses sweep syntax on hydra.* keys, so `hydra.sweeper.params.KEY=SPACE` becomes the
    equivalent sweep override `KEY=SPACE`, which replaces KEY's entry in the search space."""
    prefix = "hydra.sweeper.params."
    return [a[len(prefix):] if a.startswith(prefix) else a for a in argv]


def cli() -> None:
    """`python -m sweep.train` and `sweep-train`: Hydra's own errors (an unknown group option or key, a bad
    override) come back here to be said in one line, with secrets masked."""
    sys.argv = search_space_argv(sys.argv)
    register_resolvers()
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing its multi-line report
    try:
        main()
    except KeyboardInterrupt:  # before a run started (composing the config), or in a sweep's own handling
        exit_with("interrupted", EXIT_INTERRUPTED)
    except Exception as e:
        line = hydra_error(e) or (resource_problem(e, _run_dir_setting()) if isinstance(e, OSError) else None)
        if line is None:
            raise
        exit_with(line)
