"""PyTorch Lightning: a callback that reports each validation to the sweep's trial and stops pruned runs.

    from sweep.lightning import PruningCallback
    trainer = lightning.Trainer(callbacks=[PruningCallback(monitor="val_acc")])
    trainer.fit(model, data)          # raises optuna.TrialPruned when the sweep's pruner says so

Outside a sweep the callback does nothing. Import it only where lightning is installed (pip install 'sweep[lightning]').
"""

from __future__ import annotations

import lightning.pytorch as pl

import sweep
from sweep.errors import UserError


class PruningCallback(pl.Callback):
    def __init__(self, monitor: str, trial=None) -> None:
        super().__init__()
        self.monitor = monitor
        self.trial = trial if trial is not None else sweep.trial()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:  # Lightning's two warm-up batches are not an epoch
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise UserError(f"PruningCallback(monitor={self.monitor!r}): the model logs no such metric; it logs "
                            f"{', '.join(sorted(trainer.callback_metrics)) or 'nothing'}")
        epoch = trainer.current_epoch + 1
        self.trial.report(float(value), epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
