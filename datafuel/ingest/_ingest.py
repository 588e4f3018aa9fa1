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
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from datafuel._checks import check_int
from datafuel.errors import (
    ConfigError,
    IngestError,
    RetryExhaustedError,
    SchemaError,
)

from ._checkpoint import Checkpoint, DriftLog
from ._flatten import flatten_record
from ._paginate import PageRequest, Paginator, make_paginator
from ._prefetch import FetchedPage, Inline, Prefetcher, fetch_pages
from ._ratelimit import RateLimiter
from ._retry import RetryPolicy
from ._schema import DriftEvent, SchemaTracker
from ._sink import ParquetSink
from ._source import RestSource

__all__ = ["IngestProgress", "IngestResult", "ingest"]

log = logging.getLogger("datafuel.ingest")

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
) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"url is not a valid URL: {url!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"url must be an absolute http:// or https:// URL. Got {url!r} instead.")
    check_int("max_pages", max_pages, none_ok=True)
    check_int("page_size", page_size, none_ok=True)
    for hname, hvalue in headers.items():
        if not isinstance(hname, str) or not hname or not isinstance(hvalue, str):
            raise ConfigError(
                f"headers must map non-empty names to string values; header {hname!r} does not"
            )
    check_int("max_group_pages", max_group_pages)


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

    def finished(self, max_pages: int | None) -> bool:
        """The listing ended, or a ``max_pages`` stop that this run's limit does not lift."""
        status = self.state["status"]
        return status == "done" or (status == "stopped" and self.reached(max_pages))

    def reached(self, max_pages: int | None) -> bool:
        return max_pages is not None and self.state["pages"] >= max_pages

    def on_retry(self, request: PageRequest, attempt: int, reason: str, delay: float) -> None:
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
        """Part (temp, fsync, rename) -> drift lines (fsync) -> state (atomic): one commit."""
        rows, events = self._flatten_and_observe(pages)
        first, last = pages[0], pages[-1]
        if rows:
            self.sink.write_part(
                first.request.index,
                self.tracker.to_table(rows),
                {"datafuel.ingest.pages": f"{first.request.index}-{last.request.index}"},
            )
        self.state["drift_bytes"] = self.drift.append(e.to_json() for e in events)
        for e in events:
            log.info("page %d: drift %s", e.page, e.to_json())
        self._advance(last, len(rows), len(events))
        self.save()
        log.debug(
            "pages %d-%d committed: %d rows", first.request.index, last.request.index, len(rows)
        )
        if self.on_progress is not None and (rows or last.response.records):
            self.on_progress(self._progress(last, len(rows)))

    def _flatten_and_observe(
        self, pages: list[FetchedPage]
    ) -> tuple[list[dict[str, Any]], list[DriftEvent]]:
        """The group's new rows, merged page by page into the schema, and its drift events."""
        rows: list[dict[str, Any]] = []
        events: list[DriftEvent] = []
        for f in pages:
            page_rows, duplicates = _flatten_page(f, self.primary_key, self.seen_keys)
            self.state["duplicates"] += duplicates
            if f.response.records:
                events += self.tracker.observe(page_rows, page=f.request.index)
                self.state["pages"] = f.request.index + 1
                self.new_pages += 1
            rows += page_rows
        return rows, events

    def _advance(self, last: FetchedPage, rows: int, events: int) -> None:
        """Move the checkpoint past ``last``, the group's last page."""
        state = self.state
        state["drift_events"] += events
        state["records"] += rows
        self.new_records += rows
        if last.next is None:
            state["status"], state["stop_reason"], state["next"] = "done", last.stop_reason, None
        else:
            state["next"] = last.next.to_json()
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
) -> tuple[list[dict[str, Any]], int]:
    """``page``'s records flattened, less those whose key is in ``seen_keys``; and how many those were.

    Each kept record's key joins ``seen_keys``.
    """
    rows = []
    for i, rec in enumerate(page.response.records):
        try:
            rows.append(flatten_record(rec))
        except SchemaError as exc:
            raise SchemaError(
                f"page {page.request.index} ({page.request.describe()}), record {i}: {exc}",
                page=page.request.index,
                row=i,
                field=exc.field,
            ) from exc
    if primary_key is None:
        return rows, 0
    kept = []
    for i, row in enumerate(rows):
        value = row.get(primary_key)
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
            kept.append(row)
    return kept, len(rows) - len(kept)


def _open_or_resume(
    root: Path,
    paginator: Paginator,
    config: dict[str, Any],
    headers: Mapping[str, str],
    *,
    fsync: bool,
) -> IngestState:
    """The run's state: a new checkpoint in an empty ``root``, or the one already there."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"out must be a directory; {root} is a file", path=root)
    root.mkdir(parents=True, exist_ok=True)
    run = IngestState(
        root=root,
        paginator=paginator,
        checkpoint=Checkpoint(root, fsync=fsync),
        sink=ParquetSink(root, fsync=fsync),
        drift=DriftLog(root, fsync=fsync),
        tracker=SchemaTracker(),
    )
    saved = run.checkpoint.load()
    if saved is None:
        _start(run, config, headers)
    else:
        _resume(run, saved, config)
    return run


def _start(run: IngestState, config: dict[str, Any], headers: Mapping[str, str]) -> None:
    """Write the first checkpoint of a new ingest (refusing a directory that holds parts)."""
    if run.sink.parts():
        raise ConfigError(
            f"{run.root} already holds Parquet parts but no checkpoint; refusing to mix a new "
            "ingest into it. Choose an empty --out directory.",
            path=run.root,
        )
    run.drift.truncate(0)
    run.state = {
        "config": config,
        "header_names": sorted(headers),  # names only: values may be secrets
        "status": "running",
        "stop_reason": None,
        "next": run.paginator.first(config["url"], config["page_size"]).to_json(),
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
    }
    run.checkpoint.save(run.state)


def _resume(run: IngestState, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Take up ``saved`` if it is an ingest of the same source; restore schema and paginator."""
    old = saved.get("config", {})
    differs = [k for k in _IDENTITY if old.get(k) != config[k]]
    if differs:
        raise ConfigError(
            f"{run.root} holds an ingest of a different source ({_describe_config(old)}); this run asks "
            f"for {_describe_config(config)} (differs in {', '.join(differs)}). Use another --out "
            "directory, or delete this one to start over.",
            path=run.root,
        )
    try:
        run.tracker.load_state_dict(saved["schema"])
        run.paginator.load_state_dict(saved["paginator"])
    except (KeyError, TypeError, ValueError) as exc:
        path = run.checkpoint.path
        raise IngestError(f"the checkpoint {path} is incomplete: {exc!r}", path=path) from exc
    run.state = saved
    run.resumed = True


def _discard_uncommitted(run: IngestState) -> None:
    """Remove what a killed run wrote after its last checkpoint (parts, temps, drift lines)."""
    removed = run.sink.discard_uncommitted(run.state["pages"])
    if removed:
        log.info("discarded %s written after the last checkpoint", ", ".join(removed))
    run.drift.truncate(run.state["drift_bytes"])


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
    fetcher: Prefetcher | Inline,
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
        Sent with every request, never written to disk or logs (auth tokens).
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

    Returns
    -------
    IngestResult

    Raises
    ------
    RetryExhaustedError
        A page kept failing; every committed page stays and a rerun continues.
    HTTPError, PaginationError, SchemaError, ConfigError
        A 4xx other than 429, a looping listing or malformed page, an unflattenable
        record, bad arguments.

    Examples
    --------
    >>> from datafuel.ingest import ingest, read_ingested
    >>> result = ingest("https://api.example.com/listings", "out/listings",
    ...                 paginate="cursor:next", records_path="data.items",
    ...                 primary_key="id", headers={"Authorization": "Bearer ..."})  # doctest: +SKIP
    >>> table = read_ingested("out/listings")  # doctest: +SKIP
    """
    headers = dict(headers or {})
    _check_args(url, max_pages, page_size, max_group_pages, headers)
    paginator = make_paginator(paginate) if isinstance(paginate, str) else paginate
    if retry is None:
        retry = RetryPolicy(max_attempts=max_attempts, base=retry_base)
    if rate_limiter is None and rate is not None:
        rate_limiter = RateLimiter(rate)
    config = {
        "url": url,
        "paginate": paginator.spec,
        "records_path": records_path,
        "primary_key": primary_key,
        "page_size": page_size,
    }
    run = _open_or_resume(Path(out), paginator, config, headers, fsync=fsync)
    if run.finished(max_pages):
        return run.result(already_done=True)
    _discard_uncommitted(run)
    run.primary_key, run.on_progress = primary_key, on_progress
    run.seen_keys = _committed_keys(run.sink, primary_key)
    run.base_retries, run.base_requests = run.state["retries"], run.state["requests"]
    run.source = source = RestSource(
        records_path=records_path,
        headers=headers,
        retry=retry,
        rate_limiter=rate_limiter,
        timeout=timeout,
        transport=transport,
        on_retry=run.on_retry,
    )
    walk = fetch_pages(
        source.fetch,
        paginator,
        PageRequest.from_json(run.state["next"]),
        max_pages=max_pages,
        last_hash=run.state["last_page_hash"],
    )
    fetcher: Prefetcher | Inline = Prefetcher(walk) if prefetch else Inline(walk)
    run.state["status"] = "running"
    try:
        _run(run, fetcher, max_pages, max_group_pages, url)
    finally:
        fetcher.close(timeout=None if run.state["status"] == "done" else 5.0)
        source.close()
    return run.result(new_pages=run.new_pages, new_records=run.new_records)
