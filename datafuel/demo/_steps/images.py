"""Demo step: JPEGs in class folders -> image shards -> a tiny CNN trained through the Loader."""

from __future__ import annotations

import time

import numpy as np
import PIL
import torch

from datafuel import build
from datafuel.loaders import Loader, ShardSet
from datafuel.vision import loader_transform, normalize_on_device

from .._context import DemoContext
from .._images import IMAGE_CLASSES, write_sample_images
from .._models import TinyCNN


def run(ctx: DemoContext) -> None:
    src, out = ctx.workdir / "images-src", ctx.workdir / "images"
    n = write_sample_images(src, per_class=30, seed=ctx.seed)
    summary = build.images(src, out, fractions=(0.8, 0.2, 0.0), seed=ctx.seed)
    ctx.say(
        f"wrote {n} JPEGs (one grayscale, one CMYK) in {len(IMAGE_CLASSES)} class folders; "
        f"built shards: {summary['counts']} -> {out}"
    )
    train, val = ShardSet(out / "train"), ShardSet(out / "val")
    torch.manual_seed(ctx.seed)
    model = TinyCNN(len(IMAGE_CLASSES))  # on 48x48 uint8 crops, normalised on the device
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    transform = loader_transform(train, "cpu", train=True, size=48, seed=ctx.seed)
    ctx.say(f"augmentation: {transform.spec.describe()}")
    loader = Loader(train, 16, seed=ctx.seed, num_workers=2, transform=transform)
    seen, t0 = 0, time.perf_counter()
    epochs = 8
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        losses = []
        for batch in loader:
            logits = model(normalize_on_device(batch["image"]))
            loss = torch.nn.functional.cross_entropy(logits, batch["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            seen += len(batch["label"])
        if epoch in (0, epochs - 1):
            ctx.say(f"epoch {epoch}: mean loss {np.mean(losses):.3f}")
    rate = seen / (time.perf_counter() - t0)
    stats = loader.stats()
    model.eval()
    correct = 0
    eval_t = loader_transform(val, "cpu", train=False, size=48)
    with torch.no_grad(), Loader(val, 32, shuffle=False, transform=eval_t) as vl:
        for batch in vl:
            correct += int(
                (model(normalize_on_device(batch["image"])).argmax(1) == batch["label"]).sum()
            )
    ctx.say(
        f"trained {epochs} epochs at {rate:.0f} images/s (decode+augment+train, PIL {PIL.__version__}); "
        f"starvation {stats.starvation:.0%}; val accuracy {correct}/{len(val)}"
    )
    ctx.results["images_dir"] = str(out)
