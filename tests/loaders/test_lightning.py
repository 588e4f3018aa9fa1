"""Lightning drives the Loader as it drives a DataLoader: fit, validate, mid-epoch resume.

Lightning (2.x) checkpoints the state of any train loader that has ``state_dict`` /
``load_state_dict`` and restores it on ``fit(ckpt_path=...)``; the resumed run must see
exactly the batches (sample ids) the uninterrupted run saw after that step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from loader_helpers import write_rows

from datafuel.loaders import Batch, Loader

pl = pytest.importorskip("lightning.pytorch", reason="lightning is not installed (dev extra)")

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Lightning's advice (workers, logging)
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),  # Lightning 2.6 on torch 2.13 pytree
]


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(3, 1)
        self.seen: list[list[int]] = []
        self.val_batches = 0

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x, idx = batch  # unpacks in the order of fields=("x", "idx")
        assert isinstance(batch, Batch) and batch["x"] is x
        self.seen.append(idx.tolist())
        return self.net(x).pow(2).mean()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.val_batches += 1
        self.log("val_loss", self.net(batch["x"]).pow(2).mean())

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(tmp: Path, **kw: Any) -> Any:
    return pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp,
        **kw,
    )


def loaders(rows: Path) -> tuple[Loader, Loader]:
    train = Loader(rows, 8, seed=3, fields=("x", "idx"), num_workers=2)
    val = Loader(rows, 16, shuffle=False, fields=("x", "idx"), num_workers=1)
    return train, val


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("pl") / "set")  # 103 rows: 13 batches of 8


def test_fit_validate_and_resume_mid_epoch(rows: Path, tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpt"
    every = pl.callbacks.ModelCheckpoint(dirpath=ckpts, every_n_train_steps=5, save_top_k=-1)
    model = Regressor()
    train, val = loaders(rows)
    t = trainer(tmp_path, callbacks=[every])
    t.fit(model, train, val)
    per_epoch = len(train)
    assert len(model.seen) == 2 * per_epoch
    assert model.val_batches == 2 * len(val)
    for e in range(2):  # each epoch a permutation of every row, a new one per epoch
        epoch = [i for b in model.seen[e * per_epoch : (e + 1) * per_epoch] for i in b]
        assert sorted(epoch) == list(range(103))
    assert model.seen[:per_epoch] != model.seen[per_epoch:]
    metrics = t.validate(model, val, verbose=False)
    assert "val_loss" in metrics[0]

    for step, name in ((5, "epoch=0-step=5.ckpt"), (20, "epoch=1-step=20.ckpt")):
        resumed = Regressor()
        train2, val2 = loaders(rows)
        trainer(tmp_path / f"r{step}").fit(resumed, train2, val2, ckpt_path=ckpts / name)
        assert resumed.seen == model.seen[step:], f"resumed from step {step}"
