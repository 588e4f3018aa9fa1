"""A 3-source token mixture (60% web, 25% code, 15% books): throughput and smoothness.

    python3 benchmarks/bench_mixture.py [--quick]

Same three token sets for every contender (uint16, windows of T + 1 tokens starting
every T tokens):

(a) ``Loader({"web": ..., "code": ..., "books": ...}, weights=..., seq_len=T)``, batches
    of B from ``num_workers=2`` worker processes;
(b) LitData ``CombinedStreamingDataset`` over the same windows written with
    ``litdata.optimize`` (each item ``{"tokens", "src"}``, 16 MB chunks), iterated item
    by item in this process (no DataLoader);
(c) Mosaic Streaming (mosaicml-streaming, imported by ``_remote_peers._import_streaming``
    with stand-ins for transformers/torchvision, which are not installed; the compression
    modules it imports were already installed, nothing else was needed): each source's
    windows in MDS (``streaming.MDSWriter`` via ``_remote_peers.write_mosaic``: ``tokens``
    ``ndarray:uint16:513``, ``src`` ``int64``, 16 MB shards, no compression), read with
    ``StreamingDataset(streams=[Stream(local=dir, proportion=w), ...], batch_size=B,
    shuffle=True)`` from the local folders only (no ``remote``, nothing downloaded) and
    iterated item by item in this process like (b) (no DataLoader, so no workers).
    Its epoch is all three sets' windows, each source's share chosen exactly
    (``proportion x epoch``, some code windows repeated); each timed round is a new
    epoch, its shuffle computed at ``iter()``. Mosaic opens the shard file for every
    sample (``MDSReader.get_sample_data``), most of its time per sample here. Its
    default ``py1e`` shuffle shifts each sample of a shard by a uniform draw from one
    range per shard, clipped at the epoch's ends, so with one or two shards per source
    (as here: 4 to 16 MB a source) a source's density is not flat over the epoch and
    windows of 1,000 drift from the weights (at the --quick sizes: 111; with 1 MB shards
    31, with ``shuffle_algo="py1s"`` 25; a uniform shuffle of the same epoch 27).

Figures: samples/s (median of rounds after warm-up) and the worst deviation of any
source's count from ``1000 * weight`` over every window of 1,000 consecutive samples
(every start) of the first ``--samples`` samples, then datafuel / peer. A peer that
cannot run offline here says why and is left out. On a small shared machine (2 cores
here) the samples/s move by tens of percent from run to run.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
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


def windows(stream: np.ndarray) -> np.ndarray:
    """The ``(stream.size - 1) // T`` windows of ``T + 1`` tokens starting every ``T``
    tokens (a view), the same samples ``_LitItem`` cuts."""
    view = np.lib.stride_tricks.sliding_window_view(stream, T + 1)[::T]
    return view[: (stream.size - 1) // T]


def run_mosaic(root: Path, streams: dict[str, np.ndarray], n: int, rounds: int) -> Any:
    """Mosaic Streaming over the same windows, local MDS folders, in one process.

    Each source is written with ``streaming.MDSWriter`` (``_remote_peers.write_mosaic``:
    ``tokens`` ``ndarray:uint16:513``, ``src`` ``int64``, shards of up to 16 MB, no
    compression) and read with ``StreamingDataset(streams=[Stream(local=dir,
    proportion=w), ...], batch_size=B, shuffle=True, shuffle_seed=0)``: no ``remote``, so
    nothing is downloaded. ``streaming`` is imported by ``_remote_peers._import_streaming``.
    """
    try:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _remote_peers import _import_streaming, write_mosaic  # type: ignore[import-not-found]

        streaming = _import_streaming()
        from streaming.base.util import clean_stale_shared_memory
    except Exception as exc:  # a peer that does not import here is reported, not fatal
        return f"unavailable ({type(exc).__name__}: {exc})"
    try:
        mds = []
        for s, name in enumerate(NAMES):
            out = root / f"mosaic-{name}"
            win = windows(streams[name])
            rows = {"tokens": win, "src": np.full(len(win), s, np.int64)}
            write_mosaic(rows, str(out), 16 << 20, id_field=None)
            mds.append(streaming.Stream(local=str(out), proportion=WEIGHTS[name]))
        clean_stale_shared_memory()
        ds = streaming.StreamingDataset(streams=mds, batch_size=B, shuffle=True, shuffle_seed=0)
        if ds.num_samples < n:
            return f"failed (an epoch is {ds.num_samples} samples, fewer than {n})"
        src = []
        for item in ds:  # also the warm-up
            src.append(int(item["src"]))
            if len(src) == n:
                break
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            it = iter(ds)  # a new epoch; it stops the previous one's background threads
            got = sum(1 for _item in itertools.islice(it, n))
            rates.append(got / (time.perf_counter() - t0))
        for _item in it:  # the rest of the last epoch, so its threads end before rmtree
            pass
        return statistics.median(rates), worst_deviation(np.array(src))
    except Exception as exc:  # a peer's failure is reported, not fatal
        return f"failed ({type(exc).__name__}: {str(exc)[:200]})"


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
        peers = (
            ("(b) LitData CombinedStreamingDataset", "LitData", run_litdata),
            ("(c) Mosaic Streaming StreamingDataset", "Mosaic", run_mosaic),
        )
        for label, short, run in peers:
            got = run(root, streams, n, rounds)
            if isinstance(got, tuple):
                print(
                    f"{label}: {got[0]:,.0f} samples/s, worst deviation in windows of 1,000: "
                    f"{got[1]:.2f}; datafuel / {short} = {rate / got[0]:.1f}x"
                )
            else:
                print(f"{label}: {got}")


if __name__ == "__main__":
    main()
