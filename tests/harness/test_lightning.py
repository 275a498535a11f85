"""The Lightning callback, where lightning is installed (the test extra installs it)."""

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState
import pytest
import torch

from mlp import Recorder

lightning = pytest.importorskip("lightning")
from sweep.lightning import PruningCallback  # noqa: E402
from sweep.errors import UserError  # noqa: E402


class Tiny(lightning.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(2, 2)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(callback, epochs=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=g)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)
    trainer = lightning.Trainer(max_epochs=epochs, callbacks=[callback], logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Tiny(), data, data)
    return trainer


def test_the_callback_reports_each_epoch_and_prunes_when_told():
    trial = Recorder()
    trainer = _fit(PruningCallback(monitor="val_acc", trial=trial))
    assert [step for step, _ in trial.reports] == [1, 2, 3, 4]  # sanity-check batches are not reported
    assert trial.reports[-1][1] == pytest.approx(trainer.callback_metrics["val_acc"].item())
    pruned = Recorder(prune_at=2)
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        _fit(PruningCallback(monitor="val_acc", trial=pruned))
    assert [step for step, _ in pruned.reports] == [1, 2]


def test_a_metric_the_model_does_not_log_is_named():
    with pytest.raises(UserError, match="monitor='val_loss'.*val_acc"):
        _fit(PruningCallback(monitor="val_loss", trial=Recorder()), epochs=1)


def test_outside_a_sweep_the_callback_changes_nothing():
    trainer = _fit(PruningCallback(monitor="val_acc"), epochs=2)
    assert trainer.current_epoch == 2


@pytest.mark.slow
def test_the_lightning_example_sweeps_and_prunes(tmp_path):
    examples = Path(__file__).resolve().parents[2] / "examples"
    result = subprocess.run([sys.executable, str(examples / "lightning_loop.py"), "--multirun", "hydra.sweeper.n_trials=6",
                             "epochs=5", "hydra.sweeper.pruner.n_warmup_steps=1", "hydra.sweeper.report=false"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900, start_new_session=True)
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="spirals-lightning",
                              storage=f"sqlite:///{tmp_path}/multirun/studies/spirals-lightning.db")
    assert len(study.trials) == 6 and any(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)


def test_the_plain_pytorch_example_prunes_through_the_trial(tmp_path):
    from helpers import EXAMPLES, run_app

    result = run_app("--multirun", "hydra.sweeper.n_trials=8", "epochs=6", "hydra.sweeper.pruner.n_startup_trials=2",
                     "hydra.sweeper.pruner.n_warmup_steps=1", "hydra.sweeper.report=false", cwd=tmp_path,
                     script=EXAMPLES / "pytorch_loop.py")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="spirals", storage=f"sqlite:///{tmp_path}/multirun/studies/spirals.db")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["stop_reason"].endswith("by median") for t in pruned)
    assert all(len(t.intermediate_values) == 6 for t in study.trials if t.state == TrialState.COMPLETE)
    single = run_app("epochs=2", cwd=tmp_path, script=EXAMPLES / "pytorch_loop.py")  # outside a sweep: a stand-in
    assert single.returncode == 0, single.stderr
