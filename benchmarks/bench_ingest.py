"""Benchmark: `datafuel.ingest` vs a naive sequential httpx loop, records/s.

The API is datafuel's local FakeAPI (cursor pagination, records under data.items,
nested objects) running in a *separate process* so the server does not share the
client's GIL. Two regimes: zero added latency (the client's own cost dominates) and
20 ms per request (a real API's round trip dominates).

Peers, measured in the same run:
- naive: httpx.Client, follow the cursor, keep every record in memory, flatten and
  write ONE Parquet file at the end (no checkpoint: a crash loses everything).
- datafuel: ingest() with its defaults (a Parquet part + fsync + atomic state per
  page, prefetching the next page while writing), plus two variants that show where
  the time goes: fsync=False, and prefetch=False.

Usage: python3 benchmarks/bench_ingest.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from datafuel.demo import FakeAPI
from datafuel.ingest import ingest, read_ingested


def make_records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "price": 100_000.0 + 17.5 * i,
            "sqft": 500 + i % 3000,
            "bedrooms": 1 + i % 6,
            "year_built": 1900 + i % 120,
            "location": {"lat": 47.0 + (i % 1000) / 1e4, "lon": -122.0 - (i % 977) / 1e4},
            "agent": {
                "name": f"agent-{i % 50}",
                "office": {"city": "Seattle", "zip": 98100 + i % 99},
            },
        }
        for i in range(n)
    ]


def _serve(n: int, page_size: int, latency: float, conn: Any, stop: Any) -> None:
    with FakeAPI(
        make_records(n), page_size=page_size, style="cursor", latency=latency, lifetime=3600
    ) as api:
        conn.send(api.url)
        stop.wait()


class Server:
    def __init__(self, n: int, page_size: int, latency: float) -> None:
        ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
        parent, child = ctx.Pipe()
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=_serve, args=(n, page_size, latency, child, self._stop), daemon=True
        )
        self._proc.start()
        self.url: str = parent.recv()

    def close(self) -> None:
        self._stop.set()
        self._proc.join(timeout=10)


def naive(url: str, out: Path) -> int:
    """What people write first: a loop, a list, one write at the end."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        row: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                row.update(flat(v, f"{prefix}{k}."))
            else:
                row[f"{prefix}{k}"] = v
        return row

    records: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(timeout=30) as client:
        while True:
            params = {"cursor": cursor} if cursor else {}
            body = client.get(url, params=params).json()
            records.extend(body["data"]["items"])
            cursor = body.get("next")
            if not cursor:
                break
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist([flat(r) for r in records]), out / "all.parquet")
    return len(records)


def run_datafuel(url: str, out: Path, **kw: Any) -> int:
    return ingest(url, out, paginate="cursor:next", records_path="data.items", **kw).records


def measure(
    peers: dict[str, Any], url: str, repeats: int, scratch: Path
) -> dict[str, tuple[float, int]]:
    """Median seconds per peer; peers run round-robin (ABCD ABCD ...) so load drift on a
    shared machine hits them alike. Round 0 is a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in peers}
    counts: dict[str, int] = {}
    for i in range(repeats + 1):
        for name, fn in peers.items():
            out = scratch / f"run-{i}"
            t0 = time.perf_counter()
            counts[name] = fn(url, out)
            dt = time.perf_counter() - t0
            if i:
                times[name].append(dt)
            shutil.rmtree(out)
    return {name: (statistics.median(t), counts[name]) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer pages and repeats")
    args = ap.parse_args()
    repeats = 3 if args.quick else 5
    page_size = 100
    regimes = [
        ("0 ms", 0.0, 60 if args.quick else 200),
        ("20 ms", 0.020, 20 if args.quick else 50),
    ]
    peers = {
        "naive httpx loop, one write at end": naive,
        "datafuel ingest (fsync + prefetch)": run_datafuel,
        "datafuel ingest, fsync=False": lambda u, o: run_datafuel(u, o, fsync=False),
        "datafuel ingest, prefetch=False": lambda u, o: run_datafuel(u, o, prefetch=False),
    }
    print(
        f"bench_ingest: {page_size} records/page, median of {repeats} interleaved runs after 1 warm-up "
        "round; server in its own process"
    )
    scratch = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        for label, latency, pages in regimes:
            n = pages * page_size
            server = Server(n, page_size, latency)
            try:
                # sanity: both produce the same rows
                a, b = scratch / "check-naive", scratch / "check-df"
                naive(server.url, a)
                run_datafuel(server.url, b)
                same = pq.read_table(a / "all.parquet").equals(read_ingested(b))
                shutil.rmtree(a)
                shutil.rmtree(b)
                print(
                    f"\nlatency {label}/request, {pages} pages, {n} records (same table from both: {same})"
                )
                results = measure(peers, server.url, repeats, scratch)
                base = None
                for name, (med, got) in results.items():
                    rate = got / med
                    base = base or rate
                    per_page = med / pages * 1e3
                    print(
                        f"  {name:<38} {rate:>10,.0f} rec/s  {per_page:6.2f} ms/page  "
                        f"x{rate / base:.2f} vs naive"
                    )
            finally:
                server.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
