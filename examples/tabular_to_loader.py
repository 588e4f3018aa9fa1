"""Tabular data to GPU batches with no leakage: split, fit on train, shard, load.

    python3 examples/tabular_to_loader.py

Uses the house-price sample shipped with datafuel (missing values and one absurd
$999,000,000 price).
"""

import tempfile
from importlib.resources import files
from pathlib import Path

import pyarrow.csv as pacsv
import torch

import datafuel
from datafuel.clean import DropSparseRows, KNNImputer, Winsorizer
from datafuel.demo import TabularMLP  # Linear -> ReLU -> Linear(1)
from datafuel.loaders import Loader, write_shards
from datafuel.scale import StandardScaler

table = pacsv.read_csv(files("datafuel") / "data" / "houses.csv")
features = [c for c in table.column_names if c not in ("id", "price", "neighborhood")]

# 1. split BEFORE anything is fitted; 'by' would keep groups (e.g. a user id) together
parts = datafuel.split(table, fractions=(0.8, 0.1, 0.1), seed=0)

# 2. fit every statistic on train only; the recipe is JSON, applied unchanged to val/test
recipe = datafuel.Recipe(
    [
        DropSparseRows(max_missing_ratio=0.5),
        KNNImputer(n_neighbors=5),
        Winsorizer(0.01, 0.99),
        StandardScaler(),
    ],
    target_steps=[Winsorizer(0.01, 0.99)],  # caps the $999M price at a train quantile
).fit(parts.train.select(features), parts.train.column("price").to_numpy(zero_copy_only=False))

out = Path(tempfile.mkdtemp(prefix="datafuel-example-"))
recipe.save(out / "recipe.json")
for name, part in parts.items():
    x, y, _kept = recipe.transform_rows(
        part.select(features), part.column("price").to_numpy(zero_copy_only=False)
    )
    # float32: what the model consumes; the writer refuses NaN/inf outright
    write_shards(out / name, x=x.astype("float32"), y=y.astype("float32"))

# 3. train: a plain for-loop over a prefetching loader (device="cuda" on a GPU machine)
loader = Loader(out / "train", batch_size=128, shuffle=True, seed=0)
model = TabularMLP(len(features), hidden=32)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
y_scale = 1e5  # prices in units of $100k keep the loss well conditioned
for epoch in range(3):
    for batch in loader:
        loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"] / y_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"epoch {epoch}: last batch loss {loss.item():.4f}")
print(loader.stats())  # starvation: how much of the loop was spent waiting for data
print(f"recipe, splits and shards in {out}")
