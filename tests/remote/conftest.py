"""Fixtures of the object-storage tests: one moto S3 server for the session (127.0.0.1 only),
a fault-injecting HTTP proxy in front of it per test, and a fresh bucket per test.

``s3`` is what most tests want: the environment points obstore (and so ``ObjectStore``) at
the proxy with throwaway keys, and ``s3.client`` is a boto3 client talking to moto
directly (never through the proxy) to set up and inspect the bucket::

    def test_x(s3):
        s3.client.put_object(Bucket=s3.bucket, Key="a/b", Body=b"x")
        s3.proxy.fail_next(2)  # the next two requests answer 503 SlowDown
        assert ObjectStore(s3.url("a")).get_bytes("b") == b"x"

Nothing here reaches the network: every socket is on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: headers that belong to one hop (client-proxy or proxy-moto), never forwarded
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)


@dataclass(frozen=True)
class MotoServer:
    """The session's moto server: ``endpoint`` is ``http://127.0.0.1:PORT``."""

    host: str
    port: int
    endpoint: str
    server: Any


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    moto = pytest.importorskip("moto.server", reason="the remote tests need moto[server]")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield MotoServer(host, port, f"http://{host}:{port}", server)
    finally:
        server.stop()


class FaultProxy:
    """A loopback HTTP/1.1 proxy in front of ``upstream`` (moto) that injects faults.

    * ``latency``: seconds slept before each response (settable at any time);
    * ``fail_next(n, status=503, code="SlowDown")``: the next ``n`` requests answer an
      S3-style XML error without reaching the upstream;
    * ``drop_next(n, after_bytes=0)``: the next ``n`` GET responses send their headers
      (with the real ``Content-Length``), then ``after_bytes`` of the body, then close;
    * ``requests``: ``(method, path)`` of every request received (path with its query);
      ``bytes_sent``: response body bytes written to clients; ``count(...)``,
      ``reset_counts()``.

    Requests are forwarded as they came (method, path and query, headers including
    ``Host``, so SigV4 signatures stay valid, and body); keep-alive connections and
    concurrent clients are served, one thread per connection.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.latency = 0.0
        self.requests: list[tuple[str, str]] = []
        self.bytes_sent = 0
        self._fail: list[tuple[int, str, bytes | None]] = []
        self._drop: list[int] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"FaultProxy({self.endpoint} -> {self.upstream[0]}:{self.upstream[1]})"

    # -- faults ---------------------------------------------------------------------------
    def fail_next(
        self, n: int, status: int = 503, code: str = "SlowDown", body: bytes | None = None
    ) -> None:
        """The next ``n`` requests answer ``status`` with an S3 ``<Error>`` naming ``code``
        (or with ``body`` as it is, when given)."""
        with self._lock:
            self._fail.extend([(status, code, body)] * n)

    def drop_next(self, n: int, after_bytes: int = 0) -> None:
        with self._lock:
            self._drop.extend([after_bytes] * n)

    def clear_faults(self) -> None:
        with self._lock:
            self._fail.clear()
            self._drop.clear()

    # -- counts ---------------------------------------------------------------------------
    def count(self, method: str | None = None, contains: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for m, p in self.requests
                if (method is None or m == method.upper()) and (contains is None or contains in p)
            )

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- used by the handler --------------------------------------------------------------
    def _arrived(
        self, method: str, path: str
    ) -> tuple[tuple[int, str, bytes | None] | None, int | None]:
        """Record one request; the fault it gets (an error to answer, bytes to drop after)."""
        with self._lock:
            self.requests.append((method, path))
            fail = self._fail.pop(0) if self._fail else None
            drop = self._drop.pop(0) if (fail is None and method == "GET" and self._drop) else None
        return fail, drop

    def _sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n


def _error_xml(status: int, code: str, path: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>injected by FaultProxy ({status})</Message>"
        f"<Resource>{path.split('?', 1)[0]}</Resource>"
        f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>"
    ).encode()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self) -> None:
        body = self._body()
        method = self.command
        fail, drop = self.owner._arrived(method, self.path)
        if fail is not None:
            status, code, data = fail
            if data is None:
                data = _error_xml(status, code, self.path)
            self._answer(status, [("Content-Type", "application/xml")], data)
            return
        try:
            status, headers, data, length = self._forward(method, body)
        except OSError as exc:
            msg = f"FaultProxy: upstream unreachable: {exc}".encode()
            self._answer(502, [("Content-Type", "text/plain")], msg)
            return
        if drop is not None:
            self._drop(status, headers, data, drop)
            return
        self._answer(status, headers, data, length=length if method == "HEAD" else None)

    def _forward(self, method: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes, int]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        if body or method in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=60)
        try:
            conn.request(method, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            length = int(resp.getheader("Content-Length") or len(data))
            return resp.status, out, data, length
        finally:
            conn.close()

    def _head(self, status: int, headers: list[tuple[str, str]], length: int) -> None:
        if self.owner.latency > 0:
            time.sleep(self.owner.latency)
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _answer(
        self, status: int, headers: list[tuple[str, str]], data: bytes, length: int | None = None
    ) -> None:
        if self.command == "HEAD":
            self._head(status, headers, len(data) if length is None else length)
            self.wfile.flush()
            return
        self._head(status, headers, len(data))
        self.wfile.write(data)
        self.wfile.flush()
        self.owner._sent(len(data))

    def _drop(self, status: int, headers: list[tuple[str, str]], data: bytes, after: int) -> None:
        self.close_connection = True
        try:
            self._head(status, headers, len(data))
            part = data[:after]
            self.wfile.write(part)
            self.wfile.flush()
            self.owner._sent(len(part))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    p = FaultProxy(moto_server.host, moto_server.port)
    try:
        yield p
    finally:
        p.stop()


@dataclass
class S3Env:
    """One test's bucket, reached by ``ObjectStore`` through ``proxy`` and by ``client``
    (boto3, direct to moto) for setup and checks."""

    bucket: str
    proxy: FaultProxy
    client: Any
    key_id: str
    secret: str
    endpoint: str  #: moto's own endpoint (the proxy's is ``proxy.endpoint``)

    def url(self, prefix: str = "") -> str:
        """``s3://bucket/prefix`` (``s3://bucket`` for no prefix)."""
        prefix = prefix.strip("/")
        return f"s3://{self.bucket}/{prefix}" if prefix else f"s3://{self.bucket}"

    def store(self, prefix: str = "", **kw: Any) -> Any:
        """An ``ObjectStore`` on ``url(prefix)`` (keyword arguments passed on: ``retry=``)."""
        from datafuel.loaders._remote import ObjectStore

        return ObjectStore(self.url(prefix), **kw)

    def upload_dir(self, local_dir: str | Path, prefix: str = "") -> list[str]:
        """Upload every file under ``local_dir`` to ``bucket/prefix/`` (direct); the keys."""
        root = Path(local_dir)
        prefix = prefix.strip("/")
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            self.client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
        return keys

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """``{key: content}`` of every object whose key starts with ``prefix`` (direct)."""
        out: dict[str, bytes] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                out[key] = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return out

    def put(self, key: str, data: bytes) -> None:
        """Put one object (direct)."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)


KEY_ID = "dftestkeyid0000"
SECRET = "dftest-SECRET-never-logged-0000"


@pytest.fixture
def s3(
    moto_server: MotoServer,
    proxy: FaultProxy,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[S3Env]:
    boto3 = pytest.importorskip("boto3")
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_DEFAULT_REGION",
        "AWS_BUCKET",
        "AWS_BUCKET_NAME",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    client = boto3.session.Session(
        aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1"
    ).client("s3", endpoint_url=moto_server.endpoint)
    bucket = f"dftest-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    env = S3Env(bucket, proxy, client, KEY_ID, SECRET, moto_server.endpoint)
    try:
        yield env
    finally:
        try:  # free moto's memory: the server lives for the whole session
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for page in pages:
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket=bucket, Key=obj["Key"])
            client.delete_bucket(Bucket=bucket)
        except Exception:
            pass
        client.close()
