"""``datafuel inspect`` and ``datafuel profile`` on a bucket URL (moto behind the fault proxy).

The same set is written locally and uploaded; the remote commands must print what the
local ones print apart from the location, read through the node cache (``--cache-dir``,
``--cache-limit``), refuse a corrupt object or a missing manifest in one line naming the
URL, and never print or store a credential.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from datafuel.cli import main
from datafuel.loaders import write_shards

ROWS = 600
PREFIX = "sets/train"

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``cli(*argv) -> (exit status, stdout, stderr)`` of ``datafuel ARGV...`` in this process."""

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run without --cache-dir caches under the test's tmp_path, never in ~/.cache."""
    monkeypatch.setenv("DATAFUEL_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def local_set(tmp_path: Path) -> Path:
    """A small table set of several shards (x float32[4], y int64)."""
    rng = np.random.default_rng(3)
    d = tmp_path / "local"
    write_shards(
        d,
        x=rng.normal(size=(ROWS, 4)).astype(np.float32),
        y=rng.integers(0, 5, ROWS),
        shard_bytes=4_000,
    )
    return d


@pytest.fixture
def remote(s3, local_set: Path) -> str:
    s3.upload_dir(local_set, PREFIX)
    return s3.url(PREFIX)


def _data_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name != "manifest.json")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("datafuel: error: "), err
    return lines[0]


def test_inspect_of_a_url_prints_what_a_local_inspect_prints(cli, remote, local_set, tmp_path):
    rc, local_out, err = cli("inspect", local_set)
    assert rc == 0, err
    rc, remote_out, err = cli("inspect", remote, "--cache-dir", tmp_path / "c")
    assert rc == 0, err
    assert remote_out.startswith(f"{remote}: ")
    assert remote_out.replace(remote, "LOCATION", 1) == local_out.replace(
        str(local_set), "LOCATION", 1
    )
    rc, local_json, _ = cli("inspect", local_set, "--json")
    rc2, remote_json, err = cli("inspect", remote, "--json", "--cache-dir", tmp_path / "c")
    assert rc == rc2 == 0, err
    a, b = json.loads(local_json), json.loads(remote_json)
    assert b.pop("path") == remote and a.pop("path") == str(local_set)
    assert a == b
    # without --verify only the manifest is read: no data file is downloaded
    assert not list((tmp_path / "c" / "objects").iterdir())


def test_inspect_verify_downloads_every_file_through_the_cache(
    cli, remote, local_set, tmp_path, s3
):
    cache = tmp_path / "c"
    rc, out, err = cli("inspect", remote, "--verify", "--cache-dir", cache, "--cache-limit", "8G")
    assert rc == 0, err
    assert out.strip().endswith("verify: every checksum matches")
    manifest = json.loads((local_set / "manifest.json").read_text())
    shas = {
        e["sha256"]
        for s in manifest["shards"]
        for parts in s["files"].values()
        for e in parts.values()
    }
    assert {p.name for p in (cache / "objects").iterdir()} == shas
    for name in _data_files(local_set):
        assert s3.proxy.count("GET", name) == 1, name
    # a second verify is served by the node cache
    s3.proxy.reset_counts()
    rc, out, err = cli("inspect", remote, "--verify", "--cache-dir", cache, "--json")
    assert rc == 0, err
    assert json.loads(out)["verified"] is True
    assert all(s3.proxy.count("GET", name) == 0 for name in _data_files(local_set))


def test_inspect_verify_refuses_a_corrupt_object_naming_its_url(
    cli, remote, local_set, tmp_path, s3
):
    name = _data_files(local_set)[2]
    data = bytearray((local_set / name).read_bytes())
    data[5] ^= 0xFF  # same size, other content
    s3.put(f"{PREFIX}/{name}", bytes(data))
    rc, _, err = cli("inspect", remote, "--cache-dir", tmp_path / "c")
    assert rc == 0, err  # the manifest alone is fine
    rc, out, err = cli("inspect", remote, "--verify", "--cache-dir", tmp_path / "c")
    assert rc == 1
    line = _one_line(err)
    assert f"{remote}/{name}: checksum mismatch" in line
    assert "verify: every checksum matches" not in out


def test_profile_json_on_a_url(cli, remote, local_set, tmp_path):
    cache = tmp_path / "c"
    args = ["profile", remote, "--batch-size", "64", "--workers", "1", "--cache-dir", cache]
    rc, out, err = cli(*args, "--cache-limit", "64M", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["path"] == remote
    assert r["batches"] == math.ceil(ROWS / 64) == r["batches_per_epoch"]
    assert r["samples_per_s"] > 0
    remote_info = r["remote"]
    assert remote_info["url"] == remote
    assert remote_info["cache_limit"] == 64 << 20
    assert Path(remote_info["cache_dir"]) == cache.resolve()
    assert remote_info["cache"]["downloads"] == len(_data_files(local_set))
    rc, text, err = cli(*args)
    assert rc == 0, err
    assert text.startswith(f"{remote}: {math.ceil(ROWS / 64)} batches of 64")
    assert "  cache       0 download(s)" in text  # the first run filled the node cache


def test_profile_cache_limit_too_small_for_a_batch_is_one_line(cli, remote, tmp_path):
    rc, _, err = cli("profile", remote, "--batch-size", "600", "--cache-limit", "1K")
    assert rc == 1
    assert "cache_limit=1024 bytes cannot hold" in _one_line(err)


def test_no_credential_in_output_or_cache(cli, remote, tmp_path, s3):
    cache = tmp_path / "c"
    printed = []
    for status, args in (
        (0, ["inspect", remote, "--verify", "--json"]),
        (0, ["inspect", remote]),
        (0, ["profile", remote, "--batch-size", "100", "--json"]),
        (0, ["profile", remote, "--batch-size", "100"]),
        (1, ["inspect", s3.url("not/a/set")]),
    ):
        rc, out, err = cli(*args, "--cache-dir", cache)
        assert rc == status, err
        printed += [out, err]
    text = "\n".join(printed)
    assert remote in text
    for secret in (s3.secret, s3.key_id):
        assert secret not in text
        for path in cache.rglob("*"):
            assert secret not in path.name
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("verb", ["inspect", "profile"])
def test_a_prefix_without_a_manifest_is_one_line_naming_the_url(cli, s3, tmp_path, verb):
    url = s3.url("sets/nothing")
    rc, out, err = cli(verb, url, "--cache-dir", tmp_path / "c")
    assert rc == 1 and not out
    line = _one_line(err)
    assert f"{url}/manifest.json: no manifest" in line


@pytest.mark.parametrize("verb", ["inspect", "profile"])
def test_cache_options_on_a_local_set_are_refused(cli, local_set, tmp_path, verb):
    for opts in (["--cache-limit", "512M"], ["--cache-dir", tmp_path / "c"]):
        rc, out, err = cli(verb, local_set, *opts)
        assert rc == 1 and not out
        line = _one_line(err)
        assert "--cache-dir and --cache-limit" in line and str(local_set) in line


def test_a_bad_cache_limit_is_a_usage_error(cli, remote):
    rc, _, err = cli("inspect", remote, "--cache-limit", "lots")
    assert rc == 2
    assert "Invalid value for '--cache-limit'" in err and "like 512M or 8G; got 'lots'" in err
