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
from ._schema import SchemaTracker
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
    url: str, max_pages: int | None, page_size: int | None, headers: Mapping[str, str]
) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"url is not a valid URL: {url!r} ({exc})") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"url must be an absolute http:// or https:// URL. Got {url!r} instead.")
    for name, value in (("max_pages", max_pages), ("page_size", page_size)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(f"{name} must be an int >= 1 or None. Got {value!r} instead.")
    for hname, hvalue in headers.items():
        if not isinstance(hname, str) or not hname or not isinstance(hvalue, str):
            raise ConfigError(
                f"headers must map non-empty names to string values; header {hname!r} does not"
            )


def _describe_config(cfg: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={cfg.get(k)!r}" for k in _IDENTITY)


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
    _check_args(url, max_pages, page_size, headers)
    if (
        isinstance(max_group_pages, bool)
        or not isinstance(max_group_pages, int)
        or max_group_pages < 1
    ):
        raise ConfigError(f"max_group_pages must be an int >= 1. Got {max_group_pages!r} instead.")
    paginator = make_paginator(paginate) if isinstance(paginate, str) else paginate
    if retry is None:
        retry = RetryPolicy(max_attempts=max_attempts, base=retry_base)
    if rate_limiter is None and rate is not None:
        rate_limiter = RateLimiter(rate)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"out must be a directory; {root} is a file", path=root)
    root.mkdir(parents=True, exist_ok=True)
    ck = Checkpoint(root, fsync=fsync)
    sink = ParquetSink(root, fsync=fsync)
    drift = DriftLog(root, fsync=fsync)
    tracker = SchemaTracker()
    config = {
        "url": url,
        "paginate": paginator.spec,
        "records_path": records_path,
        "primary_key": primary_key,
        "page_size": page_size,
    }
    state = ck.load()
    resumed = state is not None
    if state is None:
        if sink.parts():
            raise ConfigError(
                f"{root} already holds Parquet parts but no checkpoint; refusing to mix a new "
                "ingest into it. Choose an empty --out directory.",
                path=root,
            )
        drift.truncate(0)
        state = {
            "config": config,
            "header_names": sorted(headers),  # names only: values may be secrets
            "status": "running",
            "stop_reason": None,
            "next": paginator.first(url, page_size).to_json(),
            "pages": 0,
            "records": 0,
            "duplicates": 0,
            "retries": 0,
            "requests": 0,
            "drift_events": 0,
            "drift_bytes": 0,
            "last_page_hash": None,
            "schema": tracker.state_dict(),
            "paginator": paginator.state_dict(),
        }
        ck.save(state)
    else:
        old = state.get("config", {})
        differs = [k for k in _IDENTITY if old.get(k) != config[k]]
        if differs:
            raise ConfigError(
                f"{root} holds an ingest of a different source ({_describe_config(old)}); this run asks "
                f"for {_describe_config(config)} (differs in {', '.join(differs)}). Use another --out "
                "directory, or delete this one to start over.",
                path=root,
            )
        try:
            tracker.load_state_dict(state["schema"])
            paginator.load_state_dict(state["paginator"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IngestError(
                f"the checkpoint {ck.path} is incomplete: {exc!r}", path=ck.path
            ) from exc

    def result(**extra: Any) -> IngestResult:
        return IngestResult(
            out=root,
            status=state["status"],
            stop_reason=state["stop_reason"],
            pages=state["pages"],
            records=state["records"],
            duplicates=state["duplicates"],
            retries=state["retries"],
            requests=state["requests"],
            drift_events=state["drift_events"],
            schema=dict(tracker.columns),
            resumed=resumed,
            **extra,
        )

    if state["status"] == "done" or (
        state["status"] == "stopped" and max_pages is not None and state["pages"] >= max_pages
    ):
        return result(already_done=True)

    removed = sink.discard_uncommitted(state["pages"])
    if removed:
        log.info("discarded %s written after the last checkpoint", ", ".join(removed))
    drift.truncate(state["drift_bytes"])
    seen_keys: set[str] = set()
    if primary_key is not None:
        for part in sink.parts():
            try:
                col = pq.read_table(part, columns=[primary_key]).column(0).to_pylist()
            except (pa.ArrowException, OSError) as exc:
                raise IngestError(
                    f"cannot read primary key {primary_key!r} from committed part {part}: {exc}",
                    path=part,
                    field=primary_key,
                ) from exc
            seen_keys.update(str(v) for v in col)

    counters = {"retries": 0}

    def on_retry(request: PageRequest, attempt: int, reason: str, delay: float) -> None:
        counters["retries"] += 1

    source = RestSource(
        records_path=records_path,
        headers=headers,
        retry=retry,
        rate_limiter=rate_limiter,
        timeout=timeout,
        transport=transport,
        on_retry=on_retry,
    )
    base_retries, base_requests = state["retries"], state["requests"]

    def sync_counters() -> None:
        state["retries"] = base_retries + counters["retries"]
        state["requests"] = base_requests + source.requests

    walk = fetch_pages(
        source.fetch,
        paginator,
        PageRequest.from_json(state["next"]),
        max_pages=max_pages,
        last_hash=state["last_page_hash"],
    )
    fetcher: Prefetcher | Inline = Prefetcher(walk) if prefetch else Inline(walk)
    totals = {"pages": 0, "records": 0}

    def flatten_page(f: FetchedPage) -> list[dict[str, Any]]:
        rows = []
        for i, rec in enumerate(f.response.records):
            try:
                rows.append(flatten_record(rec))
            except SchemaError as exc:
                raise SchemaError(
                    f"page {f.request.index} ({f.request.describe()}), record {i}: {exc}",
                    page=f.request.index,
                    row=i,
                    field=exc.field,
                ) from exc
        if primary_key is None:
            return rows
        kept = []
        for i, row in enumerate(rows):
            value = row.get(primary_key)
            if value is None:
                raise SchemaError(
                    f"page {f.request.index} ({f.request.describe()}), record {i} has no "
                    f"primary key {primary_key!r}",
                    page=f.request.index,
                    row=i,
                    field=primary_key,
                )
            key = str(value)
            if key in seen_keys:
                state["duplicates"] += 1
                continue
            seen_keys.add(key)
            kept.append(row)
        return kept

    def commit(pages: list[FetchedPage]) -> None:
        """Part (temp, fsync, rename) -> drift lines (fsync) -> state (atomic): one commit."""
        rows: list[dict[str, Any]] = []
        events = []
        for f in pages:
            page_rows = flatten_page(f)
            if f.response.records:
                events += tracker.observe(page_rows, page=f.request.index)
                state["pages"] = f.request.index + 1
                totals["pages"] += 1
            rows += page_rows
        first, last = pages[0], pages[-1]
        if rows:
            sink.write_part(
                first.request.index,
                tracker.to_table(rows),
                {"datafuel.ingest.pages": f"{first.request.index}-{last.request.index}"},
            )
        state["drift_bytes"] = drift.append(e.to_json() for e in events)
        for e in events:
            log.info("page %d: drift %s", e.page, e.to_json())
        state["drift_events"] += len(events)
        state["records"] += len(rows)
        totals["records"] += len(rows)
        if last.next is None:
            state["status"], state["stop_reason"], state["next"] = "done", last.stop_reason, None
        else:
            state["next"] = last.next.to_json()
        state["schema"] = tracker.state_dict()
        state["paginator"] = last.paginator_state
        state["last_page_hash"] = last.last_hash
        state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        sync_counters()
        ck.save(state)
        log.debug(
            "pages %d-%d committed: %d rows", first.request.index, last.request.index, len(rows)
        )
        if on_progress is not None and (rows or last.response.records):
            on_progress(
                IngestProgress(
                    page=last.request.index,
                    page_records=len(rows),
                    pages=state["pages"],
                    records=state["records"],
                    retries=state["retries"],
                    duplicates=state["duplicates"],
                    drift_events=state["drift_events"],
                )
            )

    state["status"] = "running"
    try:
        while True:
            if max_pages is not None and state["pages"] >= max_pages:
                state["status"], state["stop_reason"] = "stopped", f"max pages ({max_pages})"
                sync_counters()
                ck.save(state)
                break
            pages, error, ended = fetcher.take(max_group_pages)
            if pages:
                commit(pages)
            if error is not None:
                sync_counters()
                ck.save(state)
                if isinstance(error, RetryExhaustedError):
                    raise RetryExhaustedError(
                        f"{error}. The checkpoint in {root} keeps {state['pages']} page(s) and "
                        f"{state['records']} record(s); rerun the same command to continue.",
                        page=error.page,
                    ) from error
                raise error
            if state["status"] == "done":
                break
            if ended and not (max_pages is not None and state["pages"] >= max_pages):
                raise IngestError(
                    f"the page walk of {url} ended without reaching the end of the listing"
                )
    finally:
        fetcher.close(timeout=None if state["status"] == "done" else 5.0)
        source.close()
    return result(new_pages=totals["pages"], new_records=totals["records"])
