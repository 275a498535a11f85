"""The spirals of pytorch_loop.py, trained by PyTorch Lightning; sweep's callback reports and prunes.

    pip install 'sweep[lightning]'
    python examples/lightning_loop.py --multirun
"""

import hydra
import lightning
import torch
from omegaconf import DictConfig
from torch import nn

from pytorch_loop import spirals
from sweep.lightning import PruningCallback

# Hydra 1.3 needs version_base=None to keep its working directory and warnings as 1.4 has them; 1.4 wants it gone.
HYDRA_DEFAULTS = {"version_base": None} if hydra.__version__.startswith("1.3") else {}


class Classifier(lightning.LightningModule):
    def __init__(self, width: int, lr: float):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


@hydra.main(config_path="conf", config_name="lightning_loop", **HYDRA_DEFAULTS)
def main(cfg: DictConfig) -> float:
    lightning.seed_everything(cfg.seed, verbose=False)
    x, y = spirals(1200, seed=0)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:1000], y[:1000]), batch_size=cfg.batch_size,
                                        shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[1000:], y[1000:]), batch_size=200)
    trainer = lightning.Trainer(max_epochs=cfg.epochs, callbacks=[PruningCallback(monitor="val_acc")],
                                logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu", devices=1)
    trainer.fit(Classifier(cfg.width, cfg.lr), train, val)
    return trainer.callback_metrics["val_acc"].item()


if __name__ == "__main__":
    main()
