"""A local paginated JSON API on 127.0.0.1 that misbehaves on request.

Used by the tests, the benchmark and ``datafuel demo``; handy for testing your own
pipeline offline. It serves ``records`` in pages with one of four pagination styles
and injects faults, either scripted per page or at random:

``"429"`` / ``"429:S"`` (with ``Retry-After: S``) / ``"429:date:S"`` (an HTTP-date S
seconds ahead), ``"500"``, ``"502"``, ``"503"``, ``"503:S"``, ``"504"``, ``"drop"``
(close the connection without answering), ``"truncate"`` (announce the full length,
send half, close), ``"badjson"`` (a complete response whose JSON is cut short),
``"slow:S"`` (wait S seconds first), and any other 4xx status such as ``"404"``.

The server stops by itself after ``lifetime`` seconds and answers ``410 Gone`` once
``max_requests`` requests were served, so a test can never hang on it.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["FakeAPI", "ServedRequest", "decode_cursor", "encode_cursor"]

STYLES = ("page", "offset", "cursor", "link")


@dataclass(frozen=True)
class ServedRequest:
    """One request as the server saw it (headers included, for tests to check)."""

    path: str
    params: dict[str, str]
    headers: dict[str, str]
    page: int
    fault: str | None


def encode_cursor(offset: int) -> str:
    """The opaque cursor :class:`FakeAPI` hands out for ``offset`` (URL-safe base64)."""
    return base64.urlsafe_b64encode(f"offset={offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset an :func:`encode_cursor` cursor stands for."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.split("=", 1)[1])


class FakeAPI:
    """A threaded HTTP server with a paginated ``/items`` endpoint.

    Parameters
    ----------
    records
        The ground truth, served in order.
    page_size
        Records per page when the request does not say (``page_size``/``limit``).
    style
        ``page`` (``?page=1..``), ``offset`` (``?offset=&limit=``), ``cursor``
        (``?cursor=`` and a ``next`` field in the body), ``link`` (``Link`` header).
    records_path
        Where the list goes in the body (``"data.items"``); ``None`` serves a bare list
        (cursor style then still needs an object, so it puts the list under ``items``).
    cursor_field
        Body field carrying the next cursor (dotted).
    faults
        ``{page_index: [fault, fault, ...]}``: the n-th request for that page gets the
        n-th fault, later requests are served normally.
    fault_rate, fault_kinds, seed
        Random faults on top of the scripted ones.
    latency
        Seconds every response waits (simulated server work / network).
    repeat_cursor_at
        From this page on, the next cursor points back to the previous page (a loop).
    ignore_paging
        Always serve the first page, whatever the parameters (a broken API).
    hook
        Called as ``hook(api, page_index)`` before each normal response (e.g. to insert
        records so pages shift).

    Examples
    --------
    >>> with FakeAPI([{"id": i} for i in range(25)], page_size=10, style="cursor") as api:
    ...     url = api.url  # doctest: +SKIP
    """

    def __init__(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        page_size: int = 10,
        style: str = "cursor",
        records_path: str | None = "data.items",
        cursor_field: str = "next",
        faults: Mapping[int, Sequence[str]] | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str] = ("503", "429:0", "drop", "truncate", "badjson"),
        seed: int = 0,
        latency: float = 0.0,
        repeat_cursor_at: int | None = None,
        ignore_paging: bool = False,
        hook: Callable[[FakeAPI, int], None] | None = None,
        lifetime: float = 120.0,
        max_requests: int = 100_000,
    ) -> None:
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self.records: list[dict[str, Any]] = [dict(r) for r in records]
        self.page_size = page_size
        self.style = style
        self.records_path = records_path
        self.cursor_field = cursor_field
        self.faults = {int(k): list(v) for k, v in (faults or {}).items()}
        self.fault_rate = fault_rate
        self.fault_kinds = list(fault_kinds)
        self.latency = latency
        self.repeat_cursor_at = repeat_cursor_at
        self.ignore_paging = ignore_paging
        self.hook = hook
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.served: list[ServedRequest] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> FakeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                api._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.close)
        self._timer.daemon = True
        self._timer.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port (idempotent)."""
        with self._lock:
            server, self._server = self._server, None
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the FakeAPI is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/items"

    @property
    def faults_served(self) -> list[str]:
        return [r.fault for r in self.served if r.fault is not None]

    # serving -----------------------------------------------------------------------------
    def _position(self, params: Mapping[str, str]) -> tuple[int, int]:
        """(offset, size) the request asks for."""
        if self.ignore_paging:
            return 0, self.page_size
        if self.style == "page":
            size = int(params.get("page_size", self.page_size))
            return (int(params.get("page", "1")) - 1) * size, size
        size = int(params.get("limit", self.page_size))
        if self.style == "cursor":
            cursor = params.get("cursor")
            return (decode_cursor(cursor) if cursor else 0), size
        return int(params.get("offset", "0")), size

    def _pick_fault(self, page: int) -> str | None:
        with self._lock:
            scripted = self.faults.get(page)
            if scripted:
                return scripted.pop(0)
            if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def _body(self, offset: int, size: int, page: int) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            items = [dict(r) for r in self.records[offset : offset + size]]
            total = len(self.records)
        has_next = offset + size < total
        headers: dict[str, str] = {}
        body: Any = items
        if self.records_path is not None or self.style == "cursor":
            body = {}
            cur = body
            parts = (self.records_path or "items").split(".")
            for p in parts[:-1]:
                cur = cur.setdefault(p, {})
            cur[parts[-1]] = items
            body["total"] = total
        if self.style == "cursor":
            nxt_offset = offset + size
            if self.repeat_cursor_at is not None and page >= self.repeat_cursor_at:
                nxt_offset = max(0, offset - size)
            target = body
            keys = self.cursor_field.split(".")
            for k in keys[:-1]:
                target = target.setdefault(k, {})
            target[keys[-1]] = encode_cursor(nxt_offset) if has_next else None
        if self.style == "link":
            links = [f'</items?offset=0&limit={size}>; rel="first"']
            if has_next:
                links.insert(0, f'</items?offset={offset + size}&limit={size}>; rel="next"')
            headers["Link"] = ", ".join(links)
        return json.dumps(body).encode(), headers

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        split = urlsplit(h.path)
        params = dict(parse_qsl(split.query))
        try:
            offset, size = self._position(params)
        except (ValueError, IndexError):
            self._send(h, 400, b'{"error": "bad paging parameters"}')
            return
        page = offset // max(size, 1)
        with self._lock:
            over = len(self.served) >= self.max_requests
        fault = None if over else self._pick_fault(page)
        with self._lock:
            self.served.append(
                ServedRequest(split.path, params, dict(h.headers.items()), page, fault)
            )
        if over:
            self._send(h, 410, b'{"error": "request budget of the test server exhausted"}')
            return
        if self.latency:
            time.sleep(self.latency)
        if fault is not None and self._fault(h, fault):
            return
        if split.path != "/items":
            self._send(h, 404, b'{"error": "not found"}')
            return
        if self.hook is not None:
            self.hook(self, page)
        body, headers = self._body(offset, size, page)
        self._send(h, 200, body, headers)

    def _fault(self, h: BaseHTTPRequestHandler, fault: str) -> bool:
        """Apply ``fault``; True when the response was sent (or deliberately not)."""
        kind, _, arg = fault.partition(":")
        if kind == "slow":
            time.sleep(float(arg))
            return False
        if kind == "drop":
            h.close_connection = True
            return True
        if kind in ("truncate", "badjson"):
            body = json.dumps(
                {"data": {"items": [{"id": i, "pad": "x" * 20} for i in range(20)]}}
            ).encode()
            cut = body[: len(body) // 2]
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body) if kind == "truncate" else len(cut)))
            if kind == "truncate":
                h.send_header("Connection", "close")
                h.close_connection = True
            h.end_headers()
            h.wfile.write(cut)
            h.wfile.flush()
            return True
        status = int(kind)
        headers = {}
        if arg.startswith("date:"):
            headers["Retry-After"] = formatdate(time.time() + float(arg[5:]), usegmt=True)
        elif arg:
            headers["Retry-After"] = arg
        self._send(h, status, json.dumps({"error": f"injected {fault}"}).encode(), headers)
        return True

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            h.close_connection = True
