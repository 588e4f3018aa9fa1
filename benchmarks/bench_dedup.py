"""Near-duplicate detection: datafuel.dedup against datasketch and imagehash, same data, one run.

    python3 benchmarks/bench_dedup.py [--quick] [--docs N] [--hamming]

- text: N documents of ~2 KB (generated words; 10% of them edited copies of others),
  near-duplicate clusters at threshold 0.8, 128 permutations:
  ``datafuel.dedup.text_clusters(method="near")`` end to end (shingles, MinHash, LSH,
  verification, union-find; planted copies differ in 2 of 260 words, Jaccard >= 0.92)
  against datasketch's ``MinHash.bulk`` + ``MinHashLSH``
  (insert every signature, query every signature), the usual way to use it; both
  report the pairs found, and the recall of the planted pairs is printed for each.
  Target (issue 15): 50,000 documents under 60 s on 2 cores.
- images: pHash of the same JPEG bytes (scikit-learn's two sample photographs, cut
  into 256 crops) with ``datafuel.dedup.phash`` against ``imagehash.phash``.
- hamming: the pair search of ``dedup.hamming_pairs`` (all pairs of 64-bit pHashes within
  10 bits) over 100,000 and 300,000 random hashes (a few planted near copies): the native
  scan (``dedup._hamming``, threads over row ranges, GIL released) against the numpy
  approach it replaced (a ``2048 x n`` XOR block per step, the full square; reimplemented
  here, only at 100,000: 1.6 GB a block) and the tiled numpy fallback; pairs compared per
  second and the peak memory added (``ru_maxrss``), each run in a fresh process; with
  ``native/avx2`` and ``native/popcnt`` the kernels of CPUs without AVX-512 VPOPCNTDQ.
- builds: ``build text`` and ``build images`` with ``dedup="none"``, ``"exact"`` and
  ``"near"`` on the same inputs: the added seconds of each.

Medians of the runs; ratio = peer time / datafuel time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def corpus(n: int, seed: int) -> tuple[list[str], list[tuple[int, int]]]:
    """``n`` documents of 260 words (~2 KB); 10% are edited copies (planted pairs)."""
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i:06d}" for i in range(50000)])
    docs = [" ".join(vocab[rng.zipf(1.3, 260) % len(vocab)]) for _ in range(n)]
    planted = []
    for j in rng.choice(n, n // 10, replace=False):
        src = int(rng.integers(0, n))
        if src == j:
            continue
        words = docs[src].split()
        # replace 2 of the 260 words: up to 10 of the 256 word 5-grams change, Jaccard
        # 0.92 or more, above the 0.8 threshold
        for k in rng.choice(len(words), 2, replace=False):
            words[k] = f"edit{rng.integers(1 << 30)}"
        docs[j] = " ".join(words)
        planted.append((min(src, int(j)), max(src, int(j))))
    return docs, planted


def shingles(text: str) -> set[bytes]:
    w = text.split()
    return {" ".join(w[i : i + 5]).encode() for i in range(max(1, len(w) - 4))}


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def text_section(n: int, runs: int) -> None:
    from datafuel.dedup import text_clusters

    docs, planted = corpus(n, 0)
    t_ours, cl = timed(lambda: text_clusters(docs, "near", threshold=0.8, num_perm=128), runs)
    i, j, _ = cl.pairs
    ours = {(min(a, b), max(a, b)) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    same = {(a, b) for a, b in planted if cl.labels[a] == cl.labels[b]}
    print(
        f"text: {n} documents, {sum(map(len, docs)) / n / 1024:.1f} KiB mean, {len(planted)} planted pairs"
    )
    print(
        f"  datafuel text_clusters(near)   {t_ours:8.2f} s   pairs {len(ours):6d}   "
        f"planted recall {len(same) / max(1, len(planted)):.3f}   (target < 60 s at 50,000)"
    )
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print("  datasketch: not installed (pip install --no-deps datasketch)")
        return

    def peer() -> set[tuple[int, int]]:
        sets = [list(shingles(d)) for d in docs]
        mhs = MinHash.bulk(sets, num_perm=128)
        lsh = MinHashLSH(threshold=0.8, num_perm=128)
        for k, m in enumerate(mhs):
            lsh.insert(k, m)
        found = set()
        for k, m in enumerate(mhs):
            for other in lsh.query(m):
                if other != k:
                    found.add((min(k, other), max(k, other)))
        return found

    t_peer, theirs = timed(peer, 1)
    rec = len([p for p in planted if p in theirs]) / max(1, len(planted))
    print(
        f"  datasketch MinHashLSH          {t_peer:8.2f} s   pairs {len(theirs):6d}   "
        f"planted recall {rec:.3f}"
    )
    print(f"  ratio datasketch / datafuel    {t_peer / t_ours:8.1f}x")


def photo_crops(count: int) -> list[bytes]:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(1)
    out = []
    for k in range(count):
        img = load_sample_images().images[k % 2]
        h, w = img.shape[:2]
        y, x = int(rng.integers(0, h - 200)), int(rng.integers(0, w - 200))
        buf = io.BytesIO()
        Image.fromarray(img[y : y + 200, x : x + 200]).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def image_section(count: int, runs: int) -> None:
    from datafuel.dedup import phash

    data = photo_crops(count)
    t_ours, ours = timed(lambda: [phash(b) for b in data], runs)
    print(f"\nimages: pHash of {count} JPEG crops (200x200) of scikit-learn's sample photographs")
    print(f"  datafuel dedup.phash           {count / t_ours:8.0f} images/s")
    try:
        import imagehash
        from PIL import Image
    except ImportError:
        print("  imagehash: not installed (pip install --no-deps imagehash PyWavelets)")
        return
    t_peer, theirs = timed(lambda: [imagehash.phash(Image.open(io.BytesIO(b))) for b in data], runs)
    agree = sum(f"{a:016x}" == str(b) for a, b in zip(ours, theirs, strict=True)) / count
    print(
        f"  imagehash.phash                {count / t_peer:8.0f} images/s   same bits {agree:.1%}"
    )
    print(f"  ratio datafuel / imagehash     {t_peer / t_ours:8.2f}x")


def old_hamming_pairs(
    h: np.ndarray, max_distance: int, block: int = 2048
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``hamming_pairs`` as it was: a ``block x n`` XOR array a step, the whole square."""
    n = h.size
    out_i, out_j, out_d = [], [], []
    for s in range(0, n, block):
        d = np.bitwise_count(h[s : s + block, None] ^ h[None, :])
        ii, jj = np.nonzero(d <= max_distance)
        ii = ii + s
        keep = jj > ii
        out_i.append(ii[keep])
        out_j.append(jj[keep])
        out_d.append(d[ii[keep] - s, jj[keep]].astype(np.int64))
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)


def random_hashes(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    h = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    for k in range(1, 40):  # near copies at 0..12 bits
        h[n - k] = h[k] ^ np.uint64((1 << (k % 13)) - 1)
    return h


def hamming_child(impl: str, n: int) -> None:
    """One timed search in this (fresh) process: prints seconds, pairs, peak MB added."""
    from datafuel.dedup import _phash, hamming_pairs

    h = random_hashes(n)
    if impl == "fallback":
        _phash._hamming = None
    fn = (lambda: old_hamming_pairs(h, 10)) if impl == "old" else (lambda: hamming_pairs(h, 10))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    i, _, _ = fn()
    dt = time.perf_counter() - t0
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"s": dt, "pairs": int(i.size), "peak_mb": peak}))


def hamming_section(runs: int, sizes: tuple[int, ...] = (100_000, 300_000)) -> None:
    try:
        from datafuel.dedup import _hamming

        kernel = _hamming.kernel()
    except ImportError:
        kernel = "not built: the numpy fallback"
    cpus = len(os.sched_getaffinity(0))
    print(f"\nhamming: all pairs within 10 bits, {cpus} threads, kernel {kernel}")

    def child(impl: str, n: int) -> dict[str, float]:
        name, _, forced = impl.partition("/")  # native/popcnt: that kernel (if the CPU has it)
        env = {**os.environ, "DATAFUEL_HAMMING_KERNEL": forced} if forced else None
        out = subprocess.run(
            [sys.executable, __file__, "--hamming-child", name, str(n)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])

    natives = ("native",)
    if kernel in ("avx512vpopcntdq", "avx2"):  # what CPUs without those instructions get
        natives += (*(("native/avx2",) if kernel != "avx2" else ()), "native/popcnt")
    for n in sizes:
        base = None
        for impl in ("old", "fallback", *natives) if n <= 100_000 else natives:
            res = [child(impl, n) for _ in range(runs)]
            t = statistics.median(r["s"] for r in res)
            peak = statistics.median(r["peak_mb"] for r in res)
            rate = n * (n - 1) / 2 / t
            base = t if impl == "old" else base
            vs = f"   {base / t:6.1f}x the old" if base is not None and impl != "old" else ""
            print(
                f"  n={n:7d}  {impl:14s} {t:8.2f} s  {rate / 1e9:6.2f} G pairs/s  "
                f"peak +{peak:7.0f} MB  found {int(res[0]['pairs'])}{vs}"
            )


def build_section(root: Path, docs: int, images: int, runs: int) -> None:
    from PIL import Image

    from datafuel import build

    text_dir = root / "texts"
    text_dir.mkdir()
    texts, _ = corpus(docs, 2)
    (text_dir / "docs.jsonl").write_text(
        "".join('{"text": "' + t + '"}\n' for t in texts), encoding="utf-8"
    )
    img_dir = root / "images" / "a"
    img_dir.mkdir(parents=True)
    for k, b in enumerate(photo_crops(images)):
        Image.open(io.BytesIO(b)).save(img_dir / f"{k:05d}.jpg", quality=90)
    print(f"\nbuilds: build text ({docs} documents) and build images ({images} JPEGs), seconds")
    for name, run in (
        (
            "text",
            lambda out, d: build.text(
                [str(text_dir)], out, vocab_size=2000, dedup=d, engine="local"
            ),
        ),
        ("images", lambda out, d: build.images(str(root / "images"), out, dedup=d)),
    ):
        base = None
        for d in ("none", "exact", "near"):
            times = []
            for r in range(runs):
                out = root / f"out-{name}-{d}-{r}"
                t0 = time.perf_counter()
                run(str(out), d)
                times.append(time.perf_counter() - t0)
            t = statistics.median(times)
            base = t if base is None else base
            print(f"  build {name:6s} dedup={d:5s}  {t:7.2f} s   added {t - base:+6.2f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 documents, fewer images")
    ap.add_argument("--docs", type=int, help="documents in the text section")
    ap.add_argument("--hamming", action="store_true", help="only the Hamming pair search")
    ap.add_argument("--hamming-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hamming_child:
        hamming_child(args.hamming_child[0], int(args.hamming_child[1]))
        return 0
    if args.hamming:
        hamming_section(3)
        return 0
    n = args.docs or (10_000 if args.quick else 50_000)
    runs = 1 if n >= 20_000 else 3
    text_section(n, runs)
    image_section(128 if args.quick else 256, 3)
    hamming_section(1 if args.quick else 3, (100_000,) if args.quick else (100_000, 300_000))
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        build_section(Path(tmp), 2000 if args.quick else 5000, 64 if args.quick else 128, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
