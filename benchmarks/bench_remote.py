"""Remote shard sets: starvation, bytes fetched against Belady and LRU, and the peers.

    python3 benchmarks/bench_remote.py [--quick] [--rounds 3] [--cases rows,windows]

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
    the usual yardstick with unequal ones. The rows also get Belady over the run plus
    the next epoch's first ``PREFETCH_BATCHES`` batches: a pass knows that order too and
    prefetches it as the run ends, so a run that stops after its last epoch has paid
    for those files (the whole 6% between Belady and the bytes fetched in --quick was
    one such file, fetched for epoch 3 of a 2-epoch run).
(c) **peers**: LitData (``StreamingDataset`` over ``litdata.optimize`` output,
    ``max_cache_size`` = the same limit) and Mosaic Streaming (``cache_limit``) reading
    the same rows from the same server through the same proxy, each in its own format,
    when they run here (``benchmarks/_remote_peers.py``): samples/s beside the same
    step, and bytes fetched.
(d) **token windows**: ``Loader("s3://…", seq_len=512, cache_limit=…)`` over a token
    set written with ``ShardWriter`` (one ``ragged("uint16")`` field, 256 KB shards), the
    cache a third of the token field: (a) and (b) again, the Belady and LRU simulations
    over the token shards each batch pins (its windows' tokens ``[s, s + T]``, which may
    run into the next shard), plus bytes fetched per epoch over the token field's bytes,
    and the windows checked against the same loader over the local copy.

(e) **a mixture** of three remote row sets (distinct rows, 256 KB shards, weights 0.5 /
    0.3 / 0.2, one cache of a third of their bytes): ``Loader({...}, weights=…,
    cache_limit=…)``, whose sources are served in shard blocks; (a) and (b) again (Belady
    and LRU over each batch's files from every source), bytes fetched per epoch over the
    sources' bytes, and what one batch of the full permutation (the mixture order without
    shard blocks) would read at once, against the limit.

``--cases rows``, ``windows`` or ``mixture`` runs some of them (peers go with ``rows``).
Figures are medians over ``--rounds`` rounds (a fresh cache each); ratios are against the
peer measured in the same round.
"""

from __future__ import annotations

import argparse
import functools
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
from datafuel.loaders._remote_set import PREFETCH_BATCHES
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
def shard_files(
    loader: Loader, shards: Any = None, sizes: dict[str, int] | None = None
) -> tuple[list[list[str]], dict[str, int]]:
    """The files (sha256) of each shard of the loader's fields (of ``shards``, default its
    set), and every file's size (added to ``sizes``)."""
    sizes = {} if sizes is None else sizes
    per_shard: list[list[str]] = []
    for s in (loader.shards if shards is None else shards).shards:
        names = []
        for f in loader.fields:
            for e in s["files"][f].values():
                sizes[e["sha256"]] = e["bytes"]
                names.append(e["sha256"])
        per_shard.append(names)
    return per_shard, sizes


def files_of(batch_shards: Sequence[Sequence[int]], per_shard: list[list[str]]) -> list[list[str]]:
    """Each batch's files from its shard ids."""
    return [sorted({name for k in ks for name in per_shard[k]}) for ks in batch_shards]


def batch_files(loader: Loader, epochs: int) -> tuple[list[list[str]], dict[str, int]]:
    """The files (sha256) each batch of ``epochs`` passes reads, in order, and their sizes."""
    shards = loader.shards
    per_shard, sizes = shard_files(loader)
    ids: list[list[int]] = []
    sampler = loader.sampler
    for epoch in range(loader.epoch, loader.epoch + epochs):
        order = sampler.order(epoch)
        for off, b in sampler.plan(0):
            ks = np.unique(np.searchsorted(shards.offsets, order[off : off + b], side="right") - 1)
            ids.append(ks.tolist())
    return files_of(ids, per_shard), sizes


def window_batch_files(loader: Loader, epochs: int) -> tuple[list[list[str]], dict[str, int]]:
    """Token windows: the files each batch of ``epochs`` passes pins, and their sizes: the
    token shards its windows' tokens ``[s, s + T]`` read, less those it reads only the
    first tokens of when they are kept from an earlier pin, as the loader's pass does."""
    from datafuel.loaders._remote_set import BatchShards

    windows, sampler = loader.windows, loader.sampler
    per_shard, sizes = shard_files(loader)
    ids: list[list[int]] = []
    kept = windows.stream.heads_kept()  # the shards whose first T tokens are kept in memory
    for epoch in range(loader.epoch, loader.epoch + epochs):
        span = functools.partial(windows.shard_span, windows.offset(sampler.seed, epoch, True))
        bs = BatchShards.of_plans(
            [(sampler.plan(0), sampler.order(epoch))], windows.stream.shard_starts, [span]
        ).without_kept_heads(kept)  # what the pass pins (RemoteShardSet.begin_pass)
        ids.extend(bs.shards(j).tolist() for j in range(len(bs)))
        kept[bs.shard] = True  # every pin keeps its shard's head
    return files_of(ids, per_shard), sizes


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
    # the pass also knows the next epoch's order and prefetches its first batches as the
    # run ends; a run that stops there paid for them, so its bound includes them too
    ahead = batch_files(loader, epochs + 1)[0][: len(seq) + PREFETCH_BATCHES]
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
        "belady_ahead": simulate(ahead, sizes, limit, "belady"),
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


def run_windows(
    url: str, local: Path, server: Server, limit: int, batch: int, seq_len: int, epochs: int
) -> dict[str, Any]:
    """(a) and (b) for token windows: ``Loader(url, seq_len=…)`` streaming a token field
    through a cache of ``limit`` bytes, against the same loader over the local copy."""
    cache = tempfile.mkdtemp(prefix="df-remote-tok-cache-", dir=_WORK[0])
    server.proxy.reset_counts()
    before = server.proxy.bytes_sent
    kw: dict[str, Any] = dict(batch_size=batch, seq_len=seq_len, seed=0)
    loader = Loader(url, **kw, num_workers=2, cache_dir=cache, cache_limit=limit)
    seq, sizes = window_batch_files(loader, epochs)
    sums: list[list[int]] = [[] for _ in range(epochs)]
    t0 = time.perf_counter()
    n = 0
    for e in range(epochs):
        for b in loader:
            tok = b["tokens"].numpy()
            sums[e].append(int(tok.sum()))
            n += len(tok)
            time.sleep(STEP_S)
    wall = time.perf_counter() - t0
    stats = loader.stats()
    fetched = server.proxy.bytes_sent - before
    # the same windows in the same order as the local set under the same settings
    here = Loader(local, **kw, shuffle="shards", shuffle_window=loader.sampler.window)
    want = [[int(b["tokens"].numpy().sum()) for b in here] for _ in range(epochs)]
    field = int(loader.shards.shard_bytes(loader.fields).sum())
    out = {
        "samples": n,
        "samples_per_s": n / wall,
        "starvation": stats.starvation,
        "bytes_fetched": fetched,
        "field_bytes": field,
        "belady": simulate(seq, sizes, limit, "belady"),
        "lru": simulate(seq, sizes, limit, "lru"),
        "window": loader.sampler.window,
        "num_shards": loader.shards.num_shards,
        "windows_ok": sums == want,
    }
    loader.close()
    loader.shards.close()
    return out


def mixture_batch_files(
    loader: Loader, epochs: int, order: Any = None
) -> tuple[list[list[str]], dict[str, int]]:
    """A row mixture: the files each batch of ``epochs`` passes reads from its sources (in
    the loader's mixture order, or ``order``, another :class:`Mixture` over the same
    sources), and their sizes."""
    assert loader.sources is not None and loader.mixture is not None
    m = loader.mixture if order is None else order
    sets = list(loader.sources.values())
    sizes: dict[str, int] = {}
    per_source = [shard_files(loader, sh, sizes)[0] for sh in sets]
    seq: list[list[str]] = []
    sampler = loader.sampler
    for epoch in range(epochs):
        base = epoch * sampler.num_samples
        for off, b in sampler.plan(0):
            src, sample, _ = m.samples(np.arange(base + off, base + off + b))
            names: set[str] = set()
            for s in np.unique(src).tolist():
                ks = np.searchsorted(sets[s].offsets, sample[src == s], side="right") - 1
                for k in np.unique(ks).tolist():
                    names.update(per_source[s][k])
            seq.append(sorted(names))
    return seq, sizes


def run_mixture(
    urls: dict[str, str], server: Server, limit: int, batch: int, epochs: int
) -> dict[str, Any]:
    """(e): a mixture of remote row sets through one cache of ``limit`` bytes."""
    from datafuel.loaders._mixture import Mixture

    cache = tempfile.mkdtemp(prefix="df-remote-mix-cache-", dir=_WORK[0])
    server.proxy.reset_counts()
    before = server.proxy.bytes_sent
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    loader = Loader(
        urls, batch, weights=weights, seed=0, num_workers=2, cache_dir=cache, cache_limit=limit
    )
    assert loader.mixture is not None
    seq, sizes = mixture_batch_files(loader, epochs)
    # as for the rows: the run ends prefetching the next epoch's first batches
    ahead = mixture_batch_files(loader, epochs + 1)[0][: len(seq) + PREFETCH_BATCHES]
    full = Mixture(
        dict(zip(loader.mixture.names, loader.mixture.sizes, strict=True)), weights, seed=0
    )
    full_seq, _ = mixture_batch_files(loader, 1, order=full)
    t0 = time.perf_counter()
    n = 0
    for _ in range(epochs):
        for b in loader:
            n += len(b["id"])
            time.sleep(STEP_S)
    wall = time.perf_counter() - t0
    stats = loader.stats()
    fetched = server.proxy.bytes_sent - before
    out = {
        "samples": n,
        "samples_per_s": n / wall,
        "starvation": stats.starvation,
        "bytes_fetched": fetched,
        "sources_bytes": sum(sizes.values()),
        "belady": simulate(seq, sizes, limit, "belady"),
        "belady_ahead": simulate(ahead, sizes, limit, "belady"),
        "lru": simulate(seq, sizes, limit, "lru"),
        "windows": loader.mixture.windows,
        "batch_need_max": max(sum(sizes[f] for f in fs) for fs in seq),
        "full_batch_need_max": max(sum(sizes[f] for f in fs) for fs in full_seq),
        "mix": stats.mix,
    }
    loader.close()
    for sh in loader.sources.values():
        sh.close()
    return out


def _mixture_report(
    ms: list[dict[str, Any]], limit: int, batch: int, epochs: int
) -> dict[str, Any]:
    src = ms[0]["sources_bytes"]
    return {
        "setup": {
            "sources_bytes": src,
            "cache_limit": limit,
            "batch": batch,
            "epochs": epochs,
            "windows": ms[0]["windows"],
        },
        "samples_per_s": _med(ms, "samples_per_s"),
        "starvation": _med(ms, "starvation"),
        "sources_per_epoch": statistics.median(r["bytes_fetched"] / (src * epochs) for r in ms),
        "fetched_over_belady": statistics.median(r["bytes_fetched"] / r["belady"] for r in ms),
        "fetched_over_belady_ahead": statistics.median(
            r["bytes_fetched"] / r["belady_ahead"] for r in ms
        ),
        "lru_over_belady": statistics.median(r["lru"] / r["belady"] for r in ms),
        "batch_need_max": ms[0]["batch_need_max"],
        "full_batch_need_max": ms[0]["full_batch_need_max"],
        "mix": ms[0]["mix"],
    }


def _mixture_sets(directory: Path, rows: int, dim: int, rng: np.random.Generator) -> int:
    """Three distinct row sets ``a``, ``b``, ``c`` (no file shared), 256 KB shards; their bytes."""
    for k, name in enumerate("abc"):
        write_shards(
            directory / name,
            shard_bytes=256 << 10,
            x=rng.normal(size=(rows, dim)).astype(np.float32),
            id=np.arange(k * rows, (k + 1) * rows, dtype=np.int64),
        )
    return sum(p.stat().st_size for p in directory.rglob("*.bin"))


def _token_set(directory: Path, tokens: int, shard_bytes: int) -> None:
    """A uint16 token field of about ``tokens`` tokens in documents of 1..2,000 tokens."""
    from datafuel.loaders import ShardWriter, ragged

    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 2_000, tokens // 1_000 + 1)
    flat = rng.integers(0, 50_000, int(lengths.sum()), dtype=np.uint16)
    docs = np.split(flat, np.cumsum(lengths)[:-1])
    with ShardWriter(directory, {"tokens": ragged("uint16")}, shard_bytes=shard_bytes) as w:
        w.write({"tokens": docs})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit-frac", type=float, default=1 / 3)
    ap.add_argument(
        "--cases", default="rows,windows,mixture", help="rows, windows, mixture (comma)"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    rows = 60_000 if args.quick else 200_000
    dim, batch, epochs = 32, 256, 2
    tokens = 4_000_000 if args.quick else 12_000_000
    tok_shard_bytes, seq_len, tok_batch = 256 << 10, 512, 32
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
    _token_set(work / "tok", tokens, tok_shard_bytes)
    tok_bytes = sum(p.stat().st_size for p in (work / "tok").glob("*.tokens.*"))
    tok_limit = int(tok_bytes * args.limit_frac)
    mix_limit = int(_mixture_sets(work / "mix", rows // 2, dim, rng) * args.limit_frac)
    server = Server()
    try:
        url = server.upload(work / "df", "df")
        tok_url = server.upload(work / "tok", "tok")
        mix_urls = {k: server.upload(work / "mix" / k, f"mix/{k}") for k in "abc"}
        peers = _peers(table, work, shard_bytes, server) if "rows" in cases else {}
        server.proxy.latency = LATENCY_S
        results: dict[str, list[dict[str, Any]]] = {}
        for r in range(args.rounds):
            if "rows" in cases:
                results.setdefault("datafuel", []).append(
                    run_datafuel(url, server, limit, batch, epochs)
                )
            for name, (purl, read) in peers.items():
                results.setdefault(name, []).append(
                    _run_peer(name, read, purl, server, limit, batch, epochs)
                )
            if "windows" in cases:
                results.setdefault("windows", []).append(
                    run_windows(
                        tok_url, work / "tok", server, tok_limit, tok_batch, seq_len, epochs
                    )
                )
            if "mixture" in cases:
                results.setdefault("mixture", []).append(
                    run_mixture(mix_urls, server, mix_limit, batch, epochs)
                )
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    report = _report(results, rows, dim, set_bytes, limit, batch, epochs) if "rows" in cases else {}
    if "windows" in results:
        report["windows"] = _windows_report(
            results["windows"], tokens, tok_limit, tok_batch, seq_len, epochs
        )
    if "mixture" in results:
        report["mixture"] = _mixture_report(results["mixture"], mix_limit, batch, epochs)
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
    if "datafuel" not in results:
        return {}
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
            "fetched_over_belady_ahead": statistics.median(
                r["bytes_fetched"] / r["belady_ahead"] for r in df
            ),
            "rows_ok": all(r["rows_ok"] for r in df),
        },
    }
    for name, rs in results.items():
        if name in ("datafuel", "windows"):
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


def _windows_report(
    ws: list[dict[str, Any]], tokens: int, limit: int, batch: int, seq_len: int, epochs: int
) -> dict[str, Any]:
    field = ws[0]["field_bytes"]
    return {
        "setup": {
            "tokens": tokens,
            "field_bytes": field,
            "num_shards": ws[0]["num_shards"],
            "cache_limit": limit,
            "batch": batch,
            "seq_len": seq_len,
            "epochs": epochs,
            "window": ws[0]["window"],
        },
        "samples_per_s": _med(ws, "samples_per_s"),
        "starvation": _med(ws, "starvation"),
        "bytes_fetched": _med(ws, "bytes_fetched"),
        "field_per_epoch": statistics.median(r["bytes_fetched"] / (field * epochs) for r in ws),
        "belady_bytes": _med(ws, "belady"),
        "lru_bytes": _med(ws, "lru"),
        "fetched_over_belady": statistics.median(r["bytes_fetched"] / r["belady"] for r in ws),
        "lru_over_belady": statistics.median(r["lru"] / r["belady"] for r in ws),
        "windows_ok": all(r["windows_ok"] for r in ws),
    }


def _table(rep: dict[str, Any]) -> str:
    lines = _rows_table(rep) if "setup" in rep else []
    w = rep.get("windows")
    if w is not None:
        s = w["setup"]
        lines.append(
            f"token windows: {s['tokens'] / 1e6:.0f}M uint16 tokens in {s['num_shards']} shards, "
            f"{s['field_bytes'] / 1e6:.1f} MB, cache limit {s['cache_limit'] / 1e6:.1f} MB, batch "
            f"{s['batch']} x seq_len {s['seq_len']}, {s['epochs']} epochs, shuffle window "
            f"{s['window']}, {LATENCY_S * 1e3:.0f} ms latency, {STEP_S * 1e3:.0f} ms step"
        )
        lines.append(
            f"windows   {w['samples_per_s']:9.0f} samples/s  starvation {w['starvation'] * 100:5.2f}%  "
            f"fetched {w['bytes_fetched'] / 1e6:7.1f} MB = {w['field_per_epoch']:.3f}x the field "
            f"per epoch = {w['fetched_over_belady']:.3f}x Belady ({w['belady_bytes'] / 1e6:.1f} MB; "
            f"LRU {w['lru_over_belady']:.3f}x)  windows ok {w['windows_ok']}"
        )
    x = rep.get("mixture")
    if x is not None:
        s = x["setup"]
        lines.append(
            f"mixture: three remote row sets, {s['sources_bytes'] / 1e6:.1f} MB, one cache of "
            f"{s['cache_limit'] / 1e6:.1f} MB, batch {s['batch']}, {s['epochs']} epochs, shard "
            f"blocks {s['windows']}, {LATENCY_S * 1e3:.0f} ms latency, {STEP_S * 1e3:.0f} ms step"
        )
        lines.append(
            f"mixture   {x['samples_per_s']:9.0f} samples/s  starvation {x['starvation'] * 100:5.2f}%  "
            f"fetched {x['sources_per_epoch']:.3f}x the sources' bytes per epoch = "
            f"{x['fetched_over_belady']:.3f}x Belady, {x['fetched_over_belady_ahead']:.3f}x with "
            f"the next epoch's first batches (LRU {x['lru_over_belady']:.3f}x); one batch "
            f"reads at most {x['batch_need_max'] / 1e6:.2f} MB, the full permutation's "
            f"{x['full_batch_need_max'] / 1e6:.2f} MB (limit {s['cache_limit'] / 1e6:.2f} MB)"
        )
    return "\n".join(lines)


def _rows_table(rep: dict[str, Any]) -> list[str]:
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
        f"({d['belady_bytes'] / 1e6:.1f} MB; LRU {d['lru_over_belady']:.3f}x; "
        f"{d['fetched_over_belady_ahead']:.3f}x Belady over the run and the next epoch's first "
        f"{PREFETCH_BATCHES} batches, which the pass prefetches)  rows ok {d['rows_ok']}"
    )
    for name, p in rep.items():
        if name in ("setup", "datafuel", "windows"):
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
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
