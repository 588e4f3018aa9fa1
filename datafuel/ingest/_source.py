"""A REST source: GET one page with retries, a rate limit, and records extraction.

Retried (with :class:`~datafuel.ingest.RetryPolicy`): HTTP 429, 500, 502, 503, 504,
timeouts, connection errors (dropped connections, truncated bodies) and bodies that
are not valid JSON. Not retried: every other 4xx — the request itself is wrong.
Header values (auth tokens) are sent but never appear in messages or logs, and go only
to the origins the :class:`~datafuel.ingest._secrets.SecretPolicy` allows; redirects
are followed here hop by hop so that this holds for them too. Each response is
bounded by :class:`~datafuel.ingest._limits.ResponseLimits` (size, depth, deadline).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from datafuel.errors import HTTPError, PaginationError, RetryExhaustedError

from ._html import HtmlSpec, RobotsPolicy
from ._limits import DeadlineExceeded, ResponseLimits
from ._paginate import PageRequest, PageResponse, get_path
from ._ratelimit import RateLimiter
from ._retry import RetryPolicy, TransientError
from ._secrets import SecretPolicy, check_headers, redact_url

__all__ = ["MAX_REDIRECTS", "RETRY_STATUSES", "RestSource", "ssl_context"]

log = logging.getLogger("datafuel.ingest")


class _RedactHttpxLog(logging.Filter):
    """Takes the secrets of every live source out of ``httpx``'s own log lines.

    ``httpx`` logs each request's full URL at INFO; with logging configured that far,
    an ``api_key=...`` would reach the log. The filter stays on the ``httpx`` logger
    (installed once) and rewrites only records holding a secret value.
    """

    def __init__(self) -> None:
        super().__init__("datafuel.ingest")
        self.policies: weakref.WeakSet[SecretPolicy] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.policies:
            return True
        text = record.getMessage()
        clean = text
        for policy in list(self.policies):
            clean = policy.scrub(redact_url(clean, policy.secret_params))  # type: ignore[arg-type]
        if clean != text:
            record.msg, record.args = clean, None
        return True


_HTTPX_FILTER = _RedactHttpxLog()
logging.getLogger("httpx").addFilter(_HTTPX_FILTER)

_SSL_CONTEXT: ssl.SSLContext | None = None
_SSL_LOCK = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every ingest client uses (httpx's default: certifi's CAs,
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` as set when it is first built).

    Built once per process: loading the CA bundle takes about 20 ms, which every
    ``httpx.Client`` would otherwise pay again (two per HTML ingest, with ``robots.txt``),
    even for plain ``http://``. httpx recommends sharing one context.
    """
    global _SSL_CONTEXT
    with _SSL_LOCK:
        if _SSL_CONTEXT is None:
            _SSL_CONTEXT = httpx.create_ssl_context()
        return _SSL_CONTEXT


RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: redirects followed per request (as httpx's default)
MAX_REDIRECTS = 20


class RestSource:
    """Fetch pages of records from a JSON REST API.

    Parameters
    ----------
    records_path
        Dotted path to the list of records in the body (``"data.items"``); ``None``
        when the body itself is the list.
    headers
        Sent with every request to the origin of the first page fetched; never logged
        or stored. Ignored when ``secrets`` is given (it holds the headers then).
    retry, rate_limiter
        Backoff policy and optional client-side rate limit.
    timeout
        Seconds per network operation (connect, each read, write, pool).
    transport
        An ``httpx`` transport (tests); default is a real connection pool.
    on_retry
        Called as ``on_retry(request, attempt, reason, delay)`` before each backoff sleep.
    on_throttle
        Called as ``on_throttle(delay)`` when the server throttles (a 429, or a 503 with
        ``Retry-After``), so that concurrent workers all slow down (:mod:`._throttle`).
    secrets
        Which origins see the headers, and what is redacted (:class:`SecretPolicy`).
    limits
        Bounds on each response: decompressed size, JSON depth, deadline.
    max_redirects
        Redirects followed per request; more, or a redirect loop, is an
        :class:`~datafuel.errors.IngestError`.

    Redirects are followed here, not by ``httpx``: each hop gets the user's headers
    only if its origin may see them (``httpx`` itself would strip only ``Authorization``).

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
        secrets: SecretPolicy | None = None,
        limits: ResponseLimits | None = None,
        max_redirects: int = MAX_REDIRECTS,
        on_throttle: Callable[[float], None] | None = None,
        html: HtmlSpec | None = None,
        robots: RobotsPolicy | None = None,
    ) -> None:
        self.records_path = records_path
        self.retry = retry if retry is not None else RetryPolicy()
        self.rate_limiter = rate_limiter
        self.on_retry = on_retry
        self.on_throttle = on_throttle
        self.html = html
        self.robots = robots
        self.requests = 0
        self._count_lock = threading.Lock()
        self.secrets = secrets
        self._headers = dict(headers or {})
        if secrets is None:
            check_headers(self._headers)
        self.limits = limits if limits is not None else ResponseLimits()
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._transport = transport
        self._client = self._new_client()
        #: with the default transport, each worker thread gets a client (a pool) of its
        #: own: httpcore walks every connection of a pool, polling the idle ones, for each
        #: request, so one pool shared by 8 threads costs O(8) syscalls a request
        self._local = threading.local()
        self._local.client = self._client
        self._clients = [self._client]
        self._closed = False

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=self.timeout,
            transport=self._transport,
            follow_redirects=False,
            verify=ssl_context(),
        )

    def _thread_client(self) -> httpx.Client:
        """This thread's client (the shared one with a given transport, or once closed)."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is not None:
            return client
        with self._count_lock:
            if self._closed or self._transport is not None:
                return self._client
            client = self._new_client()
            self._clients.append(client)
        self._local.client = client
        return client

    def close(self) -> None:
        with self._count_lock:
            self._closed = True
            clients, self._clients = self._clients, [self._client]
        for client in clients:
            client.close()

    def __enter__(self) -> RestSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _policy(self, request: PageRequest) -> SecretPolicy:
        if self.secrets is None:  # headers go to the origin of the first page, and only there
            self.secrets = SecretPolicy(request.full_url(), headers=self._headers)
        _HTTPX_FILTER.policies.add(self.secrets)
        return self.secrets

    def _attempt(self, request: PageRequest) -> PageResponse:
        policy = self._policy(request)
        where = f"page {request.index} ({request.describe()})"
        until = time.monotonic() + self.limits.deadline
        url = request.full_url()
        if self.robots is not None:
            self.robots.check(url, request.describe(), request.index)
        visited = [url]
        while True:
            resp, body = self._get(url, request, until, where, policy)
            status = resp.status_code
            if status not in _REDIRECTS:
                break
            url = self._redirect_target(resp, request, visited, where, policy)
        if status in RETRY_STATUSES:
            raise TransientError(
                f"HTTP {status} {resp.reason_phrase}",
                retry_after=resp.headers.get("retry-after"),
                status=status,
            )
        if status == 204:  # No Content: an empty page, the end of the listing
            return PageResponse(body=None, headers=resp.headers, url=str(resp.url), records=[])
        if status >= 400:
            raise HTTPError(
                f"{where}: HTTP {status} {resp.reason_phrase}; "
                "client errors other than 429 are not retried",
                page=request.index,
                status=status,
            )
        if self.html is not None:
            return _html_page(self.html, body, resp, request, where)
        try:
            parsed = self.limits.parse(body, where=where, page=request.index)
        except ValueError as exc:
            raise TransientError(f"the body is not valid JSON ({exc})") from exc
        records = self._records(parsed, request)
        return PageResponse(
            body=parsed, headers=resp.headers, url=str(resp.url), records=records, size=len(body)
        )

    def _get(
        self, url: str, request: PageRequest, until: float, where: str, policy: SecretPolicy
    ) -> tuple[httpx.Response, bytes]:
        """One GET (one hop): the response and its body (empty for errors and redirects)."""
        if self.rate_limiter is not None:
            self.rate_limiter.acquire()
        with self._count_lock:  # workers share a source
            self.requests += 1
        left = until - time.monotonic()
        if left <= 0:
            raise TransientError(
                f"no time left of the --request-deadline of {self.limits.deadline:g} s"
            )
        try:
            with self._thread_client().stream(
                "GET", url, headers=policy.headers_for(url), timeout=min(self.timeout, left)
            ) as resp:
                if resp.status_code in _REDIRECTS or resp.status_code >= 400:
                    return resp, b""
                self.limits.check_length(
                    resp.headers.get("content-length"),
                    "content-encoding" in resp.headers,
                    where=where,
                    page=request.index,
                )
                body = self.limits.read(
                    resp.iter_bytes(), until=until, where=where, page=request.index
                )
                return resp, body
        except DeadlineExceeded as exc:
            raise TransientError(str(exc)) from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            reason = policy.scrub(redact_url(str(exc), policy.secret_params))  # type: ignore[arg-type]
            raise TransientError(f"connection failed ({type(exc).__name__}: {reason})") from exc
        except httpx.HTTPError as exc:  # e.g. a malformed header or URL in the response
            reason = policy.scrub(redact_url(str(exc), policy.secret_params))  # type: ignore[arg-type]
            raise TransientError(f"bad response ({type(exc).__name__}: {reason})") from exc

    def _redirect_target(
        self,
        resp: httpx.Response,
        request: PageRequest,
        visited: list[str],
        where: str,
        policy: SecretPolicy,
    ) -> str:
        """Where a redirect points, refusing loops, too many hops and non-http targets."""
        location = resp.headers.get("location")
        if not location:
            raise HTTPError(
                f"{where}: HTTP {resp.status_code} redirect without a Location header",
                page=request.index,
                status=resp.status_code,
            )
        try:
            target = resp.url.join(location)
        except httpx.InvalidURL as exc:
            raise HTTPError(
                f"{where}: HTTP {resp.status_code} redirect to an invalid URL ({exc})",
                page=request.index,
                status=resp.status_code,
            ) from exc
        shown = policy.redact(str(target))
        if target.scheme not in ("http", "https"):
            raise HTTPError(
                f"{where}: redirected to {shown}, which is not an http(s) URL",
                page=request.index,
                status=resp.status_code,
            )
        url = str(target)
        if url in visited:
            raise HTTPError(
                f"{where}: redirect loop ({shown} was already visited after "
                f"{len(visited) - 1} redirect(s))",
                page=request.index,
                status=resp.status_code,
            )
        if len(visited) > self.max_redirects:
            raise HTTPError(
                f"{where}: more than {self.max_redirects} redirects (the last to {shown})",
                page=request.index,
                status=resp.status_code,
            )
        if policy.headers and not policy.allowed(url):
            log.info(
                "%s: redirected to %s, another origin; the headers are not sent there", where, shown
            )
        visited.append(url)
        return url

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
            if self.on_throttle is not None and (
                exc.status == 429 or (exc.status == 503 and exc.retry_after is not None)
            ):
                self.on_throttle(delay)

        try:
            return self.retry.call(lambda: self._attempt(request), on_retry=on_retry)
        except TransientError as exc:
            raise RetryExhaustedError(
                f"page {request.index} ({request.describe()}) failed {self.retry.max_attempts} "
                f"time(s); last error: {exc.reason}",
                page=request.index,
            ) from (exc.__cause__ or exc)


def _html_page(
    html: HtmlSpec, body: bytes, resp: httpx.Response, request: PageRequest, where: str
) -> PageResponse:
    """Records from the ``--select``/``--field`` selectors; the next link in ``body``."""
    records, nxt = html.extract(body, str(resp.url))
    if not records and html.on_empty == "fail":
        raise HTTPError(
            f"{where}: --select {html.select!r} matches nothing on this page (its layout "
            "changed?); --on-empty skip records it in the drift report and goes on",
            page=request.index,
            status=resp.status_code,
        )
    return PageResponse(
        body={"next": nxt}, headers=resp.headers, url=str(resp.url), records=records, size=len(body)
    )
