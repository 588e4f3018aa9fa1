"""Demo step: BPE token shards from the shipped corpus, semi-synthetic resampling, a tiny LM."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from datafuel import build
from datafuel.loaders import Loader, ShardSet
from datafuel.synthetic import format_report

from .._context import DemoContext
from .._corpus import sample_corpus_path
from .._models import TinyLM

SEQ_LEN = 64  # tokens per training window (the loader hands out SEQ_LEN + 1)
BATCH = 8  # windows per source per step: 8 original + 8 resampled
TRAIN_STEPS = 40


def _windows(directory: str, seed: int) -> Iterator[torch.Tensor]:
    """Endless int64 (BATCH, SEQ_LEN + 1) token windows from the training-loop Loader."""
    loader = Loader(directory, BATCH, seq_len=SEQ_LEN, seed=seed, num_workers=1, drop_last=True)
    while True:
        for batch in loader:
            yield batch["tokens"]


def run(ctx: DemoContext) -> None:
    root = ctx.workdir / "text"
    s = build.text(
        [sample_corpus_path()], root, vocab_size=512, seed=ctx.seed, shard_bytes=64 << 10
    )
    docs, tokens = s["counts"], s["tokens"]
    ctx.say(
        f"datafuel build text chronicles.jsonl --vocab-size 512: {s['corpus']['documents']} documents "
        f"-> train {docs['train']} docs / {tokens['train']:,} tokens, val {tokens['val']:,}, "
        f"test {tokens['test']:,} tokens ({s['token_dtype']}, BPE fitted on train only, "
        f"{s['seconds']['total']:.2f} s)"
    )
    resampled = root / "train-resampled"
    report = build.resample(root / "train", resampled, seed=ctx.seed, report_tokens=20_000)[
        "report"
    ]
    ctx.say("datafuel resample train --prior ngram:")
    for line in format_report(report).splitlines():
        ctx.say(line)

    # a tiny LM on original + resampled windows through the loader
    vocab = int(ShardSet(root / "train").metadata["vocab_size"])
    torch.manual_seed(ctx.seed)
    model = TinyLM(vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    orig = _windows(str(root / "train"), ctx.seed)
    semi = _windows(str(resampled), ctx.seed + 1)
    losses = []
    for _step in range(TRAIN_STEPS):
        w = torch.cat([next(orig), next(semi)])
        logits = model(w[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), w[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    val = ShardSet(root / "val").token_stream("tokens")
    starts = np.arange(0, val.num_windows(SEQ_LEN + 1), SEQ_LEN)[:64]
    with torch.no_grad():
        vw = torch.from_numpy(val.windows(starts, SEQ_LEN + 1).astype(np.int64))
        vloss = float(
            torch.nn.functional.cross_entropy(
                model(vw[:, :-1]).reshape(-1, vocab), vw[:, 1:].reshape(-1)
            )
        )
    ctx.say(
        f"tiny GRU LM, {TRAIN_STEPS} steps of {BATCH} original + {BATCH} resampled windows of {SEQ_LEN + 1} "
        f"tokens via datafuel.loaders.Loader: train loss {losses[0]:.2f} -> {np.mean(losses[-5:]):.2f}, "
        f"val loss {vloss:.2f} (uniform would be {np.log(vocab):.2f})"
    )
    ctx.results["text_dir"] = str(root / "train")
    ctx.results["text"] = {"root": str(root), "resampled": str(resampled)}
