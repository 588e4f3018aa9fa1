"""Starvation beside a simulated training step that sleeps, and one that holds the GIL.

    python3 benchmarks/bench_step.py [--quick]

A training loop holds the GIL while it runs Python (forward code, kernel launches);
``time.sleep`` does not, and so hides the contention between the loop and a loader's
threads, which a process-based loader never has. For each workload, the loop takes a
batch, then spends the step time either asleep or in a pure-Python busy loop
(``datafuel.loaders._step.simulated_step``); starvation is the share of the loop's wall
time spent waiting for the next batch (the same definition for both contenders).

Workloads and peers (same bytes on disk):

- tokens: 64 windows of 1024+1 uint16 tokens, 2 ms step: ``Loader(num_workers=2)`` vs
  ``DataLoader(num_workers=2)`` over a memmap ``Dataset``;
- tables: 256 rows of 64 float32 + an int64 label, 2 ms step: the same two;
- images: 32 ~500x375 JPEGs -> RandomResizedCrop(224) + flip, 40 ms step: the CPU
  transform (native batch path) under ``Loader(num_workers=2)`` vs the torchvision-style
  ``DataLoader(num_workers=2)`` of bench_vision.py.

Also the GIL probe of the image path: a pure-Python counter thread beside it; the free
share is the counter's rate against the counter alone, the convoy ratio the images/s
beside the counter over the images/s alone, for the native path (its pool at all cores,
and at cores - 1), the per-image path (``native=False``) and the peer.

Medians of several runs; the targets: starvation(gil) <= 1.5 x starvation(sleep) and
below the peer's for every workload; free share >= 0.95 and convoy ratio >= 0.9.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_loader import TableDataset, TokenWindowDataset, make_table, make_tokens
from bench_vision import make_set, peer_loader, write_set

from datafuel.loaders import Loader, ShardSet
from datafuel.loaders._step import simulated_step
from datafuel.vision import loader_transform
from datafuel.vision._cpu import available_cores

T = 1024


def starvation(make: Callable[[], Iterable[Any]], batches: int, step_s: float, kind: str) -> float:
    """Share of the loop's time spent waiting for batches (after one warm-up batch)."""
    it = iter(make())
    next(it)
    wait = 0.0
    t0 = time.perf_counter()
    for _ in range(batches):
        w0 = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - w0
        simulated_step(step_s, kind)
        del batch
    total = time.perf_counter() - t0
    return wait / total


def endless(make: Callable[[], Iterable[Any]]) -> Callable[[], Iterable[Any]]:
    def gen() -> Iterable[Any]:
        src = make()
        while True:
            yield from src

    return gen


def peer_loader_of(dataset: Any, batch: int) -> torch.utils.data.DataLoader:
    """The peer: DataLoader(num_workers=2) as a tuned user sets it up."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        prefetch_factor=4,
    )


def run_workload(
    name: str,
    ours: Callable[[], Iterable[Any]],
    peer: Callable[[], Iterable[Any]],
    batches: int,
    step_ms: float,
    rounds: int,
) -> None:
    res: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for who, make in (("datafuel", ours), ("DataLoader(2)", peer)):
            for kind in ("sleep", "gil"):
                res.setdefault((who, kind), []).append(
                    starvation(make, batches, step_ms / 1000, kind)
                )
    med = {k: statistics.median(v) for k, v in res.items()}
    print(f"\n{name}: {batches} batches, {step_ms:g} ms step, {rounds} rounds (median starvation)")
    for who in ("datafuel", "DataLoader(2)"):
        s, g = med[(who, "sleep")], med[(who, "gil")]
        print(f"  {who:14s} sleep {s:6.1%}   gil {g:6.1%}   gil/sleep {g / max(s, 1e-4):5.2f}")
    ours_g, peer_g = med[("datafuel", "gil")], med[("DataLoader(2)", "gil")]
    print(f"  datafuel gil vs peer gil: {ours_g:.1%} vs {peer_g:.1%}")


def with_counter(work: Callable[[], Any]) -> tuple[Any, float]:
    """``work()`` beside a pure-Python counter thread: its result and the counter's rate."""
    stop, n = threading.Event(), [0]

    def count() -> None:
        while not stop.is_set():
            n[0] += 1

    t = threading.Thread(target=count)
    t0 = time.perf_counter()
    t.start()
    result = work()
    stop.set()
    t.join()
    return result, n[0] / (time.perf_counter() - t0)


def counter_rate(seconds: float) -> float:
    return with_counter(lambda: time.sleep(seconds))[1]


def epoch_rate(loader: Iterable[Any]) -> float:
    t0 = time.perf_counter()
    n = 0
    for b in loader:
        n += (b["image"] if isinstance(b, dict) else b[0]).shape[0]
    return n / (time.perf_counter() - t0)


def beside_counter(loader: Iterable[Any]) -> tuple[float, float]:
    rate, count = with_counter(lambda: epoch_rate(loader))
    return float(rate), count


def gil_probe(ds: ShardSet, data: list[bytes], batch: int, rounds: int) -> None:
    cores = available_cores()
    idle = statistics.median(counter_rate(1.0) for _ in range(3))
    labels = np.arange(len(data)) % 10
    configs: dict[str, Callable[[], Any]] = {
        f"native, pool {cores} (all cores)": lambda: Loader(
            ds,
            batch,
            seed=0,
            num_workers=1,
            prefetch=4,
            transform=loader_transform(ds, "cpu", size=224, threads=cores),
        ),
        f"native, pool {max(1, cores - 1)} (a core left)": lambda: Loader(
            ds,
            batch,
            seed=0,
            num_workers=1,
            prefetch=4,
            transform=loader_transform(ds, "cpu", size=224, threads=max(1, cores - 1)),
        ),
        "per-image (native=False), 2 workers": lambda: Loader(
            ds,
            batch,
            seed=0,
            num_workers=2,
            prefetch=4,
            transform=loader_transform(ds, "cpu", size=224, native=False),
        ),
        "peer DataLoader(2) (processes)": lambda: peer_loader(data, labels, batch, 2),
    }
    print(f"\nGIL probe: images, batch {batch}, {cores} cores, counter alone {idle:,.0f}/s")
    for name, make in configs.items():
        loader = make()
        epoch_rate(loader)  # warm
        alone = statistics.median(epoch_rate(loader) for _ in range(rounds))
        # the counter alone is measured again between the rounds, next to the runs it is
        # compared with (one figure at the start drifted by up to 15% on this VM)
        pairs, alone_counts = [], []
        for _ in range(rounds):
            alone_counts.append(counter_rate(0.5))
            pairs.append(beside_counter(loader))
        alone_counts.append(counter_rate(0.5))
        busy = statistics.median(p[0] for p in pairs)
        free = statistics.median(p[1] for p in pairs) / statistics.median(alone_counts)
        print(
            f"  {name:38s} alone {alone:6.0f} img/s, beside {busy:6.0f} "
            f"(convoy {busy / alone:4.2f}), free share {free:4.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 3
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {available_cores()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-step-") as tmp:
        root = Path(tmp)
        flat, tok_dir = make_tokens(root, 4_000_000 if args.quick else 16_000_000)
        tok = ShardSet(tok_dir)
        run_workload(
            "tokens 64x1025",
            endless(lambda: Loader(tok, 64, seq_len=T, seed=0, num_workers=2, prefetch=4)),
            endless(lambda: peer_loader_of(TokenWindowDataset(flat), 64)),
            batches=60 if args.quick else 150,
            step_ms=2,
            rounds=rounds,
        )
        x_path, y_path, tab_dir = make_table(root, 200_000 if args.quick else 1_000_000)
        tab = ShardSet(tab_dir)
        run_workload(
            "tables 256 x 64 float32",
            endless(lambda: Loader(tab, 256, seed=0, num_workers=2, prefetch=4)),
            endless(lambda: peer_loader_of(TableDataset(x_path, y_path), 256)),
            batches=150 if args.quick else 400,
            step_ms=2,
            rounds=rounds,
        )
        data = make_set(256 if args.quick else 512, [(500, 375), (375, 500)], seed=0)
        ds = write_set(root / "images", data)
        labels = np.arange(len(data)) % 10
        run_workload(
            "images 32 x 224x224 (from ~500x375 JPEGs)",
            endless(
                lambda: Loader(
                    ds,
                    32,
                    seed=0,
                    num_workers=2,
                    prefetch=4,
                    transform=loader_transform(ds, "cpu", size=224),
                )
            ),
            endless(lambda: peer_loader(data, labels, 32, 2)),
            batches=24 if args.quick else 48,
            step_ms=40,
            rounds=rounds,
        )
        gil_probe(ds, data, 64, rounds)


if __name__ == "__main__":
    main()
