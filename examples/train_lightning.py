"""Train with PyTorch Lightning on datafuel shards: the Loader goes where a DataLoader went.

    python3 examples/train_lightning.py

Lightning reads the Loader's DataLoader attributes (sampler, batch_sampler, dataset),
calls set_epoch each epoch and saves the loader's state in mid-epoch checkpoints, so
fit(ckpt_path=...) resumes with exactly the batches the interrupted run had next.
"""

import tempfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch

from datafuel.demo import TabularMLP  # Linear -> ReLU -> Linear(1)
from datafuel.loaders import Loader, write_shards

# a noisy linear target over 8 features; float32 is what the model computes in
rng = np.random.default_rng(0)
x = rng.normal(size=(4096, 8)).astype(np.float32)
y = (x @ rng.normal(size=8) + 0.1 * rng.normal(size=4096)).astype(np.float32)
out = Path(tempfile.mkdtemp(prefix="datafuel-lightning-"))
write_shards(out / "train", x=x[:3584], y=y[:3584])
write_shards(out / "val", x=x[3584:], y=y[3584:])

# fields=("x", "y") fixes the order in which a batch unpacks: x, y = batch
train = Loader(out / "train", batch_size=128, seed=0, fields=("x", "y"))
val = Loader(out / "val", batch_size=256, shuffle=False, fields=("x", "y"))


class Regressor(pl.LightningModule):  # Lightning's own API is a subclass
    def __init__(self) -> None:
        super().__init__()
        self.net = TabularMLP(8)

    def training_step(self, batch, batch_idx):
        x, y = batch  # a datafuel Batch unpacks its tensors; batch["x"] works too
        return torch.nn.functional.mse_loss(self.net(x).squeeze(1), y)

    def validation_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.net(batch["x"]).squeeze(1), batch["y"])
        self.log("val_loss", loss)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def make_trainer(**kw):
    return pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=out,
        **kw,
    )


# a checkpoint every 10 steps: step 10 is in the middle of epoch 0 (28 batches an epoch)
ckpt = pl.callbacks.ModelCheckpoint(dirpath=out / "ckpt", every_n_train_steps=10, save_top_k=-1)
model = Regressor()
trainer = make_trainer(callbacks=[ckpt])
trainer.fit(model, train, val)
print("validate:", trainer.validate(model, val, verbose=False)[0])

# resume as if the run had been killed after step 10: the loader continues mid-epoch
resumed = make_trainer()
resumed.fit(
    Regressor(),
    Loader(out / "train", 128, seed=0, fields=("x", "y")),
    val,
    ckpt_path=out / "ckpt" / "epoch=0-step=10.ckpt",
)
print(f"resumed at step 10, finished at step {resumed.global_step} of {trainer.global_step}")
print(train.stats())
