"""A tiny threaded HTTP server on 127.0.0.1 whose every answer a test writes itself.

``HostileServer(route)`` calls ``route(server, request)`` for each GET; the route
returns a :class:`Reply` (status, headers, body — bytes, or an iterator of chunks sent
as they come, with optional pauses between them). Every request is recorded with its
path, query and headers, so tests can check which secrets reached which origin.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HostileServer", "Reply", "Seen", "gzip_bomb", "json_reply", "trickle"]


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def json_reply(obj: Any, **headers: str) -> Reply:
    return Reply(200, {"Content-Type": "application/json", **headers}, json.dumps(obj).encode())


def trickle(body: bytes, every: float) -> Iterator[bytes]:
    """``body`` one byte at a time, ``every`` seconds apart."""
    for i in range(len(body)):
        yield body[i : i + 1]
        time.sleep(every)


_BOMBS: dict[int, bytes] = {}


def gzip_bomb(size: int) -> bytes:
    """Gzip of a JSON list padded with ``size`` bytes of spaces (about ``size / 1000`` bytes)."""
    if size not in _BOMBS:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        chunk = b" " * (1 << 20)
        out = [comp.compress(b"[")]
        for _ in range(size // len(chunk)):
            out.append(comp.compress(chunk))
        out.append(comp.compress(b"]"))
        out.append(comp.flush())
        _BOMBS[size] = b"".join(out)
    return _BOMBS[size]


class HostileServer:
    def __init__(self, route: Callable[[HostileServer, Seen], Reply]) -> None:
        self.route = route
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                seen = Seen(split.path, dict(parse_qsl(split.query)), dict(self.headers.items()))
                with outer._lock:
                    outer.seen.append(seen)
                reply = outer.route(outer, seen)
                self.send_response(reply.status)
                body = reply.body
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if "Content-Length" not in reply.headers:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                try:
                    for chunk in body:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str = "/items") -> str:
        return self.origin + path

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
