"""JPEG -> RandomResizedCrop(224) + flip: datafuel vs a torchvision-style Pillow pipeline.

Same encoded files, same cores, one process:

  (a) decode-only with Pillow on all cores (Image.open(...).load(): the libjpeg-turbo limit)
  (b) torchvision-style ``Dataset`` (Pillow decode, convert("RGB"), crop, resize BILINEAR to
      224, flip, to uint8 tensor) + ``torch.utils.data.DataLoader(num_workers=N)``;
      torchvision is not installed, so its transform is written out inline, as it does it
  (c) datafuel CPU backend (native batch path: region JPEG decode, DCT scaling, resize, pack in
      one GIL-free call per batch; c4: the per-image path, pillow-simd resize) through
      ``datafuel.loaders.Loader(num_workers=N)``; (c2) the same transform with
      ``threads=N`` (a pool inside each batch) under ``Loader(num_workers=1)``; (c3) with
      ``processes=N`` (worker processes, no GIL between images) under ``Loader(num_workers=2)``
  (d) datafuel DALI backend on the CPU (``device_id=None``) through the same Loader
  (e) where CUDA is present: the DALI backend on the GPU (nvJPEG, ``device="mixed"``),
      images delivered to the GPU by ``Loader(device="cuda")``
  (b-stock) with ``--stock-pillow``: (b) again in a separate interpreter whose PIL is stock
      Pillow from PyPI (a venv over this one), i.e. what a torchvision user runs today;
      its rounds alternate with the others

  (c1) the native path on one thread (the base of the scaling figure), and the machine's
      own ceiling: N one-thread processes at once over one alone (no GIL, nothing shared),
      and one beside a busy pure-Python process (the convoy ratio's ceiling)

on two image sets: ImageNet-sized (~500x375) and large (1920x1080) JPEGs (smooth
gradients, shapes and noise, quality 90). Prints images/s medians and the ratios the
targets are stated in: (c)/(b) >= 1.5 and (c)/(a) >= 0.8 on ~500x375, (c)/(a) > 1 on
large images.

    python3 benchmarks/bench_vision.py            # ~3 minutes on 2 cores
    python3 benchmarks/bench_vision.py --quick    # ~1 minute
    python3 benchmarks/bench_vision.py --stock-pillow   # also (b) on stock Pillow
"""

from __future__ import annotations

import argparse
import gc
import io
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image, features

from datafuel.loaders import BatchInfo, Loader, ShardSet, ShardWriter
from datafuel.vision import IMAGE_FIELDS as FIELDS
from datafuel.vision import (
    dali_available,
    dali_unavailable_reason,
    loader_transform,
    region_decode_available,
)

SIZE = 224


# -- data ------------------------------------------------------------------------------
def make_jpeg(width: int, height: int, rng: np.random.Generator) -> bytes:
    """Smooth gradients, a few filled shapes and sensor-like noise: photo-like entropy."""
    sw, sh = max(8, width // 8), max(8, height // 8)  # draw small, upscale: smooth and fast
    y, x = np.mgrid[0:sh, 0:sw].astype(np.float32) * 8
    f = rng.uniform(0.002, 0.02, size=6)
    base = np.stack(
        [
            128 + 90 * np.sin(x * f[0] + y * f[1] + rng.uniform(0, 6)),
            128 + 90 * np.sin(x * f[2] - y * f[3] + rng.uniform(0, 6)),
            128 + 90 * np.cos(x * f[4] + y * f[5] + rng.uniform(0, 6)),
        ],
        axis=-1,
    )
    for _ in range(6):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rx, ry = rng.uniform(0.03, 0.2) * width, rng.uniform(0.03, 0.2) * height
        base[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1] = rng.uniform(0, 255, size=3)
    small = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    img = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC)).astype(np.int16)
    ty, tx = int(rng.integers(0, 64)), int(rng.integers(0, 64))
    reps = (-(-height // 256) + 1, -(-width // 256) + 1, 1)
    img += np.tile(_NOISE, reps)[ty : ty + height, tx : tx + width]
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


_NOISE = np.random.default_rng(123).normal(0, 11, (256, 256, 3)).round().astype(np.int16)


def make_set(n: int, sizes: list[tuple[int, int]], seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [make_jpeg(*sizes[i % len(sizes)], rng) for i in range(n)]


def write_set(directory: Path, data: list[bytes]) -> ShardSet:
    labels = np.arange(len(data), dtype=np.int64) % 10
    with ShardWriter(directory, FIELDS) as w:
        w.write({"image": data, "label": labels})
    return ShardSet(directory)


# -- (a) decode only ----------------------------------------------------------------------
def decode_only(data: list[bytes], threads: int) -> float:
    def one(b: bytes) -> None:
        with Image.open(io.BytesIO(b)) as im:
            im.load()

    t0 = time.perf_counter()
    if threads == 1:
        for b in data:
            one(b)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in pool.map(one, data, chunksize=8):
                pass
    return len(data) / (time.perf_counter() - t0)


# -- (b) torchvision-style Dataset + DataLoader ----------------------------------------------
class TorchvisionStyle(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """ImageFolder's pil_loader + RandomResizedCrop(224) + RandomHorizontalFlip + PILToTensor."""

    def __init__(self, data: list[bytes], labels: np.ndarray) -> None:
        self.data, self.labels = data, labels
        self.scale, self.ratio = (0.08, 1.0), (3 / 4, 4 / 3)

    def __len__(self) -> int:
        return len(self.data)

    def get_params(self, width: int, height: int) -> tuple[int, int, int, int]:
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif in_ratio > max(self.ratio):
            h, w = height, round(height * max(self.ratio))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.open(io.BytesIO(self.data[i]))
        img = img.convert("RGB")  # torchvision's pil_loader
        top, left, h, w = self.get_params(*img.size)
        img = img.crop((left, top, left + w, top + h)).resize(
            (SIZE, SIZE), Image.Resampling.BILINEAR
        )
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = torch.from_numpy(np.asarray(img).copy())  # PILToTensor (HWC here, like ours)
        return arr, int(self.labels[i])


def peer_loader(
    data: list[bytes], labels: np.ndarray, batch: int, workers: int
) -> torch.utils.data.DataLoader:
    """(b): the torchvision-style Dataset under the DataLoader settings a tuned user picks."""
    return torch.utils.data.DataLoader(
        TorchvisionStyle(data, labels),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=True,
        prefetch_factor=4,
    )


def epoch_rate(loader: object, n: int) -> float:
    t0 = time.perf_counter()
    seen = 0
    for batch in loader:  # type: ignore[attr-defined]
        images = batch["image"] if isinstance(batch, dict) else batch[0]
        seen += images.shape[0]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    if seen != n:
        raise RuntimeError(f"saw {seen} images, expected {n}")
    return n / dt


# -- (b-stock): the same peer under stock Pillow, in its own interpreter ---------------------
STOCK_VENV = Path(tempfile.gettempdir()) / "datafuel-bench-stock-pillow"


def stock_pillow_python() -> Path:
    """A venv over this interpreter's packages whose own PIL is stock Pillow (made once)."""
    py = STOCK_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run(
            [sys.executable, "-m", "venv", "--system-site-packages", str(STOCK_VENV)], check=True
        )
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "pillow"],
            check=True,
        )
    return py


def peer_main(directory: Path, workers: int, batch: int) -> None:
    """Child-process side of (b-stock): one warm-up epoch, one timed epoch, print the rate."""
    files = sorted(directory.glob("*.jpg"))
    data = [f.read_bytes() for f in files]
    labels = np.arange(len(data)) % 10
    torch.set_num_threads(1)
    loader = peer_loader(data, labels, batch, workers)
    epoch_rate(loader, len(data))
    print(f"{PIL.__version__} {epoch_rate(loader, len(data))}")


def stock_rate(py: Path, directory: Path, workers: int, batch: int) -> float:
    out = subprocess.run(
        [
            str(py),
            __file__,
            "--peer-dir",
            str(directory),
            "--workers",
            str(workers),
            "--batch",
            str(batch),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[-1])


# -- runner ----------------------------------------------------------------------------------
def ceiling_main(directory: Path, seconds: float, batch: int) -> None:
    """Child side of machine_ceiling: the native path on one thread, no loader threads."""
    torch.set_num_threads(1)
    ds = ShardSet(directory)
    one = loader_transform(ds, "cpu", train=True, size=SIZE, threads=1)
    loader = Loader(ds, batch, seed=0, num_workers=0, transform=one)
    for _ in loader:  # warm-up epoch: page cache, first allocations
        pass
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for b in loader:
            n += len(b["image"])
    print(n / (time.perf_counter() - t0))


def machine_ceiling(
    directory: Path, copies: int, seconds: float, batch: int
) -> tuple[float, float]:
    """What ``copies`` cores give this kernel at best: the summed img/s of ``copies``
    separate processes, each decoding on one thread with no GIL or memory shared,
    over the img/s of one process alone. The 2-thread / 1-thread scaling of the
    native path cannot exceed it: on this 2-vCPU VM the two vCPUs share a physical
    core's execution units (SIMD-heavy code loses ~40% when both run).

    Also returns one such process's img/s beside a pure-Python busy *process* (no GIL
    shared) over its img/s alone: the most a one-thread image path can keep beside a
    training loop on the other core, whatever it does about the GIL (the convoy
    ratio's ceiling with a pool of cores - 1)."""

    def run(k: int, busy: bool = False) -> float:
        cmd = [sys.executable, __file__, "--ceiling-dir", str(directory), "--batch", str(batch)]
        cmd += ["--ceiling-seconds", str(seconds)]
        spin = [
            sys.executable,
            "-c",
            "import time\nend = time.time() + 60\nwhile time.time() < end: pass",
        ]
        hog = subprocess.Popen(spin) if busy else None
        try:
            procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(k)]
            outs = [p.communicate()[0] for p in procs]
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        return sum(float(o.strip().splitlines()[-1]) for o in outs)

    alone = run(1)
    return run(copies) / alone, run(1, busy=True) / alone


def measure(rounds: int, methods: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Warm each method once, then run them interleaved ``rounds`` times."""
    for fn in methods.values():
        fn()
    rates: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(rounds):
        for k, fn in methods.items():
            rates[k].append(fn())
    return rates


def cpu_cost(data: list[bytes], labels: np.ndarray, ds: ShardSet, rounds: int) -> dict[str, float]:
    """Single-thread CPU milliseconds per image (process time: robust on a shared machine)."""
    tv = TorchvisionStyle(data, labels)
    cpu_t = loader_transform(ds, "cpu", train=True, size=SIZE)
    n = len(data)

    def ours() -> None:
        for s in range(0, n, 32):
            idx = np.arange(s, min(n, s + 32))
            cpu_t(ds.gather(idx), BatchInfo(indices=idx, epoch=0, seed=0, batch_index=0))

    def decode() -> None:
        for b in data:
            with Image.open(io.BytesIO(b)) as im:
                im.load()

    jobs = {
        "(a) decode only": decode,
        "(b) torchvision-style __getitem__": lambda: [tv[i] for i in range(n)],
        "(c) datafuel CPU transform": ours,
    }
    best = {k: math.inf for k in jobs}
    for _ in range(rounds + 1):
        for k, fn in jobs.items():
            t0 = time.process_time()
            fn()
            best[k] = min(best[k], (time.process_time() - t0) / n * 1e3)
    return best


def print_set(
    label: str,
    data: list[bytes],
    rounds: int,
    workers: int,
    rates: dict[str, list[float]],
    med: dict[str, float],
    cost: dict[str, float],
) -> None:
    """The figures of one image set: rates, per-core costs and the ratios of the targets."""
    n = len(data)
    print(
        f"\n{label}: {n} JPEGs, {sum(map(len, data)) / n / 1024:.0f} KiB mean, {rounds} rounds, {workers} workers"
    )
    for k, v in rates.items():
        spread = f"[{min(v):.0f}..{max(v):.0f}]"
        print(f"  {k:36s} {med[k]:8.0f} images/s   {spread}")
    print("  single-thread CPU cost (best of rounds, process time):")
    for k, v in cost.items():
        print(f"    {k:34s} {v:6.2f} ms/image")
    a1, b1, c1 = cost.values()
    print(f"    per-core ratios: (c) vs (b) {b1 / c1:.2f}x, (c) vs (a) {a1 / c1:.2f}x")
    c = med["(c) datafuel CPU (native batch)"]
    print(f"  ratio (c)/(b) = {c / med['(b) torchvision-style DataLoader']:.2f}x")
    print(
        f"  ratio (c4)/(b) = {med['(c4) per-image path (native=False)'] / med['(b) torchvision-style DataLoader']:.2f}x"
    )
    print(
        f"  native scaling, the default path on {workers} cores over one thread: (c)/(c1) = "
        f"{c / med['(c1) native, 1 thread']:.2f}x; one batch's pool only, (c2)/(c1) = "
        f"{med['(c2) same, 1 worker x N threads'] / med['(c1) native, 1 thread']:.2f}x"
    )
    print(f"  ratio (c)/(a) = {c / med['(a) decode only, Pillow']:.2f}x")
    if "ceiling" in med:
        print(
            f"  machine ceiling: {workers} one-thread processes at once / one alone = "
            f"{med['ceiling']:.2f}x (no GIL, nothing shared: the most {workers} cores give)"
        )
        print(
            f"  machine ceiling: one beside a busy Python process / alone = "
            f"{med['ceiling beside busy']:.2f} (the convoy ratio's ceiling for a 1-thread path)"
        )
    if "(b-stock) same peer, stock Pillow" in med:
        print(f"  ratio (c)/(b-stock) = {c / med['(b-stock) same peer, stock Pillow']:.2f}x")
    if "(e) datafuel DALI on the GPU (nvJPEG)" in med:
        e = med["(e) datafuel DALI on the GPU (nvJPEG)"]
        print(
            f"  ratio (e)/(b) = {e / med['(b) torchvision-style DataLoader']:.2f}x, (e)/(c) = {e / c:.2f}x"
        )
    if "(d) datafuel DALI on CPU" in med:
        print(
            f"  ratio (d)/(b) = {med['(d) datafuel DALI on CPU'] / med['(b) torchvision-style DataLoader']:.2f}x"
        )


def bench_set(
    label: str,
    data: list[bytes],
    root: Path,
    rounds: int,
    workers: int,
    batch: int,
    stock_py: Path | None = None,
) -> dict[str, float]:
    """Every method on the same bytes; ``batch`` small enough for >= 6 batches an epoch, so that
    batch-parallel loaders are not measured on their epoch tail (one batch left, one core busy)."""
    ds = write_set(root / label, data)
    n = len(data)
    labels = np.arange(n) % 10
    cost = cpu_cost(data, labels, ds, rounds)
    # held in a list so it can be dropped (and its worker processes stopped) before DALI runs
    tv = [peer_loader(data, labels, batch, workers)]
    cpu_t = loader_transform(ds, "cpu", train=True, size=SIZE)
    df = Loader(ds, batch, seed=0, num_workers=workers, prefetch=4, transform=cpu_t)
    # the same transform with its own thread pool per batch, fed by a single loader worker
    pooled = loader_transform(ds, "cpu", train=True, size=SIZE, threads=workers)
    df2 = Loader(ds, batch, seed=0, num_workers=1, prefetch=4, transform=pooled)
    # the same transform in worker processes (no GIL between images), fed by 2 loader threads
    procs = loader_transform(ds, "cpu", train=True, size=SIZE, processes=workers)
    df3 = Loader(ds, batch, seed=0, num_workers=2, prefetch=4, transform=procs)
    # the per-image path (Pillow's resize per image, Python around each), and the native
    # path on one thread (for the 2-thread / 1-thread scaling)
    py_t = loader_transform(ds, "cpu", train=True, size=SIZE, native=False)
    df4 = Loader(ds, batch, seed=0, num_workers=workers, prefetch=4, transform=py_t)
    one_t = loader_transform(ds, "cpu", train=True, size=SIZE, threads=1)
    df5 = Loader(ds, batch, seed=0, num_workers=1, prefetch=4, transform=one_t)
    methods: dict[str, Callable[[], float]] = {
        "(a) decode only, Pillow": lambda: decode_only(data, workers),
        "(a1) decode only, 1 thread": lambda: decode_only(data, 1),
        "(b) torchvision-style DataLoader": lambda: epoch_rate(tv[0], n),
        "(c) datafuel CPU (native batch)": lambda: epoch_rate(df, n),
        "(c2) same, 1 worker x N threads": lambda: epoch_rate(df2, n),
        "(c3) same, N worker processes": lambda: epoch_rate(df3, n),
        "(c4) per-image path (native=False)": lambda: epoch_rate(df4, n),
        "(c1) native, 1 thread": lambda: epoch_rate(df5, n),
    }
    if stock_py is not None:
        files = root / f"{label}-files".replace(" ", "_")
        files.mkdir(parents=True, exist_ok=True)
        for i, b in enumerate(data):
            (files / f"{i:06d}.jpg").write_bytes(b)
        methods["(b-stock) same peer, stock Pillow"] = lambda: stock_rate(
            stock_py, files, workers, batch
        )
    rates = measure(rounds, methods)
    procs.close()
    tv.clear()  # stop its worker processes before DALI starts threads
    gc.collect()
    if dali_available():
        dali_t = loader_transform(ds, "dali", train=True, size=SIZE, batch_size=batch, device="cpu")
        dl = Loader(ds, batch, seed=0, num_workers=1, prefetch=2, transform=dali_t)
        rates.update(measure(rounds, {"(d) datafuel DALI on CPU": lambda: epoch_rate(dl, n)}))
        if torch.cuda.is_available():  # nvJPEG: images decoded on the GPU, delivered there
            gpu_t = loader_transform(
                ds, "dali", train=True, size=SIZE, batch_size=batch, device="mixed"
            )
            gl = Loader(
                ds, batch, seed=0, num_workers=2, prefetch=2, device="cuda", transform=gpu_t
            )
            rates.update(
                measure(
                    rounds, {"(e) datafuel DALI on the GPU (nvJPEG)": lambda: epoch_rate(gl, n)}
                )
            )
    else:
        print(f"  (d) skipped: {dali_unavailable_reason()}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    ceilings = [machine_ceiling(ds.directory, workers, 2.0, batch) for _ in range(rounds)]
    med["ceiling"] = statistics.median(c[0] for c in ceilings)
    med["ceiling beside busy"] = statistics.median(c[1] for c in ceilings)
    print_set(label, data, rounds, workers, rates, med, cost)
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and rounds (~1 minute)")
    ap.add_argument("--workers", type=int, default=2, help="threads / worker processes per method")
    ap.add_argument(
        "--stock-pillow",
        action="store_true",
        help="also run (b) on stock Pillow (makes a venv once)",
    )
    ap.add_argument(
        "--images", type=int, help="~500x375 images in the first set (large: a fifth of it)"
    )
    ap.add_argument("--peer-dir", type=Path, help=argparse.SUPPRESS)  # child side of --stock-pillow
    ap.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--ceiling-dir", type=Path, help=argparse.SUPPRESS)  # machine_ceiling child
    ap.add_argument("--ceiling-seconds", type=float, default=2.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ceiling_dir is not None:
        ceiling_main(args.ceiling_dir, args.ceiling_seconds, args.batch)
        return 0
    if args.peer_dir is not None:
        peer_main(args.peer_dir, args.workers, args.batch)
        return 0
    stock_py = stock_pillow_python() if args.stock_pillow else None
    if stock_py is not None:
        version = subprocess.run(
            [str(stock_py), "-c", "import PIL; print(PIL.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        )
        print(f"(b-stock) interpreter {stock_py}: PIL {version.stdout.strip()}")
    n_mid, n_large, rounds = (192, 48, 3) if args.quick else (512, 96, 5)
    if args.images:
        n_mid, n_large = args.images, max(8, args.images // 5)
    print(
        f"PIL {PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}), torch {torch.__version__}, "
        f"{os.cpu_count()} cores, python {sys.version.split()[0]}, JPEG region decoder "
        f"{'built' if region_decode_available() else 'NOT built: whole-image Pillow decode'}"
    )
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-vision-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        mid = make_set(n_mid, [(500, 375), (375, 500), (500, 333), (480, 360)], seed=0)
        large = make_set(n_large, [(1920, 1080), (1080, 1920)], seed=1)
        print(f"generated {n_mid} + {n_large} JPEGs in {time.perf_counter() - t0:.1f} s")
        bench_set(
            "ImageNet-sized ~500x375", mid, root, rounds, args.workers, batch=32, stock_py=stock_py
        )
        bench_set("large 1920x1080", large, root, rounds, args.workers, batch=8, stock_py=stock_py)
    return 0


if __name__ == "__main__":
    sys.exit(main())
