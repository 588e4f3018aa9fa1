"""Near-duplicate detection: datafuel.dedup against datasketch and imagehash, same data, one run.

    python3 benchmarks/bench_dedup.py [--quick] [--docs N]

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
- builds: ``build text`` and ``build images`` with ``dedup="none"``, ``"exact"`` and
  ``"near"`` on the same inputs: the added seconds of each.

Medians of the runs; ratio = peer time / datafuel time.
"""

from __future__ import annotations

import argparse
import io
import statistics
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
    args = ap.parse_args()
    n = args.docs or (10_000 if args.quick else 50_000)
    runs = 1 if n >= 20_000 else 3
    text_section(n, runs)
    image_section(128 if args.quick else 256, 3)
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        build_section(Path(tmp), 2000 if args.quick else 5000, 64 if args.quick else 128, 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
