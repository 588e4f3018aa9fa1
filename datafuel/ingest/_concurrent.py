"""Many pages in flight, committed strictly in page order: page and offset pagination.

Where the request for page *i* is known without page *i - 1*'s answer
(:meth:`~datafuel.ingest.Paginator.planned`), :class:`ConcurrentFetcher` keeps up to
``concurrency`` requests in flight on worker threads. Threads, not asyncio: the
request path (:class:`~datafuel.ingest.RestSource`: hop-by-hop redirects with the
header policy, streaming size and deadline limits, tenacity retries) is synchronous
and proven, ``httpx.Client`` is thread-safe with one shared connection pool, the GIL
is released while a socket waits, and the writer that commits (fsync) stays the plain
loop of :mod:`._ingest`.

- **Order**: answers land in a reorder buffer keyed by page index; :meth:`take` hands
  the writer only the run of consecutive pages from the next uncommitted one, so the
  checkpoint protocol (part, drift lines, state) is unchanged and exactly-once. A
  worker does not start page *i* while *i* is ``window`` pages or more ahead of the
  first page that has not arrived yet, nor more than ``window`` + 64 pages ahead of the
  writer: the buffer is bounded. Pages that arrived in order and wait only for the
  writer's commit (its fsyncs) count towards the 64 (and towards 64 MiB of bodies), not
  the window, so fetching goes on while the writer is on the disk; a slow page holds
  back no more than ``window`` pages behind it, and past the end of the data no more
  than ``window`` requests are in flight.
- **Probe**: the first page of a run is fetched alone; its record count is the page
  size ``step`` (offsets advance by it), whatever ``--page-size`` asked for.
- **End of data**: an empty page (or a 204), a page at or past ``--total-field``'s
  count, or a 404 after the first page ends the listing at that page. No page past it
  is requested any more, and answers already in flight past it are discarded, never
  committed. A *short* page (fewer records than the probe) does not end it by itself:
  an API whose pages vary in size would otherwise lose every page after the first
  short one without a word. The page after it (an empty page, a 404) ends it, at the
  cost of one request. With offset pagination a short page followed by more records
  is an error: the offsets planned ahead skipped the records between (use
  ``--concurrency 1``).
- **Errors**: a page that fails (retries exhausted, a 4xx) stops new requests; the
  pages before it are committed, then the error is raised, as in a sequential run.
- **Throttling**: every worker goes through one :class:`~._throttle.Throttle` (AIMD
  window, a shared ``Retry-After`` pause, the shared ``--rate``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datafuel.errors import HTTPError, PaginationError

from ._paginate import PageRequest, PageResponse, Paginator, RecordCount, get_path
from ._prefetch import FetchedPage, page_hash, try_columns
from ._throttle import Stopped, Throttle

__all__ = ["ConcurrentFetcher"]


#: pages, and body bytes, that may wait for the writer's commit beyond the window
READY_PAGES = 64
READY_BYTES = 64 * 1024 * 1024


def _size(result: object) -> int:
    return result.size if isinstance(result, PageResponse) else 0


def _holds(result: object) -> bool:
    """Whether a delivered result is a page with records."""
    return isinstance(result, PageResponse) and bool(result.records)


@dataclass
class _End:
    """Page ``index`` ends the listing without records (a 404 past the end)."""

    reason: str


class ConcurrentFetcher:
    """Fetch pages ``first.index, first.index + 1, ...`` on ``concurrency`` threads.

    Same interface as :class:`~datafuel.ingest._prefetch.Prefetcher`: :meth:`take`
    returns ``(pages, error, ended)`` and :meth:`close` stops the workers.
    """

    def __init__(
        self,
        fetch: Callable[[PageRequest], PageResponse],
        paginator: Paginator,
        first: PageRequest,
        throttle: Throttle,
        *,
        max_pages: int | None,
        last_hash: str | None,
        total_field: str | None = None,
        window: int | None = None,
        keep_records: bool = True,
    ) -> None:
        self._fetch = fetch
        self._keep_records = keep_records
        self._paginator = paginator
        self._first = first
        self._throttle = throttle
        self._total_field = total_field
        concurrency = throttle.ceiling
        self._window = window if window is not None else max(2 * concurrency, 8)
        self._last_hash = last_hash
        lock = threading.Lock()
        #: the writer waits on ``_cv`` for the next page, the workers on ``_room`` for the
        #: probe and for room in the buffer: a delivered page wakes the writer only
        self._cv = threading.Condition(lock)
        self._room = threading.Condition(lock)
        self._results: dict[int, PageResponse | _End | BaseException] = {}
        self._columns: dict[int, dict[str, list[Any]]] = {}
        self._digests: dict[int, str] = {}  # of the pages whose records were dropped
        self._next_claim = first.index
        self._next_take = first.index
        #: the first page not arrived yet (those from ``_next_take`` to it wait for the writer)
        self._head = first.index
        self._buffered = 0  # body bytes of the pages waiting in ``_results``
        #: no page at or past this index is requested: the end, an error, max_pages
        self._bound = max_pages if max_pages is not None else math.inf
        self._end_reason: str | None = "max pages" if max_pages is not None else None
        self._step: int | None = None  # learnt from the probe (the run's first page)
        self._short: int | None = None  # the first short page (offsets: nothing may follow)
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"datafuel-ingest-fetch-{i}", daemon=True)
            for i in range(concurrency)
        ]
        for t in self._threads:
            t.start()

    # workers ---------------------------------------------------------------------------
    def _claim(self) -> int | None:
        """The next page index to fetch, waiting for the probe and for room in the buffer."""
        with self._cv:
            while True:
                if self._closed or self._next_claim >= self._bound:
                    return None
                probing = self._step is None and self._next_claim > self._first.index
                if not probing and self._room_for(self._next_claim):
                    index = self._next_claim
                    self._next_claim += 1
                    return index
                self._room.wait(0.05)

    def _room_for(self, index: int) -> bool:
        """Whether page ``index`` may be fetched now (the buffer's bounds)."""
        window, ahead = self._window, index - self._next_take
        if index - self._head >= window:
            return False
        return ahead < window or (ahead < window + READY_PAGES and self._buffered < READY_BYTES)

    def _request(self, index: int) -> PageRequest:
        if index == self._first.index:
            return self._first
        planned = self._paginator.planned(self._first, index, self._step or 1)
        if planned is None:  # guarded by the caller (make_fetcher); a custom paginator
            raise PaginationError(
                f"--paginate {self._paginator.spec} cannot plan page {index} ahead", page=index
            )
        return PageRequest(
            planned.url, planned.params, index, secret_params=self._first.secret_params
        )

    def _work(self) -> None:
        while True:
            index = self._claim()
            if index is None:
                return
            try:
                self._throttle.enter()
            except Stopped:
                return
            result: PageResponse | _End | BaseException
            try:
                result = self._fetch(self._request(index))
                self._throttle.succeeded()
                result = self._flatten(index, result)
            except Stopped:
                return
            except HTTPError as exc:
                past_end = getattr(exc, "status", None) == 404 and index > self._first.index
                result = _End("HTTP 404 past the end") if past_end else exc
            except BaseException as exc:  # handed to the writer thread, which re-raises it
                result = exc
            finally:
                self._throttle.leave()
            self._deliver(index, result)

    def _flatten(self, index: int, response: PageResponse) -> PageResponse:
        """Flatten the page's records into columns here, off the writer's path; the writer
        redoes a page that fails (to raise the error naming the page and record).

        Unless ``keep_records`` (a ``--primary-key`` run flattens its kept records again),
        a flattened page other than the probe keeps only its columns, its fingerprint and
        its record count (:class:`~datafuel.ingest._paginate.RecordCount`): the records
        and the parsed body are freed here, before they age in the buffer.
        """
        columns = try_columns(response.records)
        if columns is None:
            return response
        digest = None
        if not self._keep_records and response.records and index != self._first.index:
            digest = page_hash(response.records)
            response = PageResponse(
                body=None,
                headers=response.headers,
                url=response.url,
                records=RecordCount(len(response.records)),
                size=response.size,
            )
        with self._cv:
            self._columns[index] = columns
            if digest is not None:
                self._digests[index] = digest
        return response

    def _deliver(self, index: int, result: PageResponse | _End | BaseException) -> None:
        with self._cv:
            if index >= self._bound:  # in flight past the end: discarded
                self._cv.notify()
                return
            try:
                if isinstance(result, PageResponse) and index == self._first.index:
                    self._learn(result)
                reason = self._ends(index, result)
            except PaginationError as exc:
                result, reason = exc, "error"
            if reason is not None:
                self._bound, self._end_reason = index + 1, reason
                for i in [i for i in self._results if i > index]:
                    self._buffered -= _size(self._results.pop(i))
                    self._columns.pop(i, None)
                    self._digests.pop(i, None)
            self._results[index] = result
            self._buffered += _size(result)
            gap = index == self._head
            while self._head in self._results:
                self._head += 1
            self._cv.notify()
            if gap or reason is not None or index == self._first.index:
                self._room.notify_all()  # the window moved, a new bound, or the probe

    def _learn(self, probe: PageResponse) -> None:
        """The page size from the probe, and the last page from a total count."""
        self._step = max(1, len(probe.records))
        if self._total_field is None or not probe.records:
            return
        try:
            total = get_path(probe.body, self._total_field)
        except KeyError:
            total = None
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise PaginationError(
                f"page {self._first.index} ({self._first.describe()}): --total-field "
                f"{self._total_field!r} holds {total!r}, expected a count >= 0",
                page=self._first.index,
                field=self._total_field,
            )
        # the probe holds records [before, before + step); the last page holds record total - 1
        before = self._paginator.position(self._first, self._step)
        last = self._first.index + max(0, math.ceil((total - before) / self._step) - 1)
        if last + 1 < self._bound:
            self._bound, self._end_reason = last + 1, f"total count {total} reached"

    def _ends(self, index: int, result: PageResponse | _End | BaseException) -> str | None:
        """Why page ``index`` ends the listing (or stops new requests), or ``None``."""
        if isinstance(result, _End):
            return result.reason
        if isinstance(result, BaseException):
            return "error"
        n = len(result.records)
        if n == 0:
            return self._paginator.stop_reason()
        if self._step is not None and n < self._step and index != self._first.index:
            self._short = index if self._short is None else min(self._short, index)
        if self._paginator.spec == "offset" and self._short is not None:
            later = [i for i, r in self._results.items() if i > self._short and _holds(r)]
            if index > self._short or later:  # (this page holds records: n > 0 here)
                at = index if index > self._short else min(later)
                raise PaginationError(
                    f"page {self._short} returned fewer records than the run's first page "
                    f"({self._step}), and page {at} after it returned more: the offsets "
                    "planned ahead skipped the records between. Use --concurrency 1.",
                    page=self._short,
                )
        if self._step is not None and n > self._step and self._paginator.spec == "offset":
            raise PaginationError(
                f"page {index} returned {n} records, more than the {self._step} of the run's "
                "first page; offsets planned ahead would overlap. Use --concurrency 1.",
                page=index,
            )
        if index + 1 == self._bound and self._end_reason not in (None, "max pages"):
            return self._end_reason
        return None

    # the writer ------------------------------------------------------------------------
    def take(self, limit: int) -> tuple[list[FetchedPage], BaseException | None, bool]:
        """The consecutive pages from the next uncommitted one (blocking for the first)."""
        with self._cv:
            while self._next_take not in self._results and self._next_take < self._bound:
                self._cv.wait(0.05)
            pages: list[FetchedPage] = []
            error: BaseException | None = None
            while len(pages) < limit and self._next_take in self._results:
                index = self._next_take
                result = self._results.pop(index)
                self._buffered -= _size(result)
                self._next_take += 1
                if isinstance(result, BaseException):
                    error = result
                    break
                try:
                    pages.append(self._page(index, result))
                except PaginationError as exc:
                    error = exc
                    break
                if pages[-1].next is None:
                    break
            self._room.notify_all()  # room in the buffer
            ended = error is not None or (bool(pages) and pages[-1].next is None)
            if not pages and error is None and self._next_take >= self._bound:
                ended = True
            return pages, error, ended

    def _page(self, index: int, result: PageResponse | _End) -> FetchedPage:
        request = self._request(index)
        if isinstance(result, _End):
            response = PageResponse(body=None, headers={}, url=request.full_url(), records=[])
            return self._fetched(request, response, None, result.reason)
        if result.records:
            digest = self._digests.pop(index, None) or page_hash(result.records)
            if digest == self._last_hash:
                raise PaginationError(
                    f"page {index} ({request.describe()}) returned exactly the same records as "
                    "the page before it: the API seems to ignore the pagination parameter of "
                    f"--paginate {self._paginator.spec}; stopping instead of looping",
                    page=index,
                )
            self._last_hash = digest
        final = index + 1 == self._bound and self._end_reason != "max pages"
        nxt = None if final else self._paginator.next(request, result)
        if nxt is not None:
            nxt = PageRequest(nxt.url, nxt.params, nxt.index, secret_params=request.secret_params)
        reason = (self._end_reason or self._paginator.stop_reason()) if nxt is None else None
        return self._fetched(request, result, nxt, reason)

    def _fetched(
        self,
        request: PageRequest,
        response: PageResponse,
        nxt: PageRequest | None,
        reason: str | None,
    ) -> FetchedPage:
        state: dict[str, Any] = self._paginator.state_dict()
        columns = self._columns.pop(request.index, None)
        return FetchedPage(request, response, nxt, reason, state, self._last_hash, columns)

    def close(self, timeout: float | None = None) -> None:
        """Stop the workers; answers still in flight are discarded."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
            self._room.notify_all()
        self._throttle.stop()
        for t in self._threads:
            t.join(timeout if timeout is not None else 30.0)
