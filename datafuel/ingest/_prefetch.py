"""Fetching ahead: walk the listing in a background thread into a bounded queue.

:func:`fetch_pages` walks the listing (fetch, derive the next request, detect loops)
and yields one :class:`FetchedPage` per page, each carrying a snapshot of the
paginator's state *as of that page*, so a checkpoint written for it never mentions a
page that was fetched ahead but not committed. :class:`Prefetcher` runs that walk in a
thread; the writer takes every page that has arrived (at least one, at most ``limit``)
and commits them together — a group commit. Pages fetched ahead live only in memory
until their commit, so fetching ahead changes nothing about what a kill leaves behind.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from datafuel.errors import PaginationError, SchemaError

from ._flatten import flatten_columns
from ._paginate import PageRequest, PageResponse, Paginator

__all__ = ["FetchedPage", "Inline", "Prefetcher", "fetch_pages", "page_hash", "try_columns"]


@dataclass
class FetchedPage:
    """One fetched page and what the checkpoint needs if it is the last one committed."""

    request: PageRequest
    response: PageResponse
    next: PageRequest | None
    stop_reason: str | None
    paginator_state: dict[str, Any]
    last_hash: str | None
    #: the records already flattened into columns off the writer's path (by the fetch
    #: thread: :func:`flatten_columns`), or ``None`` (the writer flattens them)
    columns: dict[str, list[Any]] | None = None


def try_columns(records: Sequence[Any]) -> dict[str, list[Any]] | None:
    """``records`` flattened into columns, or ``None`` if one cannot be flattened (the
    writer then flattens them again to raise the error that names the page and record)."""
    try:
        return flatten_columns(records)
    except SchemaError:
        return None


def page_hash(records: Any) -> str:
    """Fingerprint of a page for loop detection: its length, first and last record.

    Cheap (two records, not the page) and enough to catch an API that ignores the
    pagination parameter and serves the same page again.
    """
    probe = [len(records), records[0], records[-1]] if records else [0]
    text = json.dumps(probe, separators=(",", ":"), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fetch_pages(
    fetch: Any,
    paginator: Paginator,
    first: PageRequest,
    *,
    max_pages: int | None,
    last_hash: str | None,
) -> Iterator[FetchedPage]:
    """Walk the listing from ``first``; stop at its end or after page ``max_pages - 1``.

    Raises :class:`~datafuel.errors.PaginationError` when a page repeats the records of
    the page before it (an API that ignores the pagination parameter).
    """
    request = first
    while True:
        response: PageResponse = fetch(request)
        nxt = paginator.next(request, response)
        if nxt is not None and nxt.secret_params != request.secret_params:
            nxt = replace(nxt, secret_params=request.secret_params)  # custom paginators too
        if response.records:
            digest = page_hash(response.records)
            if digest == last_hash:
                raise PaginationError(
                    f"page {request.index} ({request.describe()}) returned exactly the same "
                    "records as the page before it: the API seems to ignore the pagination "
                    f"parameter of --paginate {paginator.spec}; stopping instead of looping",
                    page=request.index,
                )
            last_hash = digest
        yield FetchedPage(
            request=request,
            response=response,
            next=nxt,
            stop_reason=paginator.stop_reason() if nxt is None else None,
            paginator_state=paginator.state_dict(),
            last_hash=last_hash,
        )
        if nxt is None or (max_pages is not None and request.index + 1 >= max_pages):
            return
        request = nxt


class _End:
    pass


class Prefetcher:
    """Run a page walk in a thread, ``depth`` pages ahead at most.

    :meth:`take` returns ``(pages, error, ended)``: the pages that have arrived (blocking
    for the first), the exception the walk raised after them, and whether it finished.
    """

    def __init__(self, pages: Iterator[FetchedPage], *, depth: int = 8) -> None:
        self._pages = pages
        self._queue: queue.Queue[FetchedPage | BaseException | _End] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="datafuel-ingest-fetch", daemon=True)
        self._thread.start()

    def _put(self, item: FetchedPage | BaseException | _End) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for page in self._pages:
                page.columns = try_columns(page.response.records)  # off the writer's path
                if not self._put(page):
                    return
        except BaseException as exc:  # handed to the writer thread, which re-raises it
            self._put(exc)
            return
        self._put(_End())

    def take(self, limit: int) -> tuple[list[FetchedPage], BaseException | None, bool]:
        items = [self._queue.get()]
        while len(items) < limit and isinstance(items[-1], FetchedPage):
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        pages = [i for i in items if isinstance(i, FetchedPage)]
        error = next((i for i in items if isinstance(i, BaseException)), None)
        ended = error is not None or any(isinstance(i, _End) for i in items)
        return pages, error, ended

    def close(self, timeout: float | None = None) -> None:
        """Stop fetching ahead; wait for the thread (an in-flight request finishes first)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)


class Inline:
    """The same interface without a thread: one page per :meth:`take`."""

    def __init__(self, pages: Iterator[FetchedPage]) -> None:
        self._pages = pages

    def take(self, limit: int) -> tuple[list[FetchedPage], BaseException | None, bool]:
        try:
            return [next(self._pages)], None, False
        except StopIteration:
            return [], None, True
        except Exception as exc:  # same contract as Prefetcher.take
            return [], exc, True

    def close(self, timeout: float | None = None) -> None:
        pass
