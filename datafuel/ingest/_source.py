"""A REST source: GET one page with retries, a rate limit, and records extraction.

Retried (with :class:`~datafuel.ingest.RetryPolicy`): HTTP 429, 500, 502, 503, 504,
timeouts, connection errors (dropped connections, truncated bodies) and bodies that
are not valid JSON. Not retried: every other 4xx — the request itself is wrong.
Header values (auth tokens) are sent but never appear in messages or logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from datafuel.errors import HTTPError, PaginationError, RetryExhaustedError

from ._paginate import PageRequest, PageResponse, get_path
from ._ratelimit import RateLimiter
from ._retry import RetryPolicy, TransientError

__all__ = ["RETRY_STATUSES", "RestSource"]

log = logging.getLogger("datafuel.ingest")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RestSource:
    """Fetch pages of records from a JSON REST API.

    Parameters
    ----------
    records_path
        Dotted path to the list of records in the body (``"data.items"``); ``None``
        when the body itself is the list.
    headers
        Sent with every request; never logged or stored.
    retry, rate_limiter
        Backoff policy and optional client-side rate limit.
    timeout
        Seconds per request (connect, read, write, pool).
    transport
        An ``httpx`` transport (tests); default is a real connection pool.
    on_retry
        Called as ``on_retry(request, attempt, reason, delay)`` before each backoff sleep.

    Examples
    --------
    >>> from datafuel.ingest import PageRequest
    >>> with RestSource(records_path="data.items") as src:  # doctest: +SKIP
    ...     page = src.fetch(PageRequest("http://127.0.0.1:8000/items"))
    """

    def __init__(
        self,
        *,
        records_path: str | None = None,
        headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        rate_limiter: RateLimiter | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        on_retry: Callable[[PageRequest, int, str, float], None] | None = None,
    ) -> None:
        self.records_path = records_path
        self.retry = retry if retry is not None else RetryPolicy()
        self.rate_limiter = rate_limiter
        self.on_retry = on_retry
        self.requests = 0
        self._client = httpx.Client(
            headers=dict(headers or {}),
            timeout=timeout,
            transport=transport,
            follow_redirects=True,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RestSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attempt(self, request: PageRequest) -> PageResponse:
        if self.rate_limiter is not None:
            self.rate_limiter.acquire()
        self.requests += 1
        try:
            resp = self._client.get(request.describe())
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise TransientError(f"connection failed ({type(exc).__name__}: {exc})") from exc
        status = resp.status_code
        if status in RETRY_STATUSES:
            raise TransientError(
                f"HTTP {status} {resp.reason_phrase}", retry_after=resp.headers.get("retry-after")
            )
        if status >= 400:
            raise HTTPError(
                f"page {request.index} ({request.describe()}): HTTP {status} {resp.reason_phrase}; "
                "client errors other than 429 are not retried",
                page=request.index,
                status=status,
            )
        try:
            body = json.loads(resp.content)
        except ValueError as exc:
            raise TransientError(f"the body is not valid JSON ({exc})") from exc
        records = self._records(body, request)
        return PageResponse(body=body, headers=resp.headers, url=str(resp.url), records=records)

    def _records(self, body: Any, request: PageRequest) -> list[Any]:
        where = f"page {request.index} ({request.describe()})"
        if self.records_path is None:
            found = body
            if isinstance(found, dict):
                raise PaginationError(
                    f"{where}: the body is a JSON object with keys {sorted(found)[:10]}, not a list; "
                    "pass records_path (--records-path) to name the list of records",
                    page=request.index,
                )
        else:
            try:
                found = get_path(body, self.records_path)
            except KeyError as exc:
                raise PaginationError(
                    f"{where}: records path {self.records_path!r} not found in the body "
                    f"(missing key {exc.args[0]!r})",
                    page=request.index,
                    field=self.records_path,
                ) from None
        if found is None:
            return []
        if not isinstance(found, list):
            raise PaginationError(
                f"{where}: records path {self.records_path or '(body)'!r} holds a "
                f"{type(found).__name__}, expected a list of objects",
                page=request.index,
                field=self.records_path,
            )
        for i, rec in enumerate(found):
            if not isinstance(rec, dict):
                raise PaginationError(
                    f"{where}: record {i} is a {type(rec).__name__}, expected a JSON object",
                    page=request.index,
                    row=i,
                )
        return found

    def fetch(self, request: PageRequest) -> PageResponse:
        """GET one page, retrying transient failures; raise a datafuel error otherwise."""

        def on_retry(attempt: int, exc: TransientError, delay: float) -> None:
            log.info(
                "page %d (%s): %s; retry %d/%d in %.2f s",
                request.index,
                request.describe(),
                exc.reason,
                attempt,
                self.retry.max_attempts - 1,
                delay,
            )
            if self.on_retry is not None:
                self.on_retry(request, attempt, exc.reason, delay)

        try:
            return self.retry.call(lambda: self._attempt(request), on_retry=on_retry)
        except TransientError as exc:
            raise RetryExhaustedError(
                f"page {request.index} ({request.describe()}) failed {self.retry.max_attempts} "
                f"time(s); last error: {exc.reason}",
                page=request.index,
            ) from (exc.__cause__ or exc)
