"""``az://`` and ``gs://`` shard sets against real emulators on 127.0.0.1: Azurite (Azure Blob)
and fake-gcs-server (GCS), started by tests/remote/conftest.py.

Each test uploads a shard set written locally and reads it through datafuel with the endpoint
and credentials given by each cloud's standard environment only (the ``cloud`` fixture's
modes). The remote batches must equal the local ones; a missing prefix, a missing object and
a corrupt object are errors naming the URL; the credentials never reach an error, a repr, a
loader's state, a line the CLI prints or a file in the cache.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datafuel.cli import main
from datafuel.errors import CorruptShardError, ManifestError, RemoteError, WorkerError
from datafuel.loaders import Loader, write_shards
from datafuel.loaders._remote import ObjectStore, RetryPolicy, _client_options
from datafuel.loaders._remote_set import RemoteShardSet

#: the ways of reaching each emulator (the ``cloud`` fixture's parameters, in conftest.py)
CLOUD_MODES = ("az", "az:emulator", "gs", "gs:base_url")
ROWS = 1200
PREFIX = "sets/train"

Cli = Callable[..., tuple[int, str, str]]


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
