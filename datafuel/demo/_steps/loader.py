"""Demo step: write shards, train through the Loader (rows and token windows), profile it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from datafuel import build
from datafuel.errors import ConfigError, DatafuelError
from datafuel.loaders import Loader, ShardSet, fixed, ragged, write_shards
from datafuel.loaders._plot import check_matplotlib

from .._context import DemoContext


def _shard_sets(value: Any, found: list[Path]) -> None:
    """Shard-set directories that earlier demo steps left in ``ctx.results``."""
    if isinstance(value, dict):
        for v in value.values():
            _shard_sets(v, found)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _shard_sets(v, found)
    elif isinstance(value, (str, Path)):
        p = Path(value)
        if not (p / "manifest.json").is_file() and (p / "train" / "manifest.json").is_file():
            p = p / "train"  # a `datafuel build` output directory
        if (p / "manifest.json").is_file() and p not in found:
            found.append(p)


def _has_matplotlib() -> bool:
    """Whether the profile plot can be drawn (matplotlib is an optional extra)."""
    try:
        check_matplotlib()
    except ConfigError:
        return False
    return True


def _train_rows(ctx: DemoContext) -> Path:
    rng = np.random.default_rng(ctx.seed)
    n, d = 4096, 16
    w_true = rng.normal(size=d).astype(np.float32)
    x = rng.normal(size=(n, d)).astype(np.float32)  # float32: what the model consumes
    y = (x @ w_true + 0.01 * rng.normal(size=n)).astype(np.float32)
    out = ctx.workdir / "loader-rows"
    write_shards(
        out,
        fields={"x": fixed("float32", (d,)), "y": fixed("float32")},
        shard_bytes=64 << 10,
        x=x,
        y=y,
    )
    torch.manual_seed(ctx.seed)
    model = torch.nn.Linear(d, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = Loader(out, 256, seed=ctx.seed)
    losses = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    ctx.say(
        f"rows: {n} x {d} float32 in {ShardSet(out).num_shards} shards; linear model, 3 epochs through "
        f"Loader(batch_size=256): loss {losses[0]:.3f} -> {losses[-1]:.5f}"
    )
    ctx.say(f"  {loader.stats()}")
    return out


def _train_tokens(ctx: DemoContext) -> Path:
    # a tiny deterministic "language" (next token = (5 t + 3) mod 64) in 64 documents
    rng = np.random.default_rng(ctx.seed)
    docs = []
    for _ in range(64):
        t = int(rng.integers(0, 64))
        doc = []
        for _ in range(int(rng.integers(200, 400))):
            doc.append(t)
            t = (5 * t + 3) % 64
        docs.append(np.array(doc, np.uint16))  # uint16: vocabulary < 65,535 ids
    out = ctx.workdir / "loader-tokens"
    write_shards(out, fields={"tokens": ragged("uint16")}, tokens=docs, shard_bytes=8 << 10)
    torch.manual_seed(ctx.seed)
    model = torch.nn.Sequential(torch.nn.Embedding(64, 32), torch.nn.Linear(32, 64))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    loader = Loader(out, 32, seq_len=64, seed=ctx.seed)
    losses = []
    resumed_at = None
    for epoch in range(2):
        loader.set_epoch(epoch)
        for batch in loader:
            w = batch["tokens"]  # int64 (32, 65): widened from the uint16 shards
            logits = model(w[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 64), w[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        if epoch == 0:
            resumed_at = loader.state_dict()
    ctx.say(
        f"tokens: {sum(len(d) for d in docs)} tokens in {len(docs)} documents; bigram LM on "
        f"Loader(seq_len=64): loss {losses[0]:.2f} -> {losses[-1]:.3f} over {len(losses)} batches"
    )
    ctx.say(f"  state after epoch 0 (JSON, resumable): {resumed_at}")
    return out


def run(ctx: DemoContext) -> None:
    rows = _train_rows(ctx)
    tokens = _train_tokens(ctx)
    # a step that holds the GIL, as a real loop's Python does: thread workers share it
    plot = ctx.workdir / "profile.png" if _has_matplotlib() else None
    prof = build.profile(
        str(tokens), batch_size=32, seq_len=64, step_ms=5, step_kind="gil", batches=200, plot=plot
    )
    ctx.say(
        f"datafuel profile {tokens.name} --seq-len 64 --step-ms 5 --step-kind gil --batches 200: "
        f"{prof['samples_per_s']:,.0f} samples/s, starvation {prof['starvation']:.3f}; "
        f"bottleneck {prof['bottleneck']}: {prof['advice']}"
    )
    if plot is None:
        ctx.say("  no profile.png: matplotlib is not installed (pip install 'datafuel[plot]')")
    else:
        ctx.say(f"  --plot {plot}: the loop's heartbeat, throughput and each worker's stages")
    prof = build.profile(str(rows), batch_size=256, step_ms=0, epochs=2)
    ctx.say(
        f"datafuel profile {rows.name} --step-ms 0: {prof['samples_per_s']:,.0f} samples/s, "
        f"{prof['bytes_per_s'] / 1e6:,.0f} MB/s"
    )
    earlier: list[Path] = []
    _shard_sets(ctx.results, earlier)
    for path in earlier[:4]:
        ds = ShardSet(path)
        kinds = {n: f.kind for n, f in ds.fields.items()}
        opts: dict[str, Any] = {"batch_size": 64, "batches": 20}
        if "bytes" in kinds.values():
            opts.update(decode="cpu", size=128)
        elif kinds and all(k == "ragged" for k in kinds.values()):
            opts.update(seq_len=128, token_field=next(iter(kinds)))
        try:
            r = build.profile(str(path), **opts)
        except DatafuelError as exc:
            ctx.say(f"profile {path}: not profiled: {exc}")
            continue
        ctx.say(
            f"profile {path.relative_to(ctx.workdir) if path.is_relative_to(ctx.workdir) else path}: "
            f"{r['samples_per_s']:,.0f} samples/s, {r['bytes_per_s'] / 1e6:,.1f} MB/s"
        )
    ctx.results["loader"] = {"rows": str(rows), "tokens": str(tokens)}
