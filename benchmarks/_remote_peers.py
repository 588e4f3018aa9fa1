"""The peers of ``bench_remote.py``: LitData and Mosaic Streaming reading a table from S3.

For each peer, two functions:

* ``write_<peer>(rows, out_dir, shard_bytes, *, id_field="id") -> out_dir`` writes the
  table ``rows`` (``{name: ndarray}``, one row per first-axis index, fixed-size numeric
  fields: ``x float32[N, D]``, ``id int64[N]``, ...) in the peer's own format under
  ``out_dir``, shards of about ``shard_bytes``; the caller uploads the folder as it is.
* ``read_<peer>(url, cache_dir, cache_limit, batch_size, step_s, epochs, num_workers,
  *, id_field="id") -> dict`` reads ``s3://bucket/prefix`` with the peer's own loader,
  ``shuffle=True``, the peer's cache limit set to ``cache_limit`` bytes, and sleeps
  ``step_s`` after each batch (the simulated training step). It returns ``samples``,
  ``seconds`` (wall), ``samples_per_s``, ``starvation`` (the fraction of the wall time
  spent inside ``next()`` waiting for a batch), ``first_batch_s`` and ``rows_ok`` (each
  epoch saw every row once: as many ``id_field`` values as the table has rows, all
  distinct; the table must carry a unique ``id_field`` column for that check).

Both peers talk to S3 through boto3/obstore clients that honour the ``AWS_*`` environment
the benchmark sets (``AWS_ENDPOINT_URL`` at the counting proxy, keys, ``AWS_REGION``); each
reader also passes the endpoint explicitly (see its docstring), so every byte they fetch
goes through the proxy. Neither peer shells out (no s5cmd) for plain ``s3://`` reads.

``python benchmarks/_remote_peers.py`` is a smoke run: moto + the 20 ms proxy of
``tests/remote/conftest.py``, 20k rows x 16 float32 + id, one epoch per peer
(``SMOKE_ROWS``, ``SMOKE_WORKERS`` (1), ``SMOKE_CACHE_FRAC`` (0.5 of the table),
``SMOKE_PEERS=litdata,mosaic`` change it).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
import types
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["available", "read_litdata", "read_mosaic", "write_litdata", "write_mosaic"]


# -- shared -----------------------------------------------------------------------------


def _endpoint() -> str:
    """The S3 endpoint the benchmark set (the proxy); an error when unset, so that a peer
    can never silently reach real AWS from a benchmark run."""
    url = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if not url:
        raise RuntimeError("AWS_ENDPOINT_URL is not set: point it at the S3 endpoint to read")
    return url


def _n_rows(rows: dict[str, np.ndarray]) -> int:
    lens = {len(v) for v in rows.values()}
    if len(lens) != 1:
        raise ValueError(f"columns of different lengths: { {k: len(v) for k, v in rows.items()} }")
    return lens.pop()


def _row_bytes(rows: dict[str, np.ndarray]) -> int:
    return sum(int(np.asarray(v[:1]).nbytes) for v in rows.values())


def _fork(num_workers: int) -> dict[str, Any]:
    """``multiprocessing_context="fork"`` for a loader with workers: both readers patch
    module state in the parent (LitData's obstore options, Mosaic's import stubs) that a
    spawned/forkserver worker would not see (and Python 3.14 makes forkserver the default)."""
    return {"multiprocessing_context": "fork"} if num_workers > 0 else {}


def _timed_loop(
    batches_per_epoch: Iterable[Iterable[Any]],
    *,
    epochs: int,
    step_s: float,
    n_rows: int,
    id_field: str,
) -> dict[str, Any]:
    """Iterate ``epochs`` passes of the loader returned by ``batches_per_epoch`` (an
    iterable re-iterated once per epoch), timing ``next()`` apart from the step."""
    samples = 0
    waited = 0.0
    first_batch_s = None
    rows_ok = True
    # a peer that thrashes its cache can take an hour for what the others do in a minute:
    # DATAFUEL_BENCH_PEER_DEADLINE_S stops it there (the figures cover what it did)
    deadline = float(os.environ.get("DATAFUEL_BENCH_PEER_DEADLINE_S", "inf"))
    finished = True
    t0 = time.perf_counter()
    for _ in range(epochs):
        if not finished:
            break
        seen: list[np.ndarray] = []
        it: Iterator[Any] = iter(batches_per_epoch)
        while True:
            t = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                waited += time.perf_counter() - t
                break
            now = time.perf_counter()
            waited += now - t
            if first_batch_s is None:
                first_batch_s = now - t0
            ids = np.asarray(batch[id_field]).reshape(-1)
            seen.append(ids)
            samples += len(ids)
            if step_s > 0:
                time.sleep(step_s)
            if time.perf_counter() - t0 > deadline:
                finished = False
                break
        got = np.concatenate(seen) if seen else np.empty(0, np.int64)
        rows_ok = rows_ok and len(got) == n_rows and len(np.unique(got)) == n_rows
    wall = time.perf_counter() - t0
    return {
        "samples": samples,
        "seconds": wall,
        "samples_per_s": samples / wall if wall > 0 else 0.0,
        "starvation": waited / wall if wall > 0 else 0.0,
        "first_batch_s": first_batch_s,
        "rows_ok": bool(rows_ok) and finished,
        "finished": finished,
    }


# -- LitData ------------------------------------------------------------------------------


def _litdata_rows(part: dict[str, np.ndarray]) -> Iterator[dict[str, Any]]:
    """``optimize``'s fn: one input is a slice of the table; yields its rows (a generator
    fn is what LitData's docs show for many samples per input)."""
    n = _n_rows(part)
    for i in range(n):
        yield {k: (v[i] if v.ndim > 1 else v[i].item()) for k, v in part.items()}


def write_litdata(
    rows: dict[str, np.ndarray], out_dir: str, shard_bytes: int, *, id_field: str = "id"
) -> str:
    """``litdata.optimize`` of ``rows`` into ``out_dir`` (``chunk_bytes=shard_bytes``,
    no compression); returns ``out_dir``.

    Each row is one sample ``{name: value}``: an ``[D]`` row of a 2-d column is a numpy
    array (LitData picks its ``no_header_numpy`` serializer: raw bytes), a row of a 1-d
    column a Python scalar (``int``/``float`` serializers, 8 bytes). A numpy scalar would go
    to the ``pickle`` serializer: ~190 B a row instead of ~76 for 16 float32 + id. The
    inputs are 16 slices of the table and ``num_workers=1``, so the write is one child
    process in ``reorder_files=False`` order. ``verbose=False``.

    ``optimize`` calls ``multiprocessing.set_start_method("spawn", force=True)`` for the
    whole process (``DataProcessor.__init__``, litdata/processing/data_processor.py:1857),
    which would turn every later DataLoader (datafuel's, Mosaic's) into spawn workers; the
    start method in force before is restored afterwards.
    """
    import litdata

    n = _n_rows(rows)
    if id_field not in rows:
        raise ValueError(f"rows need a unique {id_field!r} column")
    bounds = np.linspace(0, n, num=min(16, n) + 1, dtype=np.int64)
    inputs = [
        {k: np.ascontiguousarray(v[a:b]) for k, v in rows.items()}
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]
    import multiprocessing as mp

    before = mp.get_start_method(allow_none=True)
    try:
        litdata.optimize(
            fn=_litdata_rows,
            inputs=inputs,
            output_dir=os.path.abspath(out_dir),
            chunk_bytes=int(shard_bytes),
            num_workers=1,
            reorder_files=False,
            verbose=False,
            mode="overwrite",
        )
    finally:
        mp.set_start_method(before, force=True)
    return out_dir


def read_litdata(
    url: str,
    cache_dir: str,
    cache_limit: int,
    batch_size: int,
    step_s: float,
    epochs: int,
    num_workers: int,
    *,
    id_field: str = "id",
) -> dict[str, Any]:
    """``litdata.StreamingDataset(url, cache_dir, shuffle=True, max_cache_size=cache_limit,
    storage_options={"endpoint_url": AWS_ENDPOINT_URL})`` through ``StreamingDataLoader``.

    Pointing it at the proxy: LitData's ``S3Client._create_client`` (litdata/streaming/
    client.py) builds ``boto3.Session().client("s3", config=..., **storage_options)``, so
    ``storage_options={"endpoint_url": ...}`` reaches boto3 as the client's endpoint (boto3
    would also read ``AWS_ENDPOINT_URL`` by itself); the chunk GETs go through obstore
    (``S3Downloader.download_file`` -> ``_build_obstore_s3_store``, litdata/streaming/
    downloader.py), which copies ``boto_client.meta.endpoint_url`` and switches to
    path-style addressing for a non-amazonaws endpoint, so they hit the proxy too.
    ``index.json`` is read with boto3 in the parent (so tokio never starts before fork).
    obstore refuses a plain ``http://`` endpoint ("HTTP error: builder error ... BadScheme"
    from reqwest, the first chunk GET) unless ``allow_http`` is on, and LitData's
    ``S3Store(...)`` passes only ``timeout``/pool ``client_options``
    (``_OBSTORE_CLIENT_OPTIONS``, downloader.py:206). ``AWS_ALLOW_HTTP=true`` does not
    help: obstore reads it from the environment only when no ``client_options`` are given
    (checked: with ``client_options`` passed the GET still fails with BadScheme), and
    LitData has no setting to turn obstore off. So, when the endpoint is ``http://`` (the
    loopback proxy), ``allow_http: True`` is added to that module-level dict for the run
    (``_litdata_allow_http``). A LitData user on an http S3-compatible store needs the
    same patch; on https (real S3) it is not needed. Workers are forked (``_fork``) so they
    inherit the patched dict.

    Cache limit: ``max_cache_size`` is in bytes; the ``MAX_CACHE_SIZE`` environment variable
    would override it (``_resolve_max_cache_size``, litdata/utilities/format.py), so it is
    removed for the run. LitData evicts whole chunks: once the dataset is larger than the
    limit (``_delete_chunks_when_processed``, litdata/streaming/reader.py) a chunk is deleted
    after it has been read, and ``max_pre_download`` is capped so that
    ``workers x chunks`` fits the budget (never below 2 chunks per worker) - so the real
    disk peak is about ``max(cache_limit, 2 x num_workers x chunk_bytes)``, and a limit
    under the dataset size means every epoch downloads every chunk again. Below 25 GB it
    logs a warning (harmless here). Shuffle is LitData's: chunk order shuffled per epoch,
    rows shuffled within each worker's chunk interval.
    """
    import litdata

    _endpoint_url = _endpoint()
    with _env_removed("MAX_CACHE_SIZE"), _litdata_allow_http(_endpoint_url.startswith("http://")):
        ds = litdata.StreamingDataset(
            url,
            cache_dir=cache_dir,
            shuffle=True,
            drop_last=False,
            max_cache_size=int(cache_limit),
            storage_options={"endpoint_url": _endpoint_url},
        )
        n_rows = len(ds)
        loader = litdata.StreamingDataLoader(
            ds,
            batch_size=batch_size,
            num_workers=num_workers,
            drop_last=False,
            **_fork(num_workers),
        )
        return _timed_loop(loader, epochs=epochs, step_s=step_s, n_rows=n_rows, id_field=id_field)


@contextlib.contextmanager
def _litdata_allow_http(on: bool) -> Iterator[None]:
    """Add ``allow_http`` to the obstore client options LitData builds its ``S3Store`` with
    (``litdata.streaming.downloader._OBSTORE_CLIENT_OPTIONS``, read at each store build),
    for the block; DataLoader workers fork inside it and inherit it."""
    if not on:
        yield
        return
    from litdata.streaming import downloader

    saved = downloader._OBSTORE_CLIENT_OPTIONS
    downloader._OBSTORE_CLIENT_OPTIONS = {**saved, "allow_http": True}
    try:
        yield
    finally:
        downloader._OBSTORE_CLIENT_OPTIONS = saved


@contextlib.contextmanager
def _env_removed(*names: str) -> Iterator[None]:
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


# -- Mosaic Streaming ---------------------------------------------------------------------


_STREAMING_STUBS = {
    # module: attributes ``import streaming`` touches at import time (never used here)
    "torchvision": {},
    "torchvision.datasets": {"VisionDataset": object},
    "torchvision.transforms": {},
    "torchvision.transforms.functional": {"to_tensor": None},
    "transformers": {},
    "transformers.feature_extraction_utils": {"BatchFeature": None},
    "transformers.tokenization_utils_base": {"BatchEncoding": None},
    "transformers.models": {},
    "transformers.models.auto": {},
    "transformers.models.auto.tokenization_auto": {"AutoTokenizer": object},
}


def _import_streaming() -> types.ModuleType:
    """``import streaming`` (mosaicml-streaming 0.13.0), with stand-ins for the two heavy
    packages its ``__init__`` imports but a table reader never uses.

    ``streaming/__init__.py`` imports ``streaming.vision`` (``from torchvision.datasets
    import VisionDataset``, streaming/vision/base.py:8), ``streaming.text``
    (``transformers...AutoTokenizer``, streaming/text/c4.py:12) and
    ``streaming.base.dataloader`` (``from transformers.feature_extraction_utils import
    BatchFeature``, streaming/base/dataloader.py:10, used only in ``isinstance`` checks on
    batches). Neither is installed here, on purpose: torchvision would have to match
    torch's build (the one on the index needs a newer torch), and installing transformers
    turns on datafuel's optional-extra tests. So when a real one is missing, an empty
    module stands in *for the import only* and is removed from ``sys.modules`` afterwards
    (``import torchvision`` elsewhere still fails as before). ``BatchFeature`` /
    ``BatchEncoding`` stand-ins are distinct dummy classes so that ``isinstance`` stays
    false for our dict batches. The compression modules it imports (brotli, snappy,
    zstd, ...) must be really installed (``pip install --no-deps Brotli python-snappy
    cramjam zstd catalogue``). DataLoader workers are forked (``_fork``), so they inherit
    the imported package; with ``spawn`` they would re-import it without stubs.
    """
    if "streaming" in sys.modules:
        return sys.modules["streaming"]
    import importlib.util

    missing = {
        root
        for root in {n.split(".")[0] for n in _STREAMING_STUBS}
        if root not in sys.modules and importlib.util.find_spec(root) is None
    }  # a real installed package is left for streaming to import
    added: list[str] = []
    for name, attrs in _STREAMING_STUBS.items():
        if name.split(".")[0] not in missing:
            continue
        mod = types.ModuleType(name)
        mod.__path__ = []  # a package, so its submodules import
        for k, v in attrs.items():
            mod.__dict__[k] = v if v is not None else type(k, (), {})
        sys.modules[name] = mod
        added.append(name)
    try:
        import streaming
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return streaming


def _mds_columns(rows: dict[str, np.ndarray]) -> dict[str, str]:
    cols = {}
    for k, v in rows.items():
        v = np.asarray(v)
        dt = v.dtype.name
        if v.ndim == 1:
            cols[k] = dt  # the scalar encodings: int8..int64, uint8..uint64, float16..64
        else:
            cols[k] = f"ndarray:{dt}:{','.join(str(d) for d in v.shape[1:])}"
    return cols


def write_mosaic(
    rows: dict[str, np.ndarray], out_dir: str, shard_bytes: int, *, id_field: str | None = "id"
) -> str:
    """``streaming.MDSWriter(out=out_dir, columns=..., size_limit=shard_bytes)`` of ``rows``
    (no compression, no hashes); returns ``out_dir``.

    Columns: a 1-d column is an MDS scalar encoding named by its dtype (``int64``,
    ``float32``), a 2-d+ column a fixed ``ndarray:<dtype>:<shape>`` (static dtype and
    shape, so a row is stored as its raw bytes, no per-row header). ``id_field=None``
    skips the check for the id column ``read_mosaic`` needs (``bench_mixture.py`` writes
    token windows without one).
    """
    streaming = _import_streaming()
    n = _n_rows(rows)
    if id_field is not None and id_field not in rows:
        raise ValueError(f"rows need a unique {id_field!r} column")
    cols = _mds_columns(rows)
    with streaming.MDSWriter(
        out=os.path.abspath(out_dir), columns=cols, size_limit=int(shard_bytes), progress_bar=False
    ) as w:
        for i in range(n):
            w.write({k: (v[i] if v.ndim > 1 else v[i].item()) for k, v in rows.items()})
    return out_dir


def read_mosaic(
    url: str,
    cache_dir: str,
    cache_limit: int,
    batch_size: int,
    step_s: float,
    epochs: int,
    num_workers: int,
    *,
    id_field: str = "id",
) -> dict[str, Any]:
    """``streaming.StreamingDataset(remote=url, local=cache_dir, cache_limit=cache_limit,
    shuffle=True, batch_size=batch_size)`` through ``streaming.StreamingDataLoader``.

    Pointing it at the proxy: Mosaic's ``S3Downloader._create_s3_client`` (streaming/base/
    storage/download.py:260) builds ``Session().client("s3", config=...,
    endpoint_url=os.environ.get("S3_ENDPOINT_URL"))``, so ``S3_ENDPOINT_URL`` is set to the
    benchmark's ``AWS_ENDPOINT_URL`` for the run (with ``None`` boto3 would fall back to
    ``AWS_ENDPOINT_URL`` itself; the explicit one is Mosaic's documented knob). Downloads are
    plain boto3 ``download_file`` (no s5cmd for ``s3://``). ``MOSAICML_STREAMING_AWS_
    REQUESTER_PAYS`` is not set. A 400 from S3 makes Mosaic retry unsigned (download.py:231).

    Cache limit: ``cache_limit`` (bytes) must be at least 4 x the largest shard (raw + zip
    sizes) or the constructor raises (streaming/base/dataset.py:514); eviction is whole
    shards, least recently used, before each shard download (dataset.py:1176), so with a
    limit under the dataset size evicted shards are downloaded again - within one epoch
    too, since its shuffle draws from several shards at once (smoke, 1.5 MB table, limit
    0.5x: 3.6 MB fetched in one epoch; even at 2x the table, 2 workers fetched 2 of 6
    shards twice; not investigated, the limit was never reached). ``local`` is
    guarded by shared memory named after it: ``clean_stale_shared_memory()`` is called
    first, and ``cache_dir`` must not be used by another live ``StreamingDataset``.
    Shuffle is Mosaic's default ``py1e`` (shuffle_block_size ~ 1<<18 samples, so for small
    tables a global shuffle); ``predownload`` is its default ``8 x batch_size`` per worker;
    ``num_canonical_nodes`` its default for one node.
    """
    streaming = _import_streaming()
    from streaming.base.util import clean_stale_shared_memory

    ep = _endpoint()
    saved = os.environ.get("S3_ENDPOINT_URL")
    os.environ["S3_ENDPOINT_URL"] = ep
    try:
        clean_stale_shared_memory()
        ds = streaming.StreamingDataset(
            remote=url,
            local=cache_dir,
            cache_limit=int(cache_limit),
            shuffle=True,
            batch_size=batch_size,
        )
        n_rows = ds.num_samples
        loader = streaming.StreamingDataLoader(
            ds,
            batch_size=batch_size,
            num_workers=num_workers,
            drop_last=False,
            **_fork(num_workers),
        )
        return _timed_loop(loader, epochs=epochs, step_s=step_s, n_rows=n_rows, id_field=id_field)
    finally:
        if saved is None:
            os.environ.pop("S3_ENDPOINT_URL", None)
        else:
            os.environ["S3_ENDPOINT_URL"] = saved


# -- which peers work here ----------------------------------------------------------------


def available() -> dict[str, str | None]:
    """``{peer: None}`` for a peer that imports here, ``{peer: "why not"}`` otherwise."""
    out: dict[str, str | None] = {}
    try:
        import litdata  # noqa: F401

        out["litdata"] = None
    except Exception as exc:  # pragma: no cover - depends on the machine
        out["litdata"] = f"{type(exc).__name__}: {exc}"
    try:
        _import_streaming()
        out["mosaic"] = None
    except Exception as exc:  # pragma: no cover - depends on the machine
        out["mosaic"] = f"{type(exc).__name__}: {exc}"
    return out


PEERS = {"litdata": (write_litdata, read_litdata), "mosaic": (write_mosaic, read_mosaic)}


# -- smoke run ----------------------------------------------------------------------------


def _smoke() -> None:  # noqa: PLR0915  # pragma: no cover - a manual check
    import importlib.util
    import logging
    import tempfile
    import uuid
    from pathlib import Path

    import boto3

    here = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(
        "_df_remote_conftest", here / "tests" / "remote" / "conftest.py"
    )
    conf = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = conf  # dataclasses look their module up there
    spec.loader.exec_module(conf)
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = conf.FaultProxy(host, port)
    proxy.latency = 0.020
    tmp = Path(tempfile.mkdtemp(prefix="df_remote_peers_"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "S3_ENDPOINT_URL"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ENDPOINT_URL=proxy.endpoint,
        AWS_ACCESS_KEY_ID=conf.KEY_ID,
        AWS_SECRET_ACCESS_KEY=conf.SECRET,
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
    )
    client = boto3.session.Session(
        aws_access_key_id=conf.KEY_ID, aws_secret_access_key=conf.SECRET, region_name="us-east-1"
    ).client("s3", endpoint_url=f"http://{host}:{port}")
    bucket = f"dfpeers-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)

    n, d = int(os.environ.get("SMOKE_ROWS", 20_000)), 16
    rng = np.random.default_rng(0)
    rows = {
        "x": rng.standard_normal((n, d), dtype=np.float32),
        "id": np.arange(n, dtype=np.int64),
    }
    shard_bytes = 256 << 10
    data_bytes = _row_bytes(rows) * n
    frac = float(os.environ.get("SMOKE_CACHE_FRAC", 0.5))  # cache limit / table bytes
    cache_limit = max(int(data_bytes * frac), 4 * shard_bytes + (64 << 10))  # Mosaic's floor
    batch, step_s, workers = 256, 0.002, int(os.environ.get("SMOKE_WORKERS", 1))
    print(
        f"table {n} rows x {_row_bytes(rows)} B = {data_bytes / 1e6:.2f} MB, "
        f"shards {shard_bytes >> 10} KiB, cache_limit {cache_limit / 1e6:.2f} MB, "
        f"batch {batch}, step {step_s * 1e3:.0f} ms, workers {workers}, proxy latency 20 ms"
    )
    print(available())
    only = os.environ.get("SMOKE_PEERS")
    for peer, (write, read) in PEERS.items():
        if only and peer not in only.split(","):
            continue
        out = tmp / f"{peer}-out"
        t = time.perf_counter()
        write(rows, str(out), shard_bytes)
        files = sorted(p for p in out.rglob("*") if p.is_file())
        written = sum(p.stat().st_size for p in files)
        for p in files:
            client.put_object(
                Bucket=bucket, Key=f"{peer}/{p.relative_to(out).as_posix()}", Body=p.read_bytes()
            )
        print(
            f"[{peer}] wrote {len(files)} files, {written / 1e6:.2f} MB in "
            f"{time.perf_counter() - t:.1f}s"
        )
        proxy.reset_counts()
        res = read(
            f"s3://{bucket}/{peer}",
            str(tmp / f"{peer}-cache"),
            cache_limit,
            batch,
            step_s,
            1,
            workers,
        )
        gets = proxy.count("GET")
        paths = [q.split("?", 1)[0] for m, q in proxy.requests if m == "GET"]
        again = sorted({q.rsplit("/", 1)[-1] for q in paths if paths.count(q) > 1})
        print(
            f"[{peer}] {res['samples']} samples in {res['seconds']:.2f}s = "
            f"{res['samples_per_s']:.0f}/s, starvation {res['starvation']:.2f}, first batch "
            f"{res['first_batch_s']:.2f}s, rows_ok {res['rows_ok']}; proxy: "
            f"{len(proxy.requests)} requests ({gets} GET), {proxy.bytes_sent / 1e6:.2f} MB; "
            f"fetched more than once: {again or 'none'}"
        )
    proxy.stop()
    server.stop()


if __name__ == "__main__":
    _smoke()
