"""The Ray engine: units and shard writes run as Ray tasks; the driver writes manifests.

How a shard set is written (see the package docstring for the guarantees):

1. The driver removes the old manifest, puts the shared state (a fitted recipe, a
   tokenizer) in the object store once, and submits one *unit task* per payload in
   canonical order. A unit task runs the per-record work and returns its rows (kept
   in the object store) and the data bytes of each row (sent to the driver).
2. The driver feeds the row sizes to a :class:`~datafuel.engine.ShardCutter` in unit
   order. Each shard that closes becomes a *write task* that gathers its rows from
   the units' objects and writes ``shard-0000k.*`` straight into the output
   directory (:func:`datafuel.loaders.write_shard`: temp folder, then rename).
3. When every write task has returned its entry the driver writes the manifest, once.

Into a bucket (``shard_sink(..., upload=ShardUpload(url))``, what a build with
``--out s3://...`` asks for): a write task writes shard ``k`` into a temporary folder
on its own worker's disk, uploads its files to ``url`` (``ObjectStore.put_file`` with
the sha256 as metadata, retried inside the store), removes the folder, and returns the
entry (name, bytes, sha256 of each file) to the driver. A file already in the bucket
with the same size and ``sha256`` metadata is not uploaded again (a HEAD first, only
for names the set's listing holds with that size). The driver's directory receives
only the manifest, written from the entries, so the build needs no filesystem shared
with the workers. The workers reach the bucket with the credentials of **their own
environment** (``AWS_*``, ``GOOGLE_*``, ``AZURE_*`` as for ``ObjectStore``): on a
local instance started by this process they inherit the driver's; on a cluster, set
them on every node (the environment ``ray start`` runs in, an instance role, a
mounted credentials file). They are deliberately not shipped with the tasks, nor
through ``runtime_env={"env_vars": ...}``: that would store the secrets in Ray's GCS
(and its dashboard and logs) for anyone with access to the cluster.

At most ``max_in_flight`` unit tasks and as many write tasks are pending per shard
set, so the driver's memory and the object store hold a bounded window of the data
(plus the rows of the shard being filled). A worker that dies is retried by Ray
(``max_retries``); unit and write tasks are pure functions of their inputs, so a
retry rewrites identical bytes and no row is duplicated. A task that raises a
:class:`~datafuel.errors.DatafuelError` (a bad record) is not retried: the same
error, naming the same file or row, is raised on the driver.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from datafuel._checks import check_int
from datafuel.errors import ConfigError, DatafuelError, EngineError
from datafuel.loaders import Field, ShardWriter
from datafuel.loaders._parts import start_shard_set, write_manifest, write_shard

from ._base import (
    Engine,
    RowsCallback,
    ShardSink,
    ShardUpload,
    UnitFn,
    concat_rows,
    map_chunk,
    pack_rows,
)
from ._plan import ShardCutter, ShardPlan, row_bytes
from ._upload import upload_shard_files

__all__ = ["RayEngine", "import_ray"]

_INSTALL = "pip install 'datafuel[ray]'"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`~datafuel.errors.ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"--engine ray needs Ray Data, which is not installed: {_INSTALL} "
            "(or use --engine local).",
        ) from exc
    return ray


# -- task bodies (run on workers) ------------------------------------------------------
def _run_unit(
    fn: UnitFn, shared: Any, payload: Any, fields: Mapping[str, Field]
) -> tuple[Any, Any]:
    batch = dict(fn(shared, payload))
    return pack_rows(fields, batch), row_bytes(fields, batch)


def _write_plan(
    directory: str,
    fields: Mapping[str, Field],
    number: int,
    first_row: int,
    ranges: list[tuple[int, int]],
    check_finite: bool,
    *batches: Mapping[str, Any],
) -> dict[str, Any]:
    batch = concat_rows(fields, batches, ranges)
    return write_shard(
        directory, fields, batch, shard=number, first_row=first_row, check_finite=check_finite
    )


#: one ObjectStore per set URL per worker process (its client and connections reused)
_STORES: dict[str, Any] = {}


def _store(url: str) -> Any:
    store = _STORES.get(url)
    if store is None:
        from datafuel.loaders._remote import ObjectStore

        store = _STORES[url] = ObjectStore(url)
    return store


def _upload_plan(
    url: str,
    listed: Mapping[str, int],
    fields: Mapping[str, Field],
    number: int,
    first_row: int,
    ranges: list[tuple[int, int]],
    check_finite: bool,
    *batches: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, int]]:
    """Shard ``number`` written on this worker's disk and uploaded to ``url``: its entry, counts."""
    batch = concat_rows(fields, batches, ranges)
    store = _store(url)
    tmp = tempfile.mkdtemp(prefix=f"datafuel-shard-{number:05d}-")
    try:
        entry = write_shard(
            tmp, fields, batch, shard=number, first_row=first_row, check_finite=check_finite
        )
        counts = upload_shard_files(store, entry, tmp, listed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry, counts


_SHARD_FILE = re.compile(r"^shard-\d{5,}\.[A-Za-z0-9_-]+\.(bin|idx)$")


def _clear_shard_files(directory: Path) -> None:
    """Shard files an earlier build left in ``directory``: the new manifest will not name them."""
    for p in directory.iterdir():
        if _SHARD_FILE.match(p.name) and p.is_file():
            p.unlink()


_REMOTES: dict[str, Any] = {}


def _remote(ray: Any, fn: Callable[..., Any]) -> Any:
    if fn.__name__ not in _REMOTES:
        _REMOTES[fn.__name__] = ray.remote(fn)
    return _REMOTES[fn.__name__]


#: how long an abort waits for the tasks still in flight before leaving them to finish alone
_SETTLE_S = 600.0


def _settle(ray: Any, refs: Sequence[Any]) -> None:
    """Let in-flight tasks finish (their results and errors ignored) instead of cancelling them.

    ``ray.cancel`` on a task whose arguments (object refs) are still being resolved can
    fail a RAY_CHECK in Ray's reference counter (``submitted_task_ref_count > 0``) and
    abort the whole driver process; seen here with Ray 2.60 when a bad record stopped a
    build. Waiting costs at most the in-flight window (a few units or shards) and keeps
    a failed build's error a clean Python exception.
    """
    if refs:
        try:
            ray.wait(list(refs), num_returns=len(refs), timeout=_SETTLE_S)
        except Exception:  # best effort: the build is failing already
            return


def _get(ray: Any, refs: Any, what: str) -> Any:
    """``ray.get`` that re-raises a task's DatafuelError as itself, and Ray failures as EngineError."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, DatafuelError):
            raise cause.with_traceback(None) from exc
        raise
    except ray.exceptions.RayError as exc:
        raise EngineError(f"{what}: the Ray task failed past its retries ({exc}).") from exc


class _RaySink(ShardSink):
    def __init__(
        self,
        engine: RayEngine,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        shared: Any,
        *,
        shard_bytes: int,
        provenance: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        check_finite: bool,
        on_rows: RowsCallback | None,
        upload: ShardUpload | None = None,
    ) -> None:
        # the same checks as ShardWriter (fields, shard_bytes, JSON-able provenance), up front
        ShardWriter(
            directory, fields, shard_bytes=shard_bytes, provenance=provenance, metadata=metadata
        )
        self._ray = ray = engine._start()
        self.directory = Path(directory)
        self._dir = str(self.directory.resolve())
        self._fields = dict(fields)
        self._fn = fn
        self._provenance = provenance
        self._metadata = metadata
        self._check_finite = check_finite
        self._on_rows = on_rows
        self._window = engine._window()
        self._opts = {"max_retries": engine.max_retries}
        start_shard_set(self.directory)
        self._upload = upload
        #: what the write tasks uploaded (``upload`` only): files, bytes, files already there
        self.upload_stats = {"uploaded": 0, "uploaded_bytes": 0, "already_there": 0}
        if upload is not None:
            _clear_shard_files(self.directory)  # only the manifest is written here
            listed = {str(k): int(v) for k, v in upload.listed.items()}
            self._target: tuple[Any, ...] = (upload.url.rstrip("/"), ray.put(listed))
            self._write_task = _remote(ray, _upload_plan).options(**self._opts)
        else:
            self._target = (self._dir,)
            self._write_task = _remote(ray, _write_plan).options(**self._opts)
        self._shared = ray.put(shared)
        self._unit_task = _remote(ray, _run_unit).options(num_returns=2, **self._opts)
        self._cutter = ShardCutter(shard_bytes)
        self._units: dict[int, tuple[Any, Any]] = {}  # submitted, sizes not read yet
        self._held: dict[int, Any] = {}  # rows of units the open shard still needs
        self._submitted = 0
        self._next = 0
        self._writes: dict[Any, int] = {}  # write task ref -> shard number
        self._entries: dict[int, dict[str, Any]] = {}
        self._done = False

    def submit(self, payload: Any) -> None:
        if self._done:
            raise ConfigError("this shard sink is closed; open a new one to write more.")
        refs = self._unit_task.remote(self._fn, self._shared, payload, self._fields)
        self._units[self._submitted] = (refs[0], refs[1])
        self._submitted += 1
        while self._submitted - self._next > self._window:
            self._advance()
        self._reap(block=False)

    def _advance(self) -> None:
        """Read the sizes of the next unit in order and dispatch the shards it closes."""
        u = self._next
        batch_ref, sizes_ref = self._units.pop(u)
        sizes = _get(self._ray, sizes_ref, f"{self.directory}: work unit {u}")
        self._held[u] = batch_ref
        if self._on_rows is not None:
            self._on_rows(len(sizes))
        for plan in self._cutter.feed(u, sizes):
            self._dispatch(plan)
        self._next += 1
        first = self._cutter.open_first_unit
        keep_from = first if first is not None else self._next
        for old in [k for k in self._held if k < keep_from]:
            del self._held[old]

    def _dispatch(self, plan: ShardPlan) -> None:
        refs = [self._held[u] for u, _, _ in plan.pieces]
        ranges = [(s, e) for _, s, e in plan.pieces]
        ref = self._write_task.remote(
            *self._target,
            self._fields,
            plan.number,
            plan.first_row,
            ranges,
            self._check_finite,
            *refs,
        )
        self._writes[ref] = plan.number
        while len(self._writes) > self._window:
            self._reap(block=True)

    def _reap(self, *, block: bool) -> None:
        if not self._writes:
            return
        pending = list(self._writes)
        if block:
            ready, _ = self._ray.wait(pending, num_returns=1)
        else:
            ready, _ = self._ray.wait(pending, num_returns=len(pending), timeout=0)
        for ref in ready:
            k = self._writes.pop(ref)
            got = _get(self._ray, ref, f"{self.directory}: shard {k}")
            if self._upload is not None:
                got, counts = got
                for key, n in counts.items():
                    self.upload_stats[key] += int(n)
            self._entries[k] = got

    def close(self) -> dict[str, Any]:
        if self.manifest is not None:
            return self.manifest
        while self._next < self._submitted:
            self._advance()
        last = self._cutter.finish()
        if last is not None:
            self._dispatch(last)
        self._held.clear()
        while self._writes:
            self._reap(block=True)
        entries = [self._entries[k] for k in range(self._cutter.shards)]
        self._done = True
        self.manifest = write_manifest(
            self.directory,
            self._fields,
            entries,
            provenance=self._provenance,
            metadata=self._metadata,
            files_here=self._upload is None,  # else the workers uploaded the files
        )
        return self.manifest

    def abort(self) -> None:
        self._done = True
        _settle(self._ray, [*self._writes, *(r for pair in self._units.values() for r in pair)])
        self._units.clear()
        self._held.clear()
        self._writes.clear()


class RayEngine(Engine):
    """Run a build's per-record work as Ray tasks; output identical to the local engine.

    Parameters
    ----------
    address
        A running cluster (``ray://host:10001`` or ``host:6379``, what ``ray.init``
        takes); ``None`` joins the cluster this process is already connected to, or
        starts a local one. Workers write shards to the output path, so on a
        multi-node cluster it must be a filesystem every node mounts at that path;
        a build into a bucket (``--out s3://...``) needs none: each worker uploads
        the shards it writes, with the credentials of its own environment (see the
        module docstring: set them on the nodes, never in ``runtime_env``).
    num_cpus
        CPUs of a local instance started here (default: all). Ignored with ``address``.
    max_retries
        Times Ray re-runs a task whose worker died. Tasks are pure, so a retry
        rewrites the same bytes.
    max_in_flight
        Unit tasks (and as many write tasks) pending per shard set; default twice
        the cluster's CPUs.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import fixed
    >>> def square(shared, rows):
    ...     return {"x": np.arange(*rows, dtype=np.int64) ** 2}
    >>> with RayEngine(num_cpus=2) as engine:  # doctest: +SKIP
    ...     m = engine.write_units(tempfile.mkdtemp(), {"x": fixed("int64")}, square,
    ...                            [(0, 3), (3, 5)], shard_bytes=1 << 20)
    """

    name = "ray"
    uploads_shards = True

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        max_retries: int = 3,
        max_in_flight: int | None = None,
    ) -> None:
        check_int("max_retries", max_retries, low=0)
        check_int("max_in_flight", max_in_flight, none_ok=True)
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.max_in_flight = max_in_flight
        self._ray: Any = None
        self._owns = False

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r})"

    def _start(self) -> Any:
        if self._ray is not None:
            return self._ray
        ray = import_ray()
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address is None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise EngineError(
                    f"--ray-address {self.address!r}: cannot connect to a Ray cluster ({exc}).",
                ) from exc
            self._owns = True
        self._ray = ray
        return ray

    def _window(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        cpus = int(self._start().cluster_resources().get("CPU", 1))
        return max(2, 2 * cpus)

    def close(self) -> None:
        if self._ray is not None and self._owns:
            self._ray.shutdown()
        self._ray = None
        self._owns = False

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        items: Sequence[Any],
        *,
        shared: Any = None,
        chunk: int = 256,
    ) -> Iterator[Any]:
        ray = self._start()
        task = _remote(ray, map_chunk).options(max_retries=self.max_retries)
        shared_ref = ray.put(shared)
        window = self._window()
        chunks = [items[s : s + chunk] for s in range(0, len(items), chunk)]
        pending: list[Any] = []
        nxt = 0
        try:
            for i in range(len(chunks)):
                while nxt < len(chunks) and len(pending) < window:
                    pending.append(task.remote(fn, shared_ref, chunks[nxt]))
                    nxt += 1
                yield from _get(ray, pending.pop(0), f"map over items {i * chunk}..")
        finally:
            _settle(ray, pending)

    def shard_sink(
        self,
        directory: str | os.PathLike[str],
        fields: Mapping[str, Field],
        fn: UnitFn,
        *,
        shared: Any = None,
        shard_bytes: int,
        provenance: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        check_finite: bool = True,
        on_rows: RowsCallback | None = None,
        upload: ShardUpload | None = None,
    ) -> ShardSink:
        """A Ray shard sink; with ``upload`` the write tasks upload the shards themselves."""
        return _RaySink(
            self,
            directory,
            fields,
            fn,
            shared,
            shard_bytes=shard_bytes,
            provenance=provenance,
            metadata=metadata,
            check_finite=check_finite,
            on_rows=on_rows,
            upload=upload,
        )
