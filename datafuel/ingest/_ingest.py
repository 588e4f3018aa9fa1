"""The ingest loop: fetch, flatten, de-duplicate, unify, write a part, commit the state.

Exactly-once: a page's rows reach ``part-NNNNNNNN.parquet`` (temp, fsync, rename)
*before* ``_state.json`` is atomically replaced with the next request. On a rerun the
state says which pages are committed; anything written after it (a part or drift lines
whose state never landed) is discarded and those pages are fetched again.

With ``prefetch`` (the default) a background thread walks the listing ahead of the
writer (:mod:`._prefetch`); every page that arrived while the previous commit was
being made is committed with the next one, as one part named after its first page
(group commit). Fetched-ahead pages live only in memory until their commit, so this
changes nothing about what a kill leaves behind; it only amortizes the fsyncs when the
API is faster than the disk.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from datafuel._checks import check_int
from datafuel._lock import locked
from datafuel.errors import (
    ConfigError,
    DatafuelError,
    IngestError,
    RetryExhaustedError,
    SchemaError,
)

from ._checkpoint import STATE_VERSION, Checkpoint, DriftLog
from ._concurrent import ConcurrentFetcher
from ._flatten import flatten_columns, flatten_record
from ._html import DEFAULT_HTML_RATE, HtmlPaginator, HtmlSpec, RobotsPolicy
from ._limits import DEFAULT_DEADLINE, DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, ResponseLimits
from ._paginate import PageRequest, Paginator, _with_params, make_paginator
from ._prefetch import FetchedPage, Inline, Prefetcher, fetch_pages
from ._ratelimit import RateLimiter
from ._retry import RetryPolicy
from ._schema import DriftEvent, SchemaTracker
from ._secrets import SecretPolicy, check_headers, origin, redact_url
from ._sink import ParquetSink, part_index
from ._source import RestSource, ssl_context
from ._throttle import Throttle

__all__ = ["IngestProgress", "IngestResult", "ingest"]

log = logging.getLogger("datafuel.ingest")

#: Pages in flight at most (``--concurrency``) for page and offset pagination.
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 64

#: Arguments that define *what* is ingested; a rerun into the same directory must match.
_IDENTITY = ("url", "paginate", "records_path", "primary_key", "page_size")


@dataclass
class IngestProgress:
    """Passed to ``on_progress`` after each committed page."""

    page: int
    page_records: int
    pages: int
    records: int
    retries: int
    duplicates: int
    drift_events: int


@dataclass
class IngestResult:
    """What an :func:`ingest` call did and where the dataset stands."""

    out: Path
    status: str  # "done" (the listing ended) or "stopped" (max_pages reached)
    stop_reason: str | None
    pages: int
    records: int
    duplicates: int
    retries: int
    requests: int
    drift_events: int
    schema: dict[str, str] = field(default_factory=dict)
    new_pages: int = 0
    new_records: int = 0
    resumed: bool = False
    already_done: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


def _check_args(
    url: str,
    max_pages: int | None,
    page_size: int | None,
    max_group_pages: int,
    headers: Mapping[str, str],
    concurrency: int,
) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"url is not a valid URL: {redact_url(url)!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"url must be an absolute http:// or https:// URL. Got {redact_url(url)!r} instead."
        )
    check_int("max_pages", max_pages, none_ok=True)
    check_int("page_size", page_size, none_ok=True)
    check_headers(headers)
    check_int("max_group_pages", max_group_pages)
    check_int("concurrency", concurrency, high=MAX_CONCURRENCY)


def _describe_config(cfg: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={cfg.get(k)!r}" for k in _IDENTITY)


@dataclass
class IngestState:
    """What one :func:`ingest` run carries from step to step.

    ``state`` is the checkpoint's content (what ``_state.json`` holds), updated in
    place and written by :meth:`save`. ``retries`` counts this run's retries (the
    source reports them through :meth:`on_retry`); ``base_retries`` and
    ``base_requests`` are the totals of the runs before; ``new_pages`` and
    ``new_records`` count this run's commits.
    """

    root: Path
    paginator: Paginator
    checkpoint: Checkpoint
    sink: ParquetSink
    drift: DriftLog
    tracker: SchemaTracker
    secrets: SecretPolicy
    state: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    primary_key: str | None = None
    on_progress: Callable[[IngestProgress], None] | None = None
    source: RestSource | None = None
    seen_keys: set[str] = field(default_factory=set)
    retries: int = 0
    base_retries: int = 0
    base_requests: int = 0
    new_pages: int = 0
    new_records: int = 0
    url: str = ""
    secret_params: tuple[str, ...] = ()
    _count_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: what ``_common_metadata`` holds now (``None``: not written by this run yet)
    common_schema: pa.Schema | None = None
    #: ``--incremental FIELD``: its highest committed value is tracked in the state
    incremental: str | None = None
    #: an HTML listing's ``--select``: a page it matches nothing on is layout drift
    html_select: str | None = None

    def finished(self, max_pages: int | None) -> bool:
        """The listing ended, or a ``max_pages`` stop that this run's limit does not lift."""
        status = self.state["status"]
        return status == "done" or (status == "stopped" and self.reached(max_pages))

    def reached(self, max_pages: int | None) -> bool:
        return max_pages is not None and self.state["pages"] >= max_pages

    def on_retry(self, request: PageRequest, attempt: int, reason: str, delay: float) -> None:
        with self._count_lock:  # concurrent workers retry too
            self.retries += 1

    def save(self) -> None:
        """Bring the retry and request totals up to date and write the checkpoint."""
        requests = self.source.requests if self.source is not None else 0
        self.state["retries"] = self.base_retries + self.retries
        self.state["requests"] = self.base_requests + requests
        self.checkpoint.save(self.state)

    def result(self, **extra: Any) -> IngestResult:
        state = self.state
        return IngestResult(
            out=self.root,
            status=state["status"],
            stop_reason=state["stop_reason"],
            pages=state["pages"],
            records=state["records"],
            duplicates=state["duplicates"],
            retries=state["retries"],
            requests=state["requests"],
            drift_events=state["drift_events"],
            schema=dict(self.tracker.columns),
            resumed=self.resumed,
            **extra,
        )

    def commit(self, pages: list[FetchedPage]) -> None:
        """Part (temp, fsync, rename) -> ``_common_metadata`` (same) -> drift lines (fsync) ->
        state (atomic): one commit."""
        columns, rows, events = self._flatten_and_observe(pages)
        first, last = pages[0], pages[-1]
        if self.incremental is not None:
            _raise_high(self.state["incremental"], columns, first.request.index)
        if rows:
            meta = {"datafuel.ingest.pages": f"{first.request.index}-{last.request.index}"}
            if "incremental" in self.state:
                meta["datafuel.ingest.run"] = str(len(self.state["incremental"]["runs"]) - 1)
            table = self.tracker.table_from_columns(columns)
            part = self.sink.write_part(first.request.index, table, meta)
            self.state["parts"] += 1
            self.state["last_part"] = part.name
            # the schema of every part so far, before the state that commits them (rewritten
            # only when it changed: two fsyncs less per commit)
            schema = self.tracker.arrow_schema
            if schema != self.common_schema:
                self.sink.write_common_metadata(schema)
                self.common_schema = schema
        self.state["drift_bytes"] = self.drift.append(e.to_json() for e in events)
        for e in events:
            log.info("page %d: drift %s", e.page, e.to_json())
        self._advance(last, rows, len(events))
        self.save()
        log.debug("pages %d-%d committed: %d rows", first.request.index, last.request.index, rows)
        if self.on_progress is not None and (rows or last.response.records):
            self.on_progress(self._progress(last, rows))

    def _flatten_and_observe(
        self, pages: list[FetchedPage]
    ) -> tuple[list[tuple[dict[str, list[Any]], int]], int, list[DriftEvent]]:
        """The group's new rows as ``(columns, rows)`` per page, merged page by page into
        the schema; their number; and the group's drift events."""
        columns: list[tuple[dict[str, list[Any]], int]] = []
        total = 0
        events: list[DriftEvent] = []
        for f in pages:
            cols, n, duplicates = _flatten_page(f, self.primary_key, self.seen_keys)
            self.state["duplicates"] += duplicates
            if self.html_select is not None and not f.response.records:
                events.append(DriftEvent(f.request.index, "no_records", self.html_select))
            if f.response.records:
                events += self.tracker.observe_columns(cols, n, page=f.request.index)
                self.state["pages"] = f.request.index + 1
                self.new_pages += 1
            if n:
                columns.append((cols, n))
                total += n
        return columns, total, events

    def _advance(self, last: FetchedPage, rows: int, events: int) -> None:
        """Move the checkpoint past ``last``, the group's last page."""
        state = self.state
        state["drift_events"] += events
        state["records"] += rows
        self.new_records += rows
        if last.next is None:
            state["status"], state["stop_reason"], state["next"] = "done", last.stop_reason, None
        else:
            state["next"] = last.next.to_json()  # secret values as ***
        state["schema"] = self.tracker.state_dict()
        state["paginator"] = last.paginator_state
        state["last_page_hash"] = last.last_hash
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def _progress(self, last: FetchedPage, rows: int) -> IngestProgress:
        state = self.state
        return IngestProgress(
            page=last.request.index,
            page_records=rows,
            pages=state["pages"],
            records=state["records"],
            retries=state["retries"],
            duplicates=state["duplicates"],
            drift_events=state["drift_events"],
        )


def _flatten_page(
    page: FetchedPage, primary_key: str | None, seen_keys: set[str]
) -> tuple[dict[str, list[Any]], int, int]:
    """``page``'s records flattened into columns, less those whose key is in ``seen_keys``;
    how many records are left; and how many were dropped.

    Each kept record's key joins ``seen_keys``.
    """
    records = page.response.records
    cols = page.columns if page.columns is not None else _page_columns(page)
    n = len(records)
    if primary_key is None or not n:
        return cols, n, 0
    keys = cols.get(primary_key)
    kept: list[int] = []
    for i, value in enumerate(keys if keys is not None else [None] * n):
        if value is None:
            raise SchemaError(
                f"page {page.request.index} ({page.request.describe()}), record {i} has no "
                f"primary key {primary_key!r}",
                page=page.request.index,
                row=i,
                field=primary_key,
            )
        key = str(value)
        if key not in seen_keys:
            seen_keys.add(key)
            kept.append(i)
    if len(kept) == n:
        return cols, n, 0
    # flattened again from the kept records: a name only the dropped ones had is not the
    # page's (its drift is computed without them), which the columns cannot tell apart
    # from a null
    return flatten_columns([records[i] for i in kept]), len(kept), n - len(kept)


def _page_columns(page: FetchedPage) -> dict[str, list[Any]]:
    """``page``'s records as columns; a record that cannot be flattened is named in the error."""
    records = page.response.records
    try:
        return flatten_columns(records)
    except SchemaError:
        for i, rec in enumerate(records):  # which record: the same check, one at a time
            try:
                flatten_record(rec)
            except SchemaError as one:
                raise SchemaError(
                    f"page {page.request.index} ({page.request.describe()}), record {i}: {one}",
                    page=page.request.index,
                    row=i,
                    field=one.field,
                ) from one
        raise


def _html_setup(
    html: HtmlSpec,
    url: str,
    paginate: str | Paginator,
    rate: float | None,
    rate_limiter: RateLimiter | None,
    ignore_robots: bool,
    timeout: float,
    transport: httpx.BaseTransport | None,
) -> tuple[str | Paginator, float | None, _InBackground[RobotsPolicy] | None]:
    """An HTML listing's paginator, its polite default rate and its ``robots.txt`` (being
    read on a thread while the checkpoint is opened: no page is asked for before it is in)."""
    if html.next is not None or paginate not in ("page", "offset"):
        paginate = HtmlPaginator(html)  # follow the next link, one page at a time
    if rate is None and rate_limiter is None:
        rate = DEFAULT_HTML_RATE  # polite by default
    if ignore_robots:
        log.warning("--ignore-robots: not reading %s/robots.txt", origin(url))
        return paginate, rate, None
    return paginate, rate, _InBackground(lambda: _read_robots(url, timeout, transport))


T = TypeVar("T")


class _InBackground(Generic[T]):
    """``fn()`` run on a thread from now; :meth:`result` waits for it, then returns its
    value or raises its exception."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(fn,), name="datafuel-ingest-robots", daemon=True
        )
        self._thread.start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to the caller of result(), which re-raises it
            self._error = exc

    def result(self) -> T:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def _read_robots(url: str, timeout: float, transport: httpx.BaseTransport | None) -> RobotsPolicy:
    """``robots.txt`` of ``url``'s origin (RFC 9309: a 4xx allows everything)."""
    where = origin(url)
    try:
        with httpx.Client(timeout=timeout, transport=transport, verify=ssl_context()) as client:
            resp = client.get(f"{where}/robots.txt")
    except httpx.HTTPError as exc:
        raise IngestError(
            f"cannot read {where}/robots.txt ({type(exc).__name__}); not crawling without it "
            "(--ignore-robots to override, if you may)"
        ) from exc
    if 400 <= resp.status_code < 500:
        return RobotsPolicy(where, None)
    if resp.status_code != 200:
        raise IngestError(
            f"{where}/robots.txt answered HTTP {resp.status_code}; RFC 9309 reads that as "
            "'disallow all' (--ignore-robots to override, if you may)",
            status=resp.status_code,
        )
    return RobotsPolicy(where, resp.text.splitlines())


def _raise_high(
    inc: dict[str, Any], columns: list[tuple[dict[str, list[Any]], int]], page: int
) -> None:
    """Raise ``inc["high"]`` to the largest value of ``inc["field"]`` in the pages' ``columns``."""
    name = inc["field"]
    values = [v for cols, _ in columns for v in cols.get(name, ()) if v is not None]
    if inc["high"] is not None:
        values.append(inc["high"])
    if not values:
        return
    kinds = {"number" if isinstance(v, (int, float)) else type(v).__name__ for v in values}
    if kinds not in ({"number"}, {"str"}) or any(isinstance(v, bool) for v in values):
        raise SchemaError(
            f"page {page}: --incremental field {name!r} must hold only numbers or only strings "
            f"(ISO dates) to be compared; got {sorted(kinds)}",
            page=page,
            field=name,
        )
    inc["high"] = max(values)


def _committed_high(sink: ParquetSink, name: str) -> Any:
    """The largest value of column ``name`` in the committed parts (``None`` without any)."""
    high: Any = None
    for part in sink.parts():
        try:
            schema = pq.read_schema(part)
            if name not in schema.names:
                continue
            values = [v for v in pq.read_table(part, columns=[name]).column(0).to_pylist()]
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"cannot read {name!r} from part {part}: {exc}", path=part) from exc
        values = [v for v in values if v is not None] + ([high] if high is not None else [])
        high = max(values) if values else high
    return high


def _start_incremental(
    run: IngestState, field_name: str, since_param: str, page_size: int | None
) -> bool:
    """Track ``field_name``; on a finished output, start a run asking only for newer records.

    Returns whether a new run was started (the checkpoint then says ``running`` again,
    from the first page with ``since_param`` = the highest value committed).
    """
    state = run.state
    inc = state.get("incremental")
    if inc is None or inc.get("field") != field_name:
        inc = state["incremental"] = {
            "field": field_name,
            "since_param": since_param,
            "high": _committed_high(run.sink, field_name),
            "runs": [{"run": 0, "first_page": 0, "since": None}],
        }
    inc["since_param"] = since_param
    if state["status"] != "done":
        return False
    high = inc["high"]
    first = run.paginator.first(run.url, page_size)
    params = _with_params(first.params, **({since_param: high} if high is not None else {}))
    pages = state["pages"]
    first = PageRequest(first.url, params, pages, secret_params=run.secret_params)
    inc["runs"].append({"run": len(inc["runs"]), "first_page": pages, "since": high})
    run.paginator.load_state_dict({"seen": []})  # a new walk: its cursors are new too
    state["status"], state["stop_reason"] = "running", None
    state["next"], state["last_page_hash"] = first.to_json(), None
    run.save()
    log.info(
        "incremental run %d from page %d: %s > %r", len(inc["runs"]) - 1, pages, field_name, high
    )
    return True


def _open_or_resume(
    root: Path,
    paginator: Paginator,
    config: dict[str, Any],
    secrets: SecretPolicy,
    *,
    url: str,
    secret_params: tuple[str, ...],
    fsync: bool,
) -> IngestState:
    """The run's state: a new checkpoint in an empty ``root``, or the one already there.

    A checkpoint already there is validated (:func:`validate_state`, then against the
    files: :func:`_check_files`) before anything is acted on.
    """
    run = IngestState(
        root=root,
        paginator=paginator,
        checkpoint=Checkpoint(root, fsync=fsync),
        sink=ParquetSink(root, fsync=fsync),
        drift=DriftLog(root, fsync=fsync),
        tracker=SchemaTracker(),
        secrets=secrets,
        url=url,
        secret_params=secret_params,
    )
    saved = run.checkpoint.load()
    if saved is None:
        _start(run, config)
    else:
        _resume(run, saved, config)
    return run


def _start(run: IngestState, config: dict[str, Any]) -> None:
    """Write the first checkpoint of a new ingest (refusing a directory that holds parts)."""
    if run.sink.parts():
        raise ConfigError(
            f"{run.root} already holds Parquet parts but no checkpoint; refusing to mix a new "
            "ingest into it. Choose an empty --out directory.",
            path=run.root,
        )
    run.drift.truncate(0)
    first = replace(
        run.paginator.first(run.url, config["page_size"]), secret_params=run.secret_params
    )
    run.state = {
        "config": config,
        "header_names": sorted(run.secrets.headers),  # names only: values may be secrets
        "status": "running",
        "stop_reason": None,
        "next": first.to_json(),  # secret values as ***
        "pages": 0,
        "records": 0,
        "duplicates": 0,
        "retries": 0,
        "requests": 0,
        "drift_events": 0,
        "drift_bytes": 0,
        "last_page_hash": None,
        "schema": run.tracker.state_dict(),
        "paginator": run.paginator.state_dict(),
        "parts": 0,
        "last_part": None,
    }
    run.checkpoint.save(run.state)


def _resume(run: IngestState, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Take up ``saved`` if it is an ingest of the same source; restore schema and paginator."""
    old = saved["config"]
    same_url = old["url"] in (config["url"], run.url)  # redacted, or as checkpoints before 2
    differs = [k for k in _IDENTITY if (not same_url if k == "url" else old.get(k) != config[k])]
    if old.get("html") != config.get("html"):
        differs.append("html")
    if differs:
        raise ConfigError(
            f"{run.root} holds an ingest of a different source ({_describe_config(old)}); this run asks "
            f"for {_describe_config(config)} (differs in {', '.join(differs)}). Use another --out "
            "directory, or delete this one to start over.",
            path=run.root,
        )
    path = run.checkpoint.path
    try:
        run.tracker.load_state_dict(saved["schema"])
        run.paginator.load_state_dict(saved["paginator"])
    except (KeyError, TypeError, ValueError) as exc:
        raise IngestError(f"the checkpoint {path} is incomplete: {exc!r}", path=path) from exc
    saved["config"] = config  # a checkpoint before version 2 held the URL unredacted
    saved.setdefault("version", 1)
    run.state = saved
    run.resumed = True
    _check_files(run)


def _check_files(run: IngestState) -> None:
    """Compare the checkpoint with the files: every committed part there, rows and drift agree.

    Raises :class:`IngestError` naming ``_state.json`` and the key at odds with the files;
    nothing is deleted before this passes.
    """
    state, path = run.state, run.checkpoint.path
    pages = state["pages"]
    committed = [p for p in run.sink.parts() if part_index(p) < pages]
    if state["version"] >= 2:
        last = state["last_part"]
        names = [p.name for p in committed]
        if last is not None and last not in names:
            raise _mismatch(path, "last_part", f"names {last}, which is not in {run.root}")
        if last is not None and names[-1] != last:
            raise _mismatch(
                path, "last_part", f"names {last}, but {names[-1]} is a later committed part"
            )
        if len(committed) != state["parts"]:
            raise _mismatch(
                path, "parts", f"says {state['parts']}, but {run.root} holds {len(committed)}"
            )
    elif run.sink.parts()[len(committed) :]:
        raise _mismatch(
            path,
            "pages",
            f"says {pages}, and parts numbered from {pages} on are there; this checkpoint "
            "(version 1) cannot tell whether they were committed, so none is deleted",
        )
    rows = run.sink.row_count(committed)
    if rows != state["records"]:
        raise _mismatch(
            path, "records", f"says {state['records']}, but the committed parts hold {rows} rows"
        )
    run.drift.check(state["drift_bytes"], state["drift_events"], state_path=path)
    if state["version"] < 2:  # what version 1 did not record, now known to be safe
        state["parts"] = len(committed)
        state["last_part"] = committed[-1].name if committed else None
    state["version"] = STATE_VERSION


def _mismatch(path: Path, key: str, what: str) -> IngestError:
    return IngestError(
        f"{path}: key {key!r} {what}. The checkpoint does not match the files (edited, or "
        "files were moved); nothing was changed (no part deleted).",
        path=path,
        field=key,
    )


def _discard_uncommitted(run: IngestState) -> None:
    """Remove what a killed run wrote after its last checkpoint (parts, temps, drift lines)."""
    removed = run.sink.discard_uncommitted(run.state["pages"])
    if removed:
        log.info("discarded %s written after the last checkpoint", ", ".join(removed))
    run.drift.truncate(run.state["drift_bytes"])
    if run.state["parts"]:  # a killed commit may have widened it past the committed parts
        run.common_schema = run.tracker.arrow_schema
        run.sink.write_common_metadata(run.common_schema)


def _next_request(run: IngestState) -> PageRequest:
    """The checkpoint's next request with the secret values put back (from the start URL).

    A next URL on an origin that may not see the headers is refused when there are headers.
    """
    where = f"{run.checkpoint.path} key 'next.url'"
    saved = PageRequest.from_json(run.state["next"])
    url, params = run.secrets.unredact(saved.url, saved.params, where=where)
    if run.secrets.headers and not run.secrets.allowed(url):
        raise IngestError(
            f"{where} points to {origin(url)}, which is not the origin of the start URL or one "
            "given with --allow-origin; refusing to resume there rather than send the headers "
            "to it (or to go on without them)",
            path=run.checkpoint.path,
            field="next.url",
        )
    return replace(saved, url=url, params=tuple(params), secret_params=run.secret_params)


def _committed_keys(sink: ParquetSink, primary_key: str | None) -> set[str]:
    """Every primary key already written (as text), so that reruns drop repeats too."""
    seen: set[str] = set()
    if primary_key is None:
        return seen
    for part in sink.parts():
        try:
            col = pq.read_table(part, columns=[primary_key]).column(0).to_pylist()
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(
                f"cannot read primary key {primary_key!r} from committed part {part}: {exc}",
                path=part,
                field=primary_key,
            ) from exc
        seen.update(str(v) for v in col)
    return seen


def _run(
    run: IngestState,
    fetcher: Prefetcher | Inline | ConcurrentFetcher,
    max_pages: int | None,
    max_group_pages: int,
    url: str,
) -> None:
    """Take fetched pages and commit them until the listing ends, ``max_pages``, or an error."""
    while True:
        if run.reached(max_pages):
            run.state["status"], run.state["stop_reason"] = "stopped", f"max pages ({max_pages})"
            run.save()
            return
        pages, error, ended = fetcher.take(max_group_pages)
        if pages:
            run.commit(pages)
        if error is not None:
            run.save()
            if isinstance(error, RetryExhaustedError):
                raise RetryExhaustedError(
                    f"{error}. The checkpoint in {run.root} keeps {run.state['pages']} page(s) and "
                    f"{run.state['records']} record(s); rerun the same command to continue.",
                    page=error.page,
                ) from error
            raise error
        if run.state["status"] == "done":
            return
        if ended and not run.reached(max_pages):
            raise IngestError(
                f"the page walk of {url} ended without reaching the end of the listing"
            )


def ingest(
    url: str,
    out: str | os.PathLike[str],
    *,
    paginate: str | Paginator = "page",
    records_path: str | None = None,
    primary_key: str | None = None,
    max_pages: int | None = None,
    page_size: int | None = None,
    rate: float | None = None,
    headers: Mapping[str, str] | None = None,
    max_attempts: int = 5,
    retry_base: float = 0.5,
    timeout: float = 30.0,
    retry: RetryPolicy | None = None,
    rate_limiter: RateLimiter | None = None,
    prefetch: bool = True,
    max_group_pages: int = 64,
    fsync: bool = True,
    transport: httpx.BaseTransport | None = None,
    on_progress: Callable[[IngestProgress], None] | None = None,
    allow_origins: Iterable[str] = (),
    secret_params: Iterable[str] = (),
    max_response_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    request_deadline: float = DEFAULT_DEADLINE,
    concurrency: int = DEFAULT_CONCURRENCY,
    total_field: str | None = None,
    incremental: str | None = None,
    since_param: str | None = None,
    html: HtmlSpec | None = None,
    ignore_robots: bool = False,
) -> IngestResult:
    """Pull every page of a JSON REST API into a Parquet dataset directory, resumably.

    Rerunning with the same arguments continues from the checkpoint in ``out``; a
    finished run rerun is a no-op (``already_done``); different identity arguments
    (URL, pagination, records path, primary key, page size) into the same ``out`` are
    refused.

    Parameters
    ----------
    url
        First page's URL (query parameters allowed).
    out
        Output directory: ``part-*.parquet``, ``_state.json``, ``_drift.jsonl``.
    paginate
        ``"page"``, ``"offset"``, ``"cursor:FIELD"``, ``"link"`` or a :class:`Paginator`.
    records_path
        Dotted path to the records list in the body (``"data.items"``); ``None`` when
        the body is the list.
    primary_key
        Column (flattened name) whose repeats are dropped, across pages and reruns.
    max_pages
        Stop after this many pages (rerun with a larger value, or none, to go on).
    page_size
        Sent as the paginator's size parameter (``page_size`` or ``limit``).
    rate
        Client-side limit in requests per second (every attempt counts).
    headers
        Sent with every request to the start URL's origin (scheme, host, port) and to
        ``allow_origins``, and to no other (not after a redirect, nor to a next-page
        URL elsewhere); never written to disk or logs (auth tokens). A value with CR,
        LF or non-ASCII characters is a :class:`ConfigError` naming the header.
    max_attempts, retry_base, timeout
        Attempts per page, first backoff ceiling (s), per-request timeout (s).
    retry, rate_limiter
        Full objects instead of ``max_attempts``/``retry_base`` and ``rate`` (inject clocks).
    prefetch
        Fetch ahead in a background thread while pages are written; pages that
        arrived during a commit are committed together as one part (group commit,
        at most ``max_group_pages``). ``False``: one page, one part, one commit.
    fsync
        Make each commit durable (turn off only for throwaway output).
    transport
        An ``httpx`` transport, e.g. ``httpx.MockTransport`` in tests.
    on_progress
        Called after each committed page with an :class:`IngestProgress`.
    allow_origins
        More origins (``https://host[:port]``) that may receive ``headers``.
    secret_params
        Query parameters to redact (``***``) in everything written or printed, besides
        ``key``, ``api_key``, ``apikey``, ``token``, ``access_token``, ``secret``,
        ``password``, ``signature``, ``sig`` and names ending in ``_``/``-`` plus one of
        them (``x_api_key``). The real values are sent; a rerun takes them again from
        ``url`` (a checkpoint never holds them).
    max_response_bytes
        Largest response body after decompression (default 64 MiB); a larger one
        (a gzip bomb) is cut off while streaming: :class:`IngestError`.
    max_depth
        Deepest JSON nesting of a body (default 200, at most 500): :class:`IngestError`.
    request_deadline
        Seconds of wall clock for one request, redirects and a slow trickle included
        (default 300); past it the request is retried like a timeout.
    concurrency
        Pages in flight at most (default 4, at most 64) for ``"page"`` and ``"offset"``
        pagination, whose requests do not depend on the last answer (cursor and link
        pagination are walked one page at a time, as with ``1``). Pages are still
        committed strictly in page order (a bounded reorder buffer), exactly once. The
        run's first page is fetched alone and sets the page size; an empty page (or a
        204), a 404 after the first page, or the ``total_field`` count ends the listing
        there, and the answers in flight past it are discarded. A *short* page (fewer
        records than the first) does not end it: pages may vary in size, and the empty
        page after the last one ends it at the cost of one request; with offset
        pagination more records after a short page raise ``PaginationError`` (the
        offsets planned ahead skipped some; use ``concurrency=1``). A 429 (or a 503 with
        ``Retry-After``) halves the pages in flight (AIMD, growing back by about one per
        round) and pauses every worker for the ``Retry-After``; ``rate`` is shared by
        all of them.
    total_field
        Dotted path to the total record count in the body (``"total"``): with
        ``concurrency`` > 1 no page past the last one it implies is requested.
    incremental
        A (flattened) field such as ``"updated_at"`` or ``"id"``: the highest value
        committed is kept in the checkpoint (``incremental.high``, committed with the
        page). Run again on a *finished* output, the ingest starts a new run from the
        first page with ``since_param=<high>`` added to the query, appending new parts
        (numbered on from the last page) with the same drift tracking; re-sent records
        are dropped by ``primary_key``. ``incremental.runs`` lists each run's first page
        (a part belongs to the last run starting at or before it; its Parquet metadata
        ``datafuel.ingest.run`` says so too).
    since_param
        Query parameter that carries the high value (default: the field's name).
    html
        An HTML listing instead of JSON (:class:`~datafuel.ingest._html.HtmlSpec`:
        record selector, field selectors, next-link selector); ``records_path`` is
        then unused, and so is ``paginate`` when there is a next-link selector (without
        one, ``"page"``/``"offset"`` number the pages, fetched ``concurrency`` at once). ``robots.txt`` of the start URL's origin is
        obeyed (``ignore_robots=True`` opts out, with a logged warning) and ``rate``
        defaults to 1 request/s. A page the record selector matches nothing on is a
        ``no_records`` event in ``_drift.jsonl`` (``on_empty="skip"``) or an error.

    Returns
    -------
    IngestResult

    Raises
    ------
    RetryExhaustedError
        A page kept failing; every committed page stays and a rerun continues.
    HTTPError, PaginationError, SchemaError, ConfigError
        A 4xx other than 429, a redirect loop, a looping listing or malformed page, an
        unflattenable record, bad arguments.
    IngestError
        A response over a limit; a checkpoint (``_state.json``) that does not validate
        or does not match the files (nothing is deleted then).
    LockedError
        Another ingest is writing into ``out`` (its pid is named).

    Examples
    --------
    >>> from datafuel.ingest import ingest, read_ingested
    >>> result = ingest("https://api.example.com/listings", "out/listings",
    ...                 paginate="cursor:next", records_path="data.items",
    ...                 primary_key="id", headers={"Authorization": "Bearer ..."})  # doctest: +SKIP
    >>> table = read_ingested("out/listings")  # doctest: +SKIP
    """
    headers = dict(headers or {})
    _check_args(url, max_pages, page_size, max_group_pages, headers, concurrency)
    secret_params = tuple(secret_params)
    policy = SecretPolicy(url, allow_origins, secret_params, headers)
    limits = ResponseLimits(max_response_bytes, max_depth, request_deadline)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"out must be a directory; {root} is a file", path=root)
    try:
        with locked(root, "ingest"):
            return _ingest_locked(
                url,
                root,
                policy,
                paginate=paginate,
                records_path=records_path,
                primary_key=primary_key,
                max_pages=max_pages,
                page_size=page_size,
                rate=rate,
                max_attempts=max_attempts,
                retry_base=retry_base,
                timeout=timeout,
                retry=retry,
                rate_limiter=rate_limiter,
                prefetch=prefetch,
                max_group_pages=max_group_pages,
                fsync=fsync,
                transport=transport,
                on_progress=on_progress,
                limits=limits,
                concurrency=concurrency,
                total_field=total_field,
                incremental=incremental,
                since_param=since_param,
                html=html,
                ignore_robots=ignore_robots,
            )
    except DatafuelError as exc:
        _scrub(exc, policy)
        raise


def _scrub(exc: DatafuelError, policy: SecretPolicy) -> None:
    """Take every secret value out of ``exc``'s message (a last line of defence)."""
    clean = policy.scrub(exc.message)
    if clean != exc.message:
        exc.message = clean
        exc.args = (clean, *exc.args[1:])


def _ingest_locked(
    url: str,
    root: Path,
    policy: SecretPolicy,
    *,
    paginate: str | Paginator,
    records_path: str | None,
    primary_key: str | None,
    max_pages: int | None,
    page_size: int | None,
    rate: float | None,
    max_attempts: int,
    retry_base: float,
    timeout: float,
    retry: RetryPolicy | None,
    rate_limiter: RateLimiter | None,
    prefetch: bool,
    max_group_pages: int,
    fsync: bool,
    transport: httpx.BaseTransport | None,
    on_progress: Callable[[IngestProgress], None] | None,
    limits: ResponseLimits,
    concurrency: int,
    total_field: str | None,
    incremental: str | None,
    since_param: str | None,
    html: HtmlSpec | None,
    ignore_robots: bool,
) -> IngestResult:
    """:func:`ingest` once the lock of ``root`` is held."""
    reading_robots = None
    if html is not None:
        paginate, rate, reading_robots = _html_setup(
            html, url, paginate, rate, rate_limiter, ignore_robots, timeout, transport
        )
    paginator = make_paginator(paginate) if isinstance(paginate, str) else paginate
    if retry is None:
        retry = RetryPolicy(max_attempts=max_attempts, base=retry_base)
    if rate_limiter is None and rate is not None:
        rate_limiter = RateLimiter(rate)
    shown_url = policy.redact(url)
    config: dict[str, Any] = {
        "url": shown_url,  # secret values as ***
        "paginate": paginator.spec,
        "records_path": records_path,
        "primary_key": primary_key,
        "page_size": page_size,
    }
    if html is not None:  # another selector on the same pages is another source
        config["html"] = html.spec
    run = _open_or_resume(
        root,
        paginator,
        config,
        policy,
        url=url,
        secret_params=tuple(policy.secret_params),
        fsync=fsync,
    )
    robots = reading_robots.result() if reading_robots is not None else None
    run.incremental = incremental
    run.html_select = html.select if html is not None else None
    if incremental is not None:
        _start_incremental(run, incremental, since_param or incremental, page_size)
    if run.finished(max_pages):
        return run.result(already_done=True)
    first = _next_request(run)
    _discard_uncommitted(run)
    run.primary_key, run.on_progress = primary_key, on_progress
    run.seen_keys = _committed_keys(run.sink, primary_key)
    run.base_retries, run.base_requests = run.state["retries"], run.state["requests"]
    concurrent = (
        prefetch and concurrency > 1 and paginator.planned(first, first.index + 1, 1) is not None
    )
    throttle = Throttle(concurrency, rate_limiter) if concurrent else None
    if throttle is not None and retry.sleep is time.sleep:
        retry = replace(retry, sleep=throttle.sleep)  # a backoff ends when the run does
    run.source = source = RestSource(
        records_path=records_path,
        retry=retry,
        rate_limiter=throttle if throttle is not None else rate_limiter,  # type: ignore[arg-type]
        timeout=timeout,
        transport=transport,
        on_retry=run.on_retry,
        secrets=policy,
        limits=limits,
        on_throttle=throttle.throttled if throttle is not None else None,
        html=html,
        robots=robots,
    )
    fetcher: Prefetcher | Inline | ConcurrentFetcher
    if throttle is not None:
        fetcher = ConcurrentFetcher(
            source.fetch,
            paginator,
            first,
            throttle,
            max_pages=max_pages,
            last_hash=run.state["last_page_hash"],
            total_field=total_field,
            keep_records=primary_key is not None,  # dedup flattens the kept records again
        )
    else:
        walk = fetch_pages(
            source.fetch,
            paginator,
            first,
            max_pages=max_pages,
            last_hash=run.state["last_page_hash"],
        )
        fetcher = Prefetcher(walk) if prefetch else Inline(walk)
    run.state["status"] = "running"
    try:
        _run(run, fetcher, max_pages, max_group_pages, shown_url)
    finally:
        fetcher.close(timeout=None if run.state["status"] == "done" else 5.0)
        source.close()
    return run.result(new_pages=run.new_pages, new_records=run.new_records)
