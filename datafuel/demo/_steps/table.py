"""Demo step: build table shards (ingested listings or the shipped sample), then train on them."""

from __future__ import annotations

import json
from importlib.resources import as_file, files

import numpy as np
import torch

from datafuel import build
from datafuel.loaders import ShardSet

from .._context import DemoContext
from .._models import TabularMLP


def run(ctx: DemoContext) -> None:
    out = ctx.workdir / "table"
    ingest_dir = ctx.results.get("ingest_dir")
    with as_file(files("datafuel") / "data" / "houses.csv") as sample:
        source = str(ingest_dir) if ingest_dir else str(sample)
        ctx.say(
            f"input: {'ingested Parquet parts in ' + source if ingest_dir else 'shipped sample houses.csv'}"
        )
        summary = build.table(source, out, target="price", drop=["id"], seed=ctx.seed)
    rows = summary["counts"]
    ctx.say(
        f"split {summary['split']['method']} {summary['split']['fractions']}: train {rows['train']}, "
        f"val {rows['val']}, test {rows['test']} rows; {len(summary['columns'])} features"
    )
    recipe = json.loads((out / "recipe.json").read_text())
    for entry in summary["fit_report"]:
        if entry.get("rows_dropped"):
            ctx.say(
                f"dropped {entry['rows_dropped']} train rows missing more than half their values"
            )
        if "values_imputed" in entry:
            ctx.say(f"{entry['step']}: imputed {entry['values_imputed']} missing train values")
    for st in recipe["target_steps"]:
        hi = st["fitted"]["upper_caps_"]["data"][0]
        lo = st["fitted"]["lower_caps_"]["data"][0]
        rep = next(e for e in summary["fit_report"] if e.get("target"))
        ctx.say(
            f"target price capped to [{lo:,.0f}, {hi:,.0f}] (caps fitted on train): "
            f"{rep['values_clipped']} train prices clipped; the largest, "
            f"{rep['max_before']:,.0f}, now trains as {hi:,.0f}"
        )
    ctx.say(
        f"recipe.json fingerprint {summary['recipe_fingerprint'][:12]}...; fitted on train rows only"
    )

    train = ShardSet(out / "train", verify=True)
    torch.manual_seed(ctx.seed)
    ys = np.concatenate([b["y"] for b in train.iter_batches(1024)]).astype(np.float64)
    y_mu, y_sd = float(ys.mean()), float(ys.std()) or 1.0  # standardise the target for SGD
    d = train.metadata["columns"].__len__()
    model = TabularMLP(d, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for _epoch in range(5):
        for batch in train.iter_batches(128):
            xb = torch.from_numpy(np.ascontiguousarray(batch["x"]))
            yb = (torch.from_numpy(np.asarray(batch["y"], np.float32)) - y_mu) / y_sd
            loss = torch.nn.functional.mse_loss(model(xb).squeeze(1), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    ctx.say(
        f"trained a 2-layer MLP on the train shards for 5 epochs: standardised MSE "
        f"{np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}"
    )
    ctx.results["table_dir"] = out / "train"
