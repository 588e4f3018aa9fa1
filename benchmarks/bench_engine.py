"""``datafuel build images``: local engine vs Ray engine (2 workers) vs Ray engine (1 worker).

Same ImageFolder tree of small JPEGs (default 20,000 files, ~100x75, 3 classes), same
arguments, output checked byte-identical across engines, in one process:

  (a) ``engine="local"``: the local build (a thread pool over all cores)
  (b) ``engine=RayEngine()`` on a local Ray instance with ``num_cpus=2`` (2 workers)
  (c) the same with ``num_cpus=1`` (1 worker)

Ray's start-up (``ray.init``) is timed separately and not counted in the build times;
each Ray configuration gets one warm-up build (workers start and import datafuel)
before the timed ones. Prints the median wall time per configuration, files/s, and
the ratios local/ray and ray(1)/ray(2), then a note on scaling with nodes.

``--kind text`` measures ``build text`` (a generated ``.jsonl`` corpus of ``--text-mb``
MB, tokenizer given, so only encoding and writing are timed) instead.

    python3 benchmarks/bench_engine.py            # ~3-4 minutes on 2 cores
    python3 benchmarks/bench_engine.py --quick    # ~1 minute
"""

from __future__ import annotations

import argparse
import filecmp
import io
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _timing import median_time
from PIL import Image

from datafuel.build import images as build_images
from datafuel.build import text as build_text
from datafuel.demo import write_corpus
from datafuel.engine import RayEngine
from datafuel.engine._ray import import_ray
from datafuel.text import train_bpe


# -- data --------------------------------------------------------------------------------
def make_images(root: Path, n: int, seed: int = 0) -> int:
    """``n`` small photo-like JPEGs (gradient + noise, q85) in 3 class folders; returns bytes."""
    rng = np.random.default_rng(seed)
    total = 0
    y, x = np.mgrid[0:75, 0:100].astype(np.float32)
    for c in ("bird", "cat", "dog"):
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = rng.uniform(0.02, 0.2, size=3)
        img = np.stack(
            [128 + 100 * np.sin(x * f[0] + y * f[1]), 128 + 100 * np.cos(y * f[2]), x + y], axis=2
        )
        img += rng.normal(0, 8, size=img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=85)
        data = buf.getvalue()
        (root / ("bird", "cat", "dog")[i % 3] / f"{i:06d}.jpg").write_bytes(data)
        total += len(data)
    return total


def make_text(root: Path, mb: float) -> tuple[list[Path], Path]:
    """A generated .jsonl corpus of about ``mb`` MB and a BPE tokenizer trained on a bit of it."""
    root.mkdir(parents=True, exist_ok=True)
    files, size, k = [], 0, 0
    while size < mb * 1e6:
        p = root / f"part-{k:03d}.jsonl"
        size += write_corpus(p, 4000, seed=k)
        files.append(p)
        k += 1
    sample = [line for line in files[0].read_text().splitlines()[:2000]]
    tok = train_bpe(sample, vocab_size=4096)
    tok_path = root.parent / "tokenizer.json"
    tok.save(tok_path)
    return files, tok_path


# -- timing --------------------------------------------------------------------------------
def median_time_into(fn: Callable[[Path], Any], out_root: Path, runs: int) -> tuple[float, Path]:
    """Median seconds of ``fn(out)`` over ``runs`` runs, each into a fresh ``out_root-<r>``;
    and the last run's output directory."""
    outs = iter([out_root.with_name(f"{out_root.name}-{r}") for r in range(runs)])

    def run() -> Path:
        out = next(outs)
        fn(out)
        return out

    return median_time(run, runs)


def same_tree(a: Path, b: Path, ignore: tuple[str, ...] = ()) -> bool:
    names = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    other = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    if names != other:
        return False
    return all(n in ignore or filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller input, fewer runs")
    ap.add_argument("--kind", choices=["images", "text"], default="images")
    ap.add_argument("--images", type=int, default=None, help="number of images (20000)")
    ap.add_argument("--text-mb", type=float, default=None, help="corpus size in MB (100)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs per configuration (3)")
    ap.add_argument("--workdir", default=None, help="where to generate data (a temp dir)")
    args = ap.parse_args()
    ray = import_ray()
    runs = args.runs or (2 if args.quick else 3)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        if args.kind == "images":
            n = args.images or (4000 if args.quick else 20000)
            nbytes = make_images(work / "src", n)
            what = f"{n:,} JPEGs ({nbytes / 1e6:.1f} MB, ~100x75)"

            def build(out: Path, engine: Any) -> Any:
                return build_images(work / "src", out, engine=engine, shard_bytes=16 << 20)

            unit, count, ignore = "files", n, ()
        else:
            mb = args.text_mb or (20 if args.quick else 100)
            files, tok_path = make_text(work / "corpus", mb)
            nbytes = sum(p.stat().st_size for p in files)
            what = f"{nbytes / 1e6:.0f} MB of .jsonl text ({len(files)} files)"

            def build(out: Path, engine: Any) -> Any:
                return build_text(
                    files, out, tokenizer=tok_path, engine=engine, shard_bytes=16 << 20
                )

            unit, count, ignore = "MB", nbytes / 1e6, (".build-text.json",)
        print(
            f"data: {what}, generated in {time.perf_counter() - t0:.1f} s; "
            f"{os.cpu_count()} CPUs; {runs} timed runs per configuration (median)"
        )

        results: dict[str, float] = {}
        outs: dict[str, Path] = {}
        results["local"], outs["local"] = median_time_into(
            lambda o: build(o, "local"), work / "local", runs
        )
        for cpus in (2, 1):
            t = time.perf_counter()
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            started = time.perf_counter() - t
            try:
                engine = RayEngine()
                build(work / f"warm-{cpus}", engine)  # workers start, import datafuel
                name = f"ray x{cpus}"
                results[name], outs[name] = median_time_into(
                    lambda o, e=engine: build(o, e), work / f"ray{cpus}", runs
                )
                print(f"  (ray.init with num_cpus={cpus}: {started:.1f} s, not counted)")
            finally:
                ray.shutdown()

        print(f"\n{'engine':<10} {'median s':>9} {unit + '/s':>10}  identical to local")
        for name, sec in results.items():
            same = same_tree(outs["local"], outs[name], ignore)
            print(f"{name:<10} {sec:9.2f} {count / sec:10.1f}  {'yes' if same else 'NO'}")
        print(
            f"\nratios: local / ray x2 = {results['local'] / results['ray x2']:.2f} "
            f"(>1: Ray faster), ray x1 / ray x2 = {results['ray x1'] / results['ray x2']:.2f} "
            "(2.0 = linear in workers)"
        )
        print(
            "\nscaling note: unit and write tasks are independent, so on N nodes of c cores "
            "the per-record\nwork runs on N*c workers; the driver only reads the listing "
            "(images) or the documents (text),\ncuts shards from row sizes and writes the "
            "manifest. On this 2-core machine the driver, the\nraylet and the object store "
            "share the cores with the workers, which bounds what 2 workers can\nshow; "
            "the 1 vs 2 worker ratio is the per-node scaling to expect while the shared "
            "filesystem\nand the driver (text reading, ~100+ MB/s per core) keep up."
        )


if __name__ == "__main__":
    main()
