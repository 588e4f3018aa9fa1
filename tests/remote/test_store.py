"""``ObjectStore`` against moto through the fault proxy: round trips, retries (counted, and
only of transient errors), checked downloads, latency, and messages without credentials."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from datafuel.errors import ConfigError, CorruptShardError, RemoteError, RemoteNotFoundError
from datafuel.loaders._remote import ObjectStore, RetryPolicy, is_transient, redact_url

FAST = RetryPolicy(attempts=3, initial=0.01, maximum=0.02)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(store: ObjectStore, name: str, path: Path, data: bytes, digest: str = "") -> bytes:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        store.download(name, fd, size=len(data), sha256=digest or sha(data))
    finally:
        os.close(fd)
    return path.read_bytes()


def test_put_get_head_list_delete_round_trip(s3, tmp_path: Path) -> None:
    store = ObjectStore(s3.url("sets/one"))
    local = tmp_path / "shard.bin"
    local.write_bytes(os.urandom(200_000))
    store.put_file("shards/000.bin", local, sha256=sha(local.read_bytes()))
    store.put_bytes("manifest.json", b'{"v": 1}')

    # what landed in the bucket, seen directly (not through the proxy)
    assert s3.objects("sets/one/") == {
        "sets/one/shards/000.bin": local.read_bytes(),
        "sets/one/manifest.json": b'{"v": 1}',
    }
    assert store.get_bytes("manifest.json") == b'{"v": 1}'
    head = store.head("shards/000.bin")
    assert head is not None
    assert head["size"] == 200_000
    assert head["attributes"]["sha256"] == sha(local.read_bytes())
    assert store.head("shards/001.bin") is None
    assert sorted((o["path"], o["size"]) for o in store.list()) == [
        ("manifest.json", 8),
        ("shards/000.bin", 200_000),
    ]
    assert [o["path"] for o in store.list("shards")] == ["shards/000.bin"]
    assert download(store, "shards/000.bin", tmp_path / "back", local.read_bytes()) == (
        local.read_bytes()
    )

    store.delete("manifest.json")
    assert store.head("manifest.json") is None
    assert list(s3.objects("sets/one/")) == ["sets/one/shards/000.bin"]
    assert store.counters.retries == 0
    assert store.counters.bytes_written == 200_008
    assert store.counters.bytes_read == 8 + 200_000
    # every call went through the proxy, signed for the proxy's Host
    assert s3.proxy.count("PUT") == 2
    assert s3.proxy.count("GET", contains="shards/000.bin") == 1
    assert s3.proxy.count("HEAD") == 3
    assert s3.proxy.count("POST", contains="?delete") == 1  # obstore deletes in bulk
    assert s3.proxy.bytes_sent >= 200_008


def test_upload_dir_and_child_store(s3, tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_bytes(b"a")
    (tmp_path / "d" / "sub" / "b.txt").write_bytes(b"bb")
    assert s3.upload_dir(tmp_path / "d", "up/") == ["up/a.txt", "up/sub/b.txt"]
    store = ObjectStore(s3.url("up"))
    assert store.get_bytes("sub/b.txt") == b"bb"
    assert store.child("sub").get_bytes("b.txt") == b"bb"
    assert s3.proxy.requests == [
        ("GET", f"/{s3.bucket}/up/sub/b.txt"),
        ("GET", f"/{s3.bucket}/up/sub/b.txt"),
    ]


def test_missing_object_is_not_found_at_once(s3) -> None:
    store = ObjectStore(s3.url("p"), retry=FAST)
    with pytest.raises(RemoteNotFoundError) as info:
        store.get_bytes("nope.bin")
    err = info.value
    assert f"s3://{s3.bucket}/p/nope.bin" in str(err)
    assert err.path == f"s3://{s3.bucket}/p/nope.bin"
    assert err.attempts == 1
    assert isinstance(err, FileNotFoundError)
    assert s3.proxy.count("GET") == 1
    assert store.counters.retries == 0
    with pytest.raises(RemoteNotFoundError):
        download(store, "nope.bin", Path(os.devnull), b"x")
    assert s3.proxy.count("GET") == 2


def test_slowdown_is_retried_and_counted(s3) -> None:
    s3.put("p/a.bin", b"payload")
    store = ObjectStore(s3.url("p"), retry=FAST)
    s3.proxy.fail_next(2)
    assert store.get_bytes("a.bin") == b"payload"
    assert store.counters.retries == 2
    assert store.counters.requests == 3
    assert s3.proxy.count("GET", contains="a.bin") == 3


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "InternalError"), (503, "ServiceUnavailable"), (429, "TooManyRequests")],
)
def test_transient_statuses_are_retried(s3, status: int, code: str) -> None:
    s3.put("p/a.bin", b"x")
    store = ObjectStore(s3.url("p"), retry=FAST)
    s3.proxy.fail_next(1, status=status, code=code)
    assert store.get_bytes("a.bin") == b"x"
    assert store.counters.retries == 1


@pytest.mark.parametrize(
    ("status", "code"), [(403, "AccessDenied"), (400, "InvalidRequest"), (409, "Conflict")]
)
def test_refusals_are_not_retried(s3, status: int, code: str) -> None:
    s3.put("p/a.bin", b"x")
    store = ObjectStore(s3.url("p"), retry=FAST)
    s3.proxy.fail_next(1, status=status, code=code)
    with pytest.raises(RemoteError) as info:
        store.get_bytes("a.bin")
    assert not isinstance(info.value, RemoteNotFoundError)
    assert info.value.attempts == 1
    assert f"s3://{s3.bucket}/p/a.bin" in str(info.value)
    assert s3.proxy.count() == 1
    assert store.counters.retries == 0


@pytest.mark.parametrize("after", [0, 100_000, 2_999_999])
def test_dropped_connection_mid_body_is_retried(s3, tmp_path: Path, after: int) -> None:
    data = os.urandom(3_000_000)
    s3.put("p/big.bin", data)
    store = ObjectStore(s3.url("p"), retry=FAST)
    s3.proxy.drop_next(1, after_bytes=after)
    assert download(store, "big.bin", tmp_path / "big", data) == data
    assert store.counters.retries == 1
    assert s3.proxy.count("GET", contains="big.bin") == 2


def test_dropped_small_get_is_retried(s3) -> None:
    s3.put("p/m.json", b"{}" * 1000)
    store = ObjectStore(s3.url("p"), retry=FAST)
    s3.proxy.drop_next(1, after_bytes=10)
    assert store.get_bytes("m.json") == b"{}" * 1000
    assert store.counters.retries == 1


def test_retries_exhausted_name_the_object_and_attempts(s3) -> None:
    s3.put("p/a.bin", b"x")
    store = ObjectStore(s3.url("p"), retry=FAST)
    s3.proxy.fail_next(100)
    with pytest.raises(RemoteError) as info:
        store.get_bytes("a.bin")
    err = info.value
    assert not isinstance(err, RemoteNotFoundError)
    assert f"s3://{s3.bucket}/p/a.bin" in str(err)
    assert "after 3 attempts" in str(err)
    assert "503" in str(err)
    assert err.attempts == 3
    assert err.path == f"s3://{s3.bucket}/p/a.bin"
    assert err.__cause__ is None
    assert s3.proxy.count() == 3
    assert store.counters.retries == 2


def test_checksum_mismatch_is_corrupt_and_not_retried(s3, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    s3.put("p/s.bin", data)
    store = ObjectStore(s3.url("p"), retry=FAST)
    with pytest.raises(CorruptShardError) as info:
        download(store, "s.bin", tmp_path / "s", data, digest="0" * 64)
    assert f"s3://{s3.bucket}/p/s.bin" in str(info.value)
    assert info.value.path == f"s3://{s3.bucket}/p/s.bin"
    assert "checksum" in str(info.value)
    assert s3.proxy.count("GET") == 1
    assert store.counters.retries == 0


def test_wrong_size_body_is_retried_then_fails(s3, tmp_path: Path) -> None:
    s3.put("p/s.bin", b"0123456789")
    store = ObjectStore(s3.url("p"), retry=FAST)
    fd = os.open(tmp_path / "s", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with pytest.raises(RemoteError, match="after 3 attempts") as info:
            store.download("s.bin", fd, size=5, sha256=sha(b"01234"))
    finally:
        os.close(fd)
    assert "s3://" in str(info.value)
    assert s3.proxy.count("GET") == 3


def test_latency_is_honoured(s3) -> None:
    s3.put("p/a.bin", b"x")
    store = ObjectStore(s3.url("p"))
    store.head("a.bin")  # open the client and a connection first
    s3.proxy.latency = 0.3
    start = time.perf_counter()
    assert store.get_bytes("a.bin") == b"x"
    assert time.perf_counter() - start >= 0.3
    s3.proxy.latency = 0.0
    start = time.perf_counter()
    store.get_bytes("a.bin")
    assert time.perf_counter() - start < 0.3


def test_concurrent_requests_through_the_proxy(s3) -> None:
    blobs = {f"o{i}": os.urandom(1000 + i) for i in range(8)}
    for k, v in blobs.items():
        s3.put(f"p/{k}", v)
    store = ObjectStore(s3.url("p"))
    s3.proxy.latency = 0.01
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                for k, v in blobs.items():
                    assert store.get_bytes(k) == v
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert s3.proxy.count("GET") == 6 * 10 * 8
    assert store.counters.retries == 0


def test_messages_never_carry_credentials(s3, tmp_path: Path) -> None:
    s3.put("p/a.bin", b"x")
    store = ObjectStore(s3.url("p"), retry=FAST)
    raised: list[BaseException] = []

    def collect(fn) -> None:
        with pytest.raises(Exception) as info:
            fn()
        raised.append(info.value)

    collect(lambda: store.get_bytes("missing"))
    s3.proxy.fail_next(3)
    collect(lambda: store.get_bytes("a.bin"))
    s3.proxy.fail_next(1, status=403, code="AccessDenied")
    collect(lambda: store.put_bytes("b.bin", b"y"))
    collect(lambda: download(store, "a.bin", tmp_path / "a", b"x", digest="1" * 64))
    # S3 refusals that echo the key id and the string to sign, on one line
    for echo in (
        f"<Error><Code>InvalidAccessKeyId</Code><AWSAccessKeyId>{s3.key_id}</AWSAccessKeyId>"
        "<Message>The AWS Access Key Id you provided does not exist</Message></Error>",
        '<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code>'
        "<Message>The request signature we calculated does not match</Message>"
        f"<AWSAccessKeyId>{s3.key_id}</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256"
        f" {s3.secret}</StringToSign></Error>",
    ):
        s3.proxy.fail_next(1, status=403, body=echo.encode())
        collect(lambda: store.get_bytes("a.bin"))
        assert "403" in str(raised[-1])
        assert "InvalidAccessKeyId" in str(raised[-1]) or "SignatureDoesNotMatch" in str(raised[-1])
    # user info and a presigned query in the store's own URL
    http = ObjectStore(
        f"http://{s3.key_id}:{s3.secret}@{s3.proxy.endpoint[len('http://') :]}/{s3.bucket}/p"
        f"?X-Amz-Credential={s3.key_id}&X-Amz-Signature={s3.secret}",
        retry=FAST,
    )
    collect(lambda: http.get_bytes("missing"))
    collect(lambda: http.put_bytes("a.bin", b"z"))
    assert len(raised) == 8
    for err in raised:
        for text in (str(err), repr(err), str(getattr(err, "path", ""))):
            assert s3.secret not in text, text
            assert s3.key_id not in text, text
    assert repr(http) == f"ObjectStore('{s3.proxy.endpoint}/{s3.bucket}/p')"


def test_https_store_is_read_only() -> None:
    store = ObjectStore("https://example.invalid/sets/one")
    assert store.read_only
    with pytest.raises(ConfigError, match="read-only"):
        store.put_bytes("a.bin", b"x")
    with pytest.raises(ConfigError, match=r"https://example\.invalid/sets/one/a\.bin"):
        store.put_file("a.bin", os.devnull)
    with pytest.raises(ConfigError, match="read-only"):
        store.delete("a.bin")
    assert store._store is None  # refused before any client was opened
    assert not ObjectStore("s3://bucket/p").read_only


def test_not_a_remote_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="not an object-store URL"):
        ObjectStore("/local/path")


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:secret@host/a/b?X-Amz-Signature=abc", "https://host/a/b"),
        ("https://host:8443/a?sig=1#frag", "https://host:8443/a"),
        ("s3://bucket/prefix/name", "s3://bucket/prefix/name"),
        ("s3://AKIAKEY:SECRET@bucket/p?versionId=1", "s3://bucket/p"),
        ("https://token@host/x", "https://host/x"),
    ],
)
def test_redact_url(url: str, clean: str) -> None:
    assert redact_url(url) == clean


def test_is_transient_classification() -> None:
    assert is_transient(ConnectionResetError("reset by peer"))
    assert is_transient(TimeoutError("timed out"))
    assert is_transient(RuntimeError("Server returned non-2xx status code: 503 Slow Down"))
    assert not is_transient(RuntimeError("Server returned non-2xx status code: 403 Forbidden"))
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(CorruptShardError("bad", path="s3://b/k"))
