"""Demo step: write a shard set, read it back, and train a tiny model on it."""

from __future__ import annotations

import numpy as np
import torch

from datafuel.loaders import ShardSet, fixed, write_shards

from ._demo import DemoContext


def run(ctx: DemoContext) -> None:
    rng = np.random.default_rng(ctx.seed)
    n, d = 4096, 16
    w_true = rng.normal(size=d).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)  # float32: what the model consumes
    y = (x @ w_true + 0.01 * rng.normal(size=n)).astype(np.float32)
    out = ctx.workdir / "synthetic-shards"
    m = write_shards(
        out,
        fields={"x": fixed("float32", (d,)), "y": fixed("float32")},
        shard_bytes=64 << 10,
        x=x,
        y=y,
    )
    ds = ShardSet(out, verify=True)
    ctx.say(
        f"wrote {m['total_rows']} rows in {ds.num_shards} shards ({ds.nbytes / 1024:.0f} KiB), checksums verified"
    )
    torch.manual_seed(ctx.seed)
    model = torch.nn.Linear(d, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _epoch in range(3):
        for batch in ds.iter_batches(256):
            xb, yb = torch.from_numpy(batch["x"]), torch.from_numpy(batch["y"])
            loss = torch.nn.functional.mse_loss(model(xb).squeeze(1), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    ctx.say(f"trained a linear model for 3 epochs: loss {losses[0]:.3f} -> {losses[-1]:.5f}")
