"""A 3-source token mixture (60% web, 25% code, 15% books): throughput and smoothness.

    python3 benchmarks/bench_mixture.py [--quick]

Same three token sets for every contender (uint16, windows of T + 1 tokens):

(a) ``Loader({"web": ..., "code": ..., "books": ...}, weights=..., seq_len=T)``;
(b) LitData ``CombinedStreamingDataset`` over the same windows written with
    ``litdata.optimize`` (each item ``{"tokens", "src"}``), iterated in one process;
(c) Mosaic Streaming ``Stream(proportion=...)``s, when it imports here.

Figures: samples/s (median of rounds after warm-up) and the worst deviation of any
source's count from ``1000 * weight`` over every window of 1,000 consecutive samples
(every start) of the first ``--samples`` samples. A peer that cannot run offline
here says why and is left out.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from datafuel.loaders import Loader, ShardWriter, ragged

T = 512
B = 32
WEIGHTS = {"web": 0.6, "code": 0.25, "books": 0.15}
NAMES = sorted(WEIGHTS)


def write_sets(root: Path, tokens: dict[str, int]) -> dict[str, np.ndarray]:
    """One token shard set per source (documents of 50..2000 tokens); the streams too."""
    streams = {}
    for k, (name, n) in enumerate(tokens.items()):
        rng = np.random.default_rng(k)
        docs, total = [], 0
        while total < n:
            d = rng.integers(0, 50_000, size=int(rng.integers(50, 2000)), dtype=np.uint16)
            docs.append(d)
            total += d.size
        with ShardWriter(root / name, {"tokens": ragged("uint16")}, shard_bytes=8 << 20) as w:
            for s in range(0, len(docs), 256):
                w.write({"tokens": docs[s : s + 256]})
        streams[name] = np.concatenate(docs)
    return streams


def worst_deviation(src: np.ndarray, window: int = 1000) -> float:
    worst = 0.0
    for s, name in enumerate(NAMES):
        c = np.concatenate([[0], np.cumsum(src == s)])
        worst = max(worst, float(np.abs(c[window:] - c[:-window] - window * WEIGHTS[name]).max()))
    return worst


def run_datafuel(root: Path, n: int, rounds: int) -> tuple[float, float]:
    loader = Loader(
        {k: root / k for k in NAMES}, B, weights=WEIGHTS, seq_len=T, num_samples=n, num_workers=2
    )
    src = np.concatenate([b["source"].numpy() for b in loader])  # also the warm-up
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        got = sum(len(b["source"]) for b in loader)
        rates.append(got / (time.perf_counter() - t0))
    return statistics.median(rates), worst_deviation(src)


def run_litdata(root: Path, streams: dict[str, np.ndarray], n: int, rounds: int) -> Any:
    try:
        import litdata
        from litdata import CombinedStreamingDataset, StreamingDataset
    except ImportError as exc:
        return f"unavailable ({exc})"
    try:
        dirs = []
        for s, name in enumerate(NAMES):
            out = root / f"litdata-{name}"
            stream = streams[name]
            count = (stream.size - 1) // T
            litdata.optimize(
                fn=_LitItem(stream, s),
                inputs=list(range(count)),
                output_dir=str(out),
                chunk_bytes="16MB",
                num_workers=1,
                mode="overwrite",
            )
            dirs.append(str(out))
        datasets = [StreamingDataset(d, shuffle=True, seed=0) for d in dirs]
        combined = CombinedStreamingDataset(
            datasets, seed=0, weights=[WEIGHTS[k] for k in NAMES], iterate_over_all=False
        )
        src = []
        for item in combined:
            src.append(int(item["src"]))
            if len(src) == n:
                break
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            got = 0
            for _item in combined:
                got += 1
                if got == n:
                    break
            rates.append(got / (time.perf_counter() - t0))
        return statistics.median(rates), worst_deviation(np.array(src))
    except Exception as exc:  # a peer's failure is reported, not fatal
        return f"failed ({type(exc).__name__}: {str(exc)[:200]})"


class _LitItem:
    def __init__(self, stream: np.ndarray, src: int) -> None:
        self.stream, self.src = stream, src

    def __call__(self, k: int) -> dict[str, Any]:
        return {"tokens": self.stream[k * T : k * T + T + 1].copy(), "src": self.src}


def run_mosaic() -> str:
    try:
        import streaming  # noqa: F401
    except Exception as exc:
        # streaming.base.dataloader imports transformers (BatchEncoding); transformers
        # 5.x installed with --no-deps then needs safetensors>=0.8, which is not here
        return (
            f"unavailable ({type(exc).__name__}: {exc}; `import streaming` needs transformers, "
            "which needs safetensors>=0.8, not installed here)"
        )
    return "importable, but not wired into this benchmark yet"


def order_cost() -> float:
    """Microseconds per batch of B to compute the mixture's (source, sample, pass)."""
    from datafuel.loaders import Mixture

    m = Mixture({"web": 7_800, "code": 3_100, "books": 1_950}, WEIGHTS, seed=0)
    m.samples(np.arange(B))
    t0 = time.perf_counter()
    for start in range(0, 2_000 * B, B):
        m.samples(np.arange(start, start + B))
    return (time.perf_counter() - t0) / 2_000 * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=None)
    args = ap.parse_args()
    scale = 1 if args.quick else 4
    n = args.samples or 5_000 * scale
    rounds = 3 if args.quick else 5
    sizes = {"web": 2_000_000 * scale, "code": 800_000 * scale, "books": 500_000 * scale}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        streams = write_sets(root, sizes)
        print(f"3 token sets {sizes} (uint16), T={T}, B={B}, weights {WEIGHTS}, {n} samples")
        rate, dev = run_datafuel(root, n, rounds)
        print(
            f"(a) datafuel Loader mixture: {rate:,.0f} samples/s, worst deviation in windows of 1,000: {dev:.2f}"
            f" (the mixture order: {order_cost():.0f} us per batch of {B})"
        )
        lit = run_litdata(root, streams, n, rounds)
        if isinstance(lit, tuple):
            print(
                f"(b) LitData CombinedStreamingDataset: {lit[0]:,.0f} samples/s, worst deviation "
                f"in windows of 1,000: {lit[1]:.2f}; datafuel / LitData = {rate / lit[0]:.1f}x"
            )
        else:
            print(f"(b) LitData CombinedStreamingDataset: {lit}")
        print(f"(c) Mosaic Streaming: {run_mosaic()}")


if __name__ == "__main__":
    main()
