"""Demo step: JPEGs in class folders -> image shards -> a tiny CNN trained through the Loader."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, ImageDraw

from datafuel.loaders import Loader, ShardSet
from datafuel.vision import build_image_shards, loader_transform, normalize_on_device

from ._demo import DemoContext

CLASSES = ("circles", "squares", "stripes")


def _draw(label: int, rng: np.random.Generator) -> Image.Image:
    """A class-coloured shape per class on a noisy background, 64-200 px, any aspect."""
    w, h = (int(v) for v in rng.integers(64, 201, size=2))
    bg = np.clip(rng.normal(rng.uniform(60, 190), 25, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(bg)
    draw = ImageDraw.Draw(img)
    hue = np.roll(np.array([220, 50, 40]), label)  # each class has its own colour family
    colour = tuple(int(c) for c in np.clip(hue + rng.integers(-30, 31, size=3), 0, 255))
    s = min(w, h)
    x, y = int(rng.integers(0, w - s // 2)), int(rng.integers(0, h - s // 2))
    if label == 0:
        draw.ellipse((x, y, x + s // 2, y + s // 2), fill=colour)
    elif label == 1:
        draw.rectangle((x, y, x + s // 2, y + s // 2), fill=colour)
    else:
        step = max(4, s // 8)
        for k in range(0, w + h, 2 * step):
            draw.line((k, 0, k - h, h), fill=colour, width=step)
    return img


def write_sample_images(root: Path, per_class: int, seed: int) -> int:
    """Deterministic ImageFolder tree: JPEGs, plus one grayscale and one CMYK file."""
    rng = np.random.default_rng(seed)
    n = 0
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = _draw(label, rng)
            if label == 0 and i == 0:
                img = img.convert("L")  # grayscale JPEG
            elif label == 1 and i == 0:
                img = img.convert("CMYK")  # CMYK JPEG
            img.save(root / name / f"{name}_{i:03d}.jpg", "JPEG", quality=90)
            n += 1
    return n


def run(ctx: DemoContext) -> None:
    src, out = ctx.workdir / "images-src", ctx.workdir / "images"
    n = write_sample_images(src, per_class=30, seed=ctx.seed)
    summary = build_image_shards(src, out, fractions=(0.8, 0.2, 0.0), seed=ctx.seed)
    ctx.say(
        f"wrote {n} JPEGs (one grayscale, one CMYK) in {len(CLASSES)} class folders; "
        f"built shards: {summary['counts']} -> {out}"
    )
    train, val = ShardSet(out / "train"), ShardSet(out / "val")
    torch.manual_seed(ctx.seed)
    model = torch.nn.Sequential(  # a tiny CNN on 48x48 uint8 crops, normalised in the model
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, len(CLASSES)),
    )
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
