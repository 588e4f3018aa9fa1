"""Remote shard sets: starvation, bytes fetched against Belady and LRU, and the peers.

    python3 benchmarks/bench_remote.py [--quick] [--rounds 3]

Everything reads from one moto S3 server on 127.0.0.1 behind the tests' fault proxy
(``tests/remote/conftest.py``: ``FaultProxy``) with 20 ms added to every response, in
one run, with the same cache limit (a third of the set, unless ``--limit-frac``):

(a) **starvation**: ``Loader("s3://…", cache_limit=…)`` beside a simulated 20 ms
    training step (``time.sleep``), 2 worker threads, 2 epochs; the loader's own
    starvation meter (time the loop waited in ``next()`` / wall time).
(b) **bytes fetched** by (a), from the proxy's byte counter (every response body sent
    to the client), against two simulations over the very same batches (this pass's
    files per batch, in order, with the same limit, every batch's files held together):
    Belady's rule (on a miss, evict the cached file whose next use is farthest) and
    LRU (evict the least recently used). Belady's rule is optimal for equal sizes and
    the usual yardstick with unequal ones.
(c) **peers**: LitData (``StreamingDataset`` over ``litdata.optimize`` output,
    ``max_cache_size`` = the same limit) and Mosaic Streaming (``cache_limit``) reading
    the same rows from the same server through the same proxy, each in its own format,
    when they run here (``benchmarks/_remote_peers.py``): samples/s beside the same
    step, and bytes fetched.

Figures are medians over ``--rounds`` rounds (a fresh cache each); ratios are against the
peer measured in the same round.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel.loaders import Loader, write_shards
from datafuel.loaders._sampler import shard_locality

ROOT = Path(__file__).resolve().parents[1]
STEP_S = 0.020
LATENCY_S = 0.020
#: a peer still reading after this many seconds is stopped there (its figures cover what it read)
PEER_DEADLINE_S = 120.0
_WORK: list[str | None] = [None]  # every file the run writes goes under this directory


def _conftest() -> Any:
    """The remote tests' moto server and fault proxy (one implementation, not a copy)."""
    spec = importlib.util.spec_from_file_location(
        "_remote_conftest", ROOT / "tests/remote/conftest.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


class Server:
    """moto on 127.0.0.1, a FaultProxy in front, env vars pointing obstore/boto3 at the proxy."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.moto.start()
        host, port = self.moto.get_host_and_port()
        self.proxy = _conftest().FaultProxy(host, port)
        os.environ.update(
            AWS_ENDPOINT_URL=self.proxy.endpoint,
            AWS_ACCESS_KEY_ID="benchkey",
            AWS_SECRET_ACCESS_KEY="benchsecret",
            AWS_REGION="us-east-1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        import boto3

        self.client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)

    def upload(self, local: Path, prefix: str) -> str:
        for p in sorted(local.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                key = f"{prefix}/{p.relative_to(local).as_posix()}"
                self.client.put_object(Bucket=self.bucket, Key=key, Body=p.read_bytes())
        return f"s3://{self.bucket}/{prefix}"

    def stop(self) -> None:
        self.proxy.stop()
        self.moto.stop()


# -- the yardsticks -------------------------------------------------------------------------
def batch_files(loader: Loader, epochs: int) -> tuple[list[list[str]], dict[str, int]]:
    """The files (sha256) each batch of ``epochs`` passes reads, in order, and their sizes."""
    shards = loader.shards
    sizes: dict[str, int] = {}
    per_shard: list[list[str]] = []
    for s in shards.shards:
        names = []
        for f in loader.fields:
            for e in s["files"][f].values():
                sizes[e["sha256"]] = e["bytes"]
                names.append(e["sha256"])
        per_shard.append(names)
    seq: list[list[str]] = []
    sampler = loader.sampler
    for epoch in range(loader.epoch, loader.epoch + epochs):
        order = sampler.order(epoch)
        for off, b in sampler.plan(0):
            ks = np.unique(np.searchsorted(shards.offsets, order[off : off + b], side="right") - 1)
            seq.append(sorted({name for k in ks.tolist() for name in per_shard[k]}))
    return seq, sizes


def simulate(seq: Sequence[Sequence[str]], sizes: dict[str, int], limit: int, policy: str) -> int:
    """Bytes a cache of ``limit`` bytes fetches serving ``seq`` (each batch's files held together)."""
    uses: dict[str, list[int]] = {}
    for j, files in enumerate(seq):
        for f in files:
            uses.setdefault(f, []).append(j)
    ptr = dict.fromkeys(uses, 0)
    cached: dict[str, int] = {}  # file -> last use (LRU)
    used = fetched = 0
    for j, files in enumerate(seq):
        need = set(files)
        for f in files:
            while ptr[f] < len(uses[f]) and uses[f][ptr[f]] <= j:
                ptr[f] += 1
        for f in files:
            if f not in cached:
                while used + sizes[f] > limit:
                    victims = [v for v in cached if v not in need]
                    if policy == "belady":
                        victim = max(
                            victims,
                            key=lambda v: uses[v][ptr[v]] if ptr[v] < len(uses[v]) else 1 << 60,
                        )
                    else:
                        victim = min(victims, key=lambda v: cached[v])
                    used -= sizes[victim]
                    del cached[victim]
                used += sizes[f]
                fetched += sizes[f]
            cached[f] = j
    return fetched


# -- datafuel -------------------------------------------------------------------------------
def run_datafuel(url: str, server: Server, limit: int, batch: int, epochs: int) -> dict[str, Any]:
    cache = tempfile.mkdtemp(prefix="df-remote-cache-", dir=_WORK[0])
    server.proxy.reset_counts()
    before = server.proxy.bytes_sent
    loader = Loader(
        url, batch_size=batch, seed=0, num_workers=2, cache_dir=cache, cache_limit=limit
    )
    seq, sizes = batch_files(loader, epochs)
    ids = []
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for b in loader:
            ids.append(b["id"].numpy())
            n += len(b["id"])
            time.sleep(STEP_S)
    wall = time.perf_counter() - t0
    stats = loader.stats()
    fetched = server.proxy.bytes_sent - before
    all_ids = np.concatenate(ids)
    ok = all(
        np.array_equal(np.sort(part), np.arange(len(loader.shards)))
        for part in np.split(all_ids, epochs)
    )
    out = {
        "samples": n,
        "samples_per_s": n / wall,
        "starvation": stats.starvation,
        "bytes_fetched": fetched,
        "cache_downloaded": loader.shards.cache.stats.bytes_downloaded,
        "belady": simulate(seq, sizes, limit, "belady"),
        "lru": simulate(seq, sizes, limit, "lru"),
        "window": loader.sampler.window,
        # shard clustering per batch kept from storage order (0: full permutation, 1: storage)
        "locality": shard_locality(loader.sampler.order(0), loader.shards.offsets, batch),
        "rows_ok": ok,
        "peak_cache": None,
    }
    loader.close()
    loader.shards.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit-frac", type=float, default=1 / 3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = 60_000 if args.quick else 200_000
    dim, batch, epochs = 32, 256, 2
    rng = np.random.default_rng(0)
    table = {
        "x": rng.normal(size=(rows, dim)).astype(np.float32),
        "id": np.arange(rows, dtype=np.int64),
    }
    shard_bytes = 1 << 20
    work = Path(tempfile.mkdtemp(prefix="df-bench-remote-"))
    _WORK[0] = str(work)
    write_shards(work / "df", shard_bytes=shard_bytes, **table)
    set_bytes = sum(p.stat().st_size for p in (work / "df").glob("*.bin"))
    limit = int(set_bytes * args.limit_frac)
    server = Server()
    try:
        url = server.upload(work / "df", "df")
        peers = _peers(table, work, shard_bytes, server)
        server.proxy.latency = LATENCY_S
        results: dict[str, list[dict[str, Any]]] = {"datafuel": []}
        for r in range(args.rounds):
            results["datafuel"].append(run_datafuel(url, server, limit, batch, epochs))
            for name, (purl, read) in peers.items():
                results.setdefault(name, []).append(
                    _run_peer(name, read, purl, server, limit, batch, epochs)
                )
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = _report(results, rows, dim, set_bytes, limit, batch, epochs)
    print(json.dumps(report, indent=1) if args.json else _table(report))
    return 0


def _peers(
    table: dict[str, np.ndarray], work: Path, shard_bytes: int, server: Server
) -> dict[str, Any]:
    """``{name: (url, read_fn)}`` of the peers that write and read here (others say why)."""
    try:
        sys.path.insert(0, str(Path(__file__).parent))
        import _remote_peers as peers  # type: ignore[import-not-found]
    except ImportError as exc:
        print(
            f"peers left out: benchmarks/_remote_peers.py does not import ({exc})", file=sys.stderr
        )
        return {}
    out = {}
    for name in ("litdata", "mosaic"):
        write = getattr(peers, f"write_{name}", None)
        read = getattr(peers, f"read_{name}", None)
        if write is None or read is None:
            continue
        try:
            local = write(table, str(work / name), shard_bytes)
            out[name] = (server.upload(Path(local), name), read)
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            print(f"{name} left out: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


def _run_peer(
    name: str, read: Any, url: str, server: Server, limit: int, batch: int, epochs: int
) -> dict[str, Any]:
    """One peer read, in a fresh process (as a user runs it: LitData's obstore downloads
    hang in workers forked from a process that already used obstore, as this one has)."""
    cache = tempfile.mkdtemp(prefix=f"{name}-remote-cache-", dir=_WORK[0])
    server.proxy.reset_counts()
    before = server.proxy.bytes_sent
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import _remote_peers as p; "
        f"r = p.read_{name}(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), "
        "float(sys.argv[6]), int(sys.argv[7]), 2); print('RESULT ' + json.dumps(r))"
    )
    args = [
        str(Path(__file__).parent),
        url,
        cache,
        str(limit),
        str(batch),
        str(STEP_S),
        str(epochs),
    ]
    env = {**os.environ, "DATAFUEL_BENCH_PEER_DEADLINE_S": str(PEER_DEADLINE_S)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=1800, env=env
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {proc.returncode}: {tail[:300]}"}
    got: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    got["bytes_fetched"] = server.proxy.bytes_sent - before
    return got


def _med(rs: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rs if key in r and r[key] is not None]
    return float(statistics.median(vals)) if vals else float("nan")


def _report(
    results: dict[str, list[dict[str, Any]]],
    rows: int,
    dim: int,
    set_bytes: int,
    limit: int,
    batch: int,
    epochs: int,
) -> dict[str, Any]:
    df = results["datafuel"]
    rep: dict[str, Any] = {
        "setup": {
            "rows": rows,
            "dim": dim,
            "set_bytes": set_bytes,
            "cache_limit": limit,
            "batch": batch,
            "epochs": epochs,
            "latency_ms": LATENCY_S * 1e3,
            "step_ms": STEP_S * 1e3,
            "window": df[0]["window"],
            "shard_locality": df[0]["locality"],
        },
        "datafuel": {
            "samples_per_s": _med(df, "samples_per_s"),
            "starvation": _med(df, "starvation"),
            "bytes_fetched": _med(df, "bytes_fetched"),
            "belady_bytes": _med(df, "belady"),
            "lru_bytes": _med(df, "lru"),
            "fetched_over_belady": statistics.median(r["bytes_fetched"] / r["belady"] for r in df),
            "lru_over_belady": statistics.median(r["lru"] / r["belady"] for r in df),
            "rows_ok": all(r["rows_ok"] for r in df),
        },
    }
    for name, rs in results.items():
        if name == "datafuel":
            continue
        errs = [r["error"] for r in rs if "error" in r]
        good = [r for r in rs if "error" not in r]
        if not good:
            rep[name] = {"error": errs[0] if errs else "no result"}
            continue
        rep[name] = {
            "samples_per_s": _med(good, "samples_per_s"),
            "starvation": _med(good, "starvation"),
            "bytes_fetched": _med(good, "bytes_fetched"),
            "rows_ok": all(r.get("rows_ok", False) for r in good),
            "datafuel_speedup": statistics.median(
                d["samples_per_s"] / p["samples_per_s"]
                for d, p in zip(df, rs, strict=True)
                if "error" not in p
            ),
            "datafuel_bytes_ratio": statistics.median(  # per sample read (a stopped peer read fewer)
                (d["bytes_fetched"] / (d["samples"] or 1))
                / (p["bytes_fetched"] / (p["samples"] or 1))
                for d, p in zip(df, rs, strict=True)
                if "error" not in p
            ),
            "finished": all(r.get("finished", True) for r in good),
        }
    return rep


def _table(rep: dict[str, Any]) -> str:
    s = rep["setup"]
    lines = [
        f"{s['rows']} rows x {s['dim']} float32 + id, {s['set_bytes'] / 1e6:.1f} MB, cache limit "
        f"{s['cache_limit'] / 1e6:.1f} MB, batch {s['batch']}, {s['epochs']} epochs, "
        f"{s['latency_ms']:.0f} ms latency, {s['step_ms']:.0f} ms step, shuffle window {s['window']} (shard locality {s['shard_locality']:.3f}: "
        "0 full permutation, 1 storage order)",
    ]
    d = rep["datafuel"]
    lines.append(
        f"datafuel  {d['samples_per_s']:9.0f} samples/s  starvation {d['starvation'] * 100:5.2f}%  "
        f"fetched {d['bytes_fetched'] / 1e6:7.1f} MB = {d['fetched_over_belady']:.3f}x Belady "
        f"({d['belady_bytes'] / 1e6:.1f} MB; LRU {d['lru_over_belady']:.3f}x)  rows ok {d['rows_ok']}"
    )
    for name, p in rep.items():
        if name in ("setup", "datafuel"):
            continue
        if "error" in p:
            lines.append(f"{name:9} left out: {p['error']}")
            continue
        lines.append(
            f"{name:9} {p['samples_per_s']:9.0f} samples/s  starvation {p['starvation'] * 100:5.2f}%  "
            f"fetched {p['bytes_fetched'] / 1e6:7.1f} MB  rows ok {p['rows_ok']}"
            f"{'' if p['finished'] else f' (stopped after {PEER_DEADLINE_S:.0f} s)'}  -> datafuel "
            f"{p['datafuel_speedup']:.2f}x samples/s, {p['datafuel_bytes_ratio']:.3g}x bytes per sample"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
