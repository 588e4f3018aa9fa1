"""Builds into a bucket: ``build.table|images|text|resample(..., out="s3://...")`` and the CLI.

The bucket is moto behind the fault proxy (``conftest.py``); every build stages in a
``tmp_path`` folder, and each test compares the objects with a local build's files.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from datafuel import build
from datafuel.build._remote_out import PROBE_NAME, default_stage_dir
from datafuel.cli import main
from datafuel.demo import write_corpus
from datafuel.engine._upload import shard_files
from datafuel.errors import ConfigError, RemoteError
from datafuel.loaders._remote import ObjectStore

HOUSES = str(files("datafuel") / "data" / "houses.csv")
TABLE_KW: dict[str, Any] = {"target": "price", "drop": ["id"], "shard_bytes": 20_000}
TEXT_KW: dict[str, Any] = {"vocab_size": 300, "shard_bytes": 3000, "batch_chars": 2500}


def local_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` a bucket build uploads: all but hidden ones (lock, state)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            out[rel.as_posix()] = p.read_bytes()
    return out


def bucket_files(s3: Any, prefix: str) -> dict[str, bytes]:
    return {k[len(prefix) + 1 :]: v for k, v in s3.objects(prefix + "/").items()}


def data_puts(s3: Any) -> int:
    """PUT requests of shard data files (not manifests, top-level files or the probe)."""
    return s3.proxy.count("PUT", contains="/shard-")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``datafuel ARGV...`` in this process -> ``(exit status, stdout, stderr)``."""

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    write_corpus(d / "a.jsonl", 120, seed=1)
    return d


def test_table_to_s3_equals_a_local_build(s3: Any, tmp_path: Path) -> None:
    local = build.table(HOUSES, tmp_path / "local", **TABLE_KW)
    remote = build.table(HOUSES, s3.url("run/tab"), stage_dir=tmp_path / "stage", **TABLE_KW)
    assert remote["out"] == s3.url("run/tab") and remote["counts"] == local["counts"]
    want = local_files(tmp_path / "local")
    assert {"recipe.json", "split.json", "train/manifest.json"} <= set(want)
    assert bucket_files(s3, "run/tab") == want
    assert remote["remote"]["uploaded"] == len(want)
    assert PROBE_NAME not in "".join(s3.objects())


def test_text_to_s3_equals_a_local_build(s3: Any, tmp_path: Path, corpus: Path) -> None:
    local = build.text([corpus], tmp_path / "local", **TEXT_KW)
    remote = build.text([corpus], s3.url("txt"), stage_dir=tmp_path / "stage", **TEXT_KW)
    assert remote["counts"] == local["counts"] and remote["out"] == s3.url("txt")
    want = local_files(tmp_path / "local")
    assert "tokenizer.json" in want and len([k for k in want if "/shard-" in k]) > 6
    assert bucket_files(s3, "txt") == want
    # the bucket's sets read back through the remote reader's store: sha256 kept as metadata
    store = ObjectStore(s3.url("txt"))
    m = json.loads(store.get_bytes("train/manifest.json"))
    first = m["shards"][0]["files"]["tokens"]["bin"]
    assert store.head(f"train/{first['name']}")["attributes"]["sha256"] == first["sha256"]


def test_images_to_s3_equals_a_local_build(s3: Any, tmp_path: Path, folder: Path) -> None:
    kw: dict[str, Any] = {"fractions": (0.6, 0.2, 0.2), "seed": 1, "shard_bytes": 5000}
    build.images(folder, tmp_path / "local", **kw)
    build.images(folder, s3.url("img"), stage_dir=tmp_path / "stage", **kw)
    assert bucket_files(s3, "img") == local_files(tmp_path / "local")


def test_resample_to_s3_equals_a_local_build(s3: Any, tmp_path: Path, corpus: Path) -> None:
    build.text([corpus], tmp_path / "text", **TEXT_KW)
    kw: dict[str, Any] = {"seed": 0, "report_tokens": 2000, "shard_bytes": 3000}
    local = build.resample(tmp_path / "text" / "train", tmp_path / "local", **kw)
    remote = build.resample(
        tmp_path / "text" / "train", s3.url("rs"), stage_dir=tmp_path / "stage", **kw
    )
    want = local_files(tmp_path / "local")
    assert "manifest.json" in want and "resample_report.json" in want
    got = bucket_files(s3, "rs")
    assert set(got) == set(want)
    # the report holds the run's timings; every shard file and the manifest are identical
    same = {k for k in want if k.startswith("shard-") or k == "manifest.json"}
    assert {k: got[k] for k in same} == {k: want[k] for k in same}
    assert remote["report"]["counts"] == local["report"]["counts"]


def test_manifests_go_up_after_their_data_and_top_level_files_last(s3: Any, tmp_path: Path) -> None:
    build.table(HOUSES, s3.url("o"), stage_dir=tmp_path / "stage", **TABLE_KW)
    puts = [p.split("?")[0] for m, p in s3.proxy.requests if m == "PUT" and PROBE_NAME not in p]
    puts = [p.split(f"/{s3.bucket}/o/", 1)[1] for p in puts if f"/{s3.bucket}/o/" in p]
    last_set_file = 0
    for name in ("train", "val", "test"):
        mine = [i for i, p in enumerate(puts) if p.startswith(f"{name}/")]
        assert puts[mine[-1]] == f"{name}/manifest.json"  # after every data file of the set
        last_set_file = max(last_set_file, mine[-1])
    top = [i for i, p in enumerate(puts) if "/" not in p]
    assert {puts[i] for i in top} >= {"split.json", "recipe.json"}
    assert min(top) > last_set_file


def test_rerun_uploads_nothing_again_and_a_deleted_object_alone(
    s3: Any, tmp_path: Path, corpus: Path
) -> None:
    args = ([corpus], s3.url("t"))
    first = build.text(*args, stage_dir=tmp_path / "stage", **TEXT_KW)
    n = first["remote"]["uploaded"]
    s3.proxy.reset_counts()
    again = build.text(*args, stage_dir=tmp_path / "stage", **TEXT_KW)
    assert data_puts(s3) == 0
    # the only PUT is the write probe: manifests and top-level files are checked too
    assert s3.proxy.count("PUT") == 1 and s3.proxy.count("PUT", contains=PROBE_NAME) == 1
    assert again["remote"]["uploaded"] == 0 and again["remote"]["already_there"] == n

    victim = "t/val/shard-00000.tokens.bin"
    s3.client.delete_object(Bucket=s3.bucket, Key=victim)
    s3.proxy.reset_counts()
    # a new stage (another machine): the build is redone here, only the gap goes up
    build.text(*args, stage_dir=tmp_path / "stage2", **TEXT_KW)
    puts = [p for m, p in s3.proxy.requests if m == "PUT" and PROBE_NAME not in p]
    assert len(puts) == 1 and puts[0].split("?")[0].endswith(f"/{s3.bucket}/{victim}")
    assert bucket_files(s3, "t") == local_files(tmp_path / "stage")


def test_a_changed_object_is_replaced(s3: Any, tmp_path: Path) -> None:
    build.table(HOUSES, s3.url("c"), stage_dir=tmp_path / "stage", **TABLE_KW)
    key = "c/train/shard-00000.x.bin"
    good = s3.objects(key)[key]
    s3.put(key, b"\0" * len(good))  # same size, no sha256 metadata: not trusted
    s3.proxy.reset_counts()
    build.table(HOUSES, s3.url("c"), stage_dir=tmp_path / "stage", **TABLE_KW)
    assert data_puts(s3) == 1 and s3.objects(key)[key] == good


def test_an_interrupted_upload_resumes_with_the_rest(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = ObjectStore.put_file
    done: list[str] = []

    lock = threading.Lock()

    def flaky(self: ObjectStore, name: str, path: Any, *, sha256: str | None = None) -> None:
        with lock:  # uploads run several at once: exactly three get through
            if len(done) >= 3:
                raise RemoteError(f"{self.url_of(name)}: cannot upload it: connection lost")
            done.append(name)
        real(self, name, path, sha256=sha256)

    monkeypatch.setattr(ObjectStore, "put_file", flaky)
    with pytest.raises(RemoteError, match="connection lost"):
        build.table(HOUSES, s3.url("i"), stage_dir=tmp_path / "stage", **TABLE_KW)
    got = s3.objects("i/")
    assert any(k.endswith("manifest.json") for k in got) or len(done) < 4
    for key in (k for k in got if k.endswith("manifest.json")):  # a visible set is whole
        folder = key.rsplit("/", 1)[0]
        for shard in json.loads(got[key])["shards"]:
            for part in (f for parts in shard["files"].values() for f in parts.values()):
                assert f"{folder}/{part['name']}" in got
    assert "i/split.json" not in got  # top-level files go up after every set
    monkeypatch.setattr(ObjectStore, "put_file", real)
    s3.proxy.reset_counts()
    summary = build.table(HOUSES, s3.url("i"), stage_dir=tmp_path / "stage", **TABLE_KW)
    want = local_files(tmp_path / "stage")
    shard_files = [k for k in want if "/shard-" in k]
    assert data_puts(s3) == len(shard_files) - 3 and len(shard_files) > 6
    assert summary["remote"]["already_there"] >= 3  # and the manifest of a set finished
    assert bucket_files(s3, "i") == want


def test_a_split_left_empty_is_removed_from_the_bucket(s3: Any, tmp_path: Path) -> None:
    build.table(HOUSES, s3.url("e"), stage_dir=tmp_path / "stage", **TABLE_KW)
    assert "e/test/manifest.json" in s3.objects("e/")
    kw = {**TABLE_KW, "fractions": (0.9, 0.1, 0.0)}
    build.table(HOUSES, s3.url("e"), stage_dir=tmp_path / "stage", **kw)
    assert not any(k.startswith("e/test/") for k in s3.objects("e/"))
    assert bucket_files(s3, "e") == local_files(tmp_path / "stage")


def test_a_rebuild_with_fewer_shards_leaves_no_stale_object(s3: Any, tmp_path: Path) -> None:
    build.table(HOUSES, s3.url("f"), stage_dir=tmp_path / "stage", **TABLE_KW)
    kw = {**TABLE_KW, "shard_bytes": 1 << 20}
    build.table(HOUSES, s3.url("f"), stage_dir=tmp_path / "stage", **kw)
    build.table(HOUSES, tmp_path / "local", **kw)
    assert bucket_files(s3, "f") == local_files(tmp_path / "local")


def test_missing_bucket_is_one_remote_error_before_any_work(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{s3.bucket}-missing/out"
    with pytest.raises(RemoteError) as err:
        build.table(HOUSES, url, stage_dir=tmp_path / "stage", **TABLE_KW)
    assert url in str(err.value) and err.value.path == url
    assert not (tmp_path / "stage").exists()  # nothing was read, fitted or written


def test_refused_writes_are_one_remote_error(s3: Any, tmp_path: Path) -> None:
    s3.proxy.fail_next(1, status=403, code="AccessDenied")
    with pytest.raises(RemoteError, match="cannot write the build there") as err:
        build.text([tmp_path], s3.url("ro"), stage_dir=tmp_path / "stage", **TEXT_KW)
    assert s3.url("ro") in str(err.value)
    assert not (tmp_path / "stage").exists()


def test_https_out_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="read-only"):
        build.table(HOUSES, "https://user:pw@example.com/sets?sig=1", **TABLE_KW)
    with pytest.raises(ConfigError, match="read-only") as err:
        build.text([tmp_path], "http://127.0.0.1:9/x", **TEXT_KW)
    assert "pw" not in str(err.value)


def test_default_stage_dir_is_in_the_cache_and_free_of_credentials(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    stage = default_stage_dir(s3.url("d"))
    assert stage.parent == tmp_path / "cache" / "datafuel" / "stage" and len(stage.name) == 16
    assert default_stage_dir(s3.url("d") + "/") == stage
    summary = build.table(HOUSES, s3.url("d"), **TABLE_KW)
    assert summary["remote"]["stage_dir"] == str(stage)
    assert (stage / "train" / "manifest.json").is_file()


def test_credentials_are_written_nowhere(
    s3: Any, tmp_path: Path, corpus: Path, cli: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    code, stdout, stderr = cli(
        "build", "text", str(corpus), "--out", s3.url("sec"), "--vocab-size", "300",
        "--shard-bytes", "3000", "--stage-dir", str(tmp_path / "stage"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    assert json.loads(stdout)["out"] == s3.url("sec")
    blobs = [stdout.encode(), stderr.encode(), caplog.text.encode()]
    blobs += [p.read_bytes() for p in (tmp_path / "stage").rglob("*") if p.is_file()]
    blobs += list(s3.objects().values())
    assert len(blobs) > 10
    for secret in (s3.secret, s3.key_id):
        assert not [b for b in blobs if secret.encode() in b]


def test_cli_builds_table_to_s3_and_resumes(s3: Any, tmp_path: Path, cli: Any) -> None:
    args = ["build", "table", HOUSES, "--target", "price", "--drop", "id"]
    args += ["--out", s3.url("cli"), "--stage-dir", str(tmp_path / "stage")]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert s3.url("cli") in stdout
    s3.proxy.reset_counts()
    assert cli(*args)[0] == 0
    assert data_puts(s3) == 0
    code, _, stderr = cli("build", "table", HOUSES, "--out", "https://example.com/x")
    assert code != 0 and "read-only" in stderr


# -- Ray: the workers upload their own shards ------------------------------------------
#: The driver of a Ray build, in a fresh process: the Ray instance it starts has the
#: bucket's environment (the test's ``AWS_*``), as the nodes of a cluster must have it.
#: The driver's ``ObjectStore.put_file`` is spied on (the workers' is not: they import
#: datafuel themselves), so what the driver uploaded is known apart from the workers.
_RAY_DRIVER = """
import json, sys
from pathlib import Path
import ray
from datafuel import build
from datafuel.loaders._remote import ObjectStore

kind, src, url, stage, kw, victim = sys.argv[1:7]
src, kw = json.loads(src), json.loads(kw)
driver_puts = []
real = ObjectStore.put_file
def spy(self, name, path, *, sha256=None):
    driver_puts.append(name)
    return real(self, name, path, sha256=sha256)
ObjectStore.put_file = spy
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
runs = []
for run in range(2 if victim else 1):
    if run:
        ObjectStore(url).delete(victim)
        ObjectStore(url).head("--second-run--")  # a marker in the proxy's request log
    driver_puts.clear()
    summary = getattr(build, kind)(src, url, engine="ray", stage_dir=stage, **kw)
    staged = sorted(p.name for p in Path(stage).rglob("shard-*"))
    runs.append({"summary": summary, "driver_puts": list(driver_puts), "staged": staged})
ray.shutdown()
print(json.dumps(runs))
"""


def _ray_driver(
    kind: str, src: Any, url: str, stage: Path, kw: dict[str, Any], victim: str = ""
) -> list[dict[str, Any]]:
    """Run ``_RAY_DRIVER`` in a fresh process (its env: this test's bucket); each run's record."""
    import os
    import subprocess
    import sys

    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'datafuel[ray]'")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    argv = [kind, json.dumps(src), url, str(stage), json.dumps(kw), victim]
    proc = subprocess.run(
        [sys.executable, "-c", _RAY_DRIVER, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    for run in runs:  # the driver uploaded no shard file and its stage holds none
        assert not [n for n in run["driver_puts"] if "shard-" in n], run["driver_puts"]
        assert run["staged"] == []
    return runs


def test_ray_workers_upload_their_shards_the_same_bytes_and_resume(s3: Any, tmp_path: Path) -> None:
    build.table(HOUSES, tmp_path / "local", **TABLE_KW)
    want = local_files(tmp_path / "local")
    shards = sorted(k for k in want if "/shard-" in k)
    assert len(shards) > 6
    victim = "train/shard-00000.x.bin"
    stage = tmp_path / "stage"
    first, second = _ray_driver("table", HOUSES, s3.url("ray"), stage, TABLE_KW, victim)
    assert first["summary"]["engine"] == "ray" and first["summary"]["out"] == s3.url("ray")
    assert bucket_files(s3, "ray") == want  # the local engine's bytes, file for file
    # the driver uploaded no shard file and its stage holds none (checked in _ray_driver)
    assert (tmp_path / "stage" / "train" / "manifest.json").is_file()
    marker = next(
        i for i, (m, p) in enumerate(s3.proxy.requests) if m == "HEAD" and "--second-run--" in p
    )
    shard_puts = [
        p.split("?")[0].split(f"/{s3.bucket}/ray/", 1)[1]
        for m, p in s3.proxy.requests
        if m == "PUT" and "/shard-" in p
    ]
    before = [p for m, p in s3.proxy.requests[:marker] if m == "PUT" and "/shard-" in p]
    assert sorted(shard_puts[: len(before)]) == shards  # every shard file once
    assert first["summary"]["remote"]["uploaded"] == len(want)
    # the rerun: the deleted object alone goes up again (the workers checked the rest)
    assert shard_puts[len(before) :] == [victim]
    assert second["summary"]["remote"]["already_there"] >= len(shards) - 1
    assert bucket_files(s3, "ray") == want


@pytest.mark.parametrize("kind", ["text", "images", "resample"])
def test_ray_workers_upload_text_image_and_resample_shards(
    s3: Any, tmp_path: Path, corpus: Path, folder: Path, kind: str
) -> None:
    kw: dict[str, Any]
    if kind == "text":
        src: Any = [str(corpus)]
        kw = TEXT_KW
    elif kind == "images":
        src, kw = str(folder), {"fractions": (0.6, 0.2, 0.2), "seed": 1, "shard_bytes": 5000}
    else:  # the resample's work folder is still in the stage: one machine here
        build.text([corpus], tmp_path / "text", **TEXT_KW)
        src, kw = str(tmp_path / "text" / "train"), {"seed": 0, "report_tokens": 2000}
        kw["shard_bytes"] = 3000
    getattr(build, kind)(src, tmp_path / "local", **kw)
    (run,) = _ray_driver(kind, src, s3.url(kind), tmp_path / "stage", kw)
    want = local_files(tmp_path / "local")
    shards = [k for k in want if "shard-" in k]
    assert len(shards) > 3
    got = bucket_files(s3, kind)
    assert set(got) == set(want)
    same = set(want) - {"resample_report.json"}  # the report holds the run's timings
    assert {k: got[k] for k in same} == {k: want[k] for k in same}
    assert s3.proxy.count("PUT", contains="/shard-") == len(shards)
    assert run["summary"]["remote"]["uploaded"] == len(want)


# -- a local build uploads each shard as it is finished ------------------------------------
def _set_puts(s3: Any, prefix: str) -> list[str]:
    """Keys (below ``prefix``) of the PUT requests of the proxy's log, in arrival order."""
    root = f"/{s3.bucket}/{prefix}/"
    paths = [p.split("?")[0] for m, p in s3.proxy.requests if m == "PUT" and PROBE_NAME not in p]
    return [p.split(root, 1)[1] for p in paths if root in p]


def _assert_manifests_last(puts: list[str]) -> None:
    """Each set's ``manifest.json`` is the last PUT of its folder, after its shard files."""
    sets = {p.rsplit("/", 1)[0] for p in puts if p.endswith("/manifest.json")}
    assert sets
    for folder in sets:
        mine = [p for p in puts if p.startswith(f"{folder}/")]
        assert mine[-1] == f"{folder}/manifest.json" and mine.count(mine[-1]) == 1
        assert len(mine) > 1


def _in_bucket(s3: Any, key: str) -> bool:
    found = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=key)
    return any(o["Key"] == key for o in found.get("Contents", []))


def test_shards_go_up_while_the_build_writes_the_next_ones(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafuel.loaders import ShardWriter

    stage = tmp_path / "stage"
    real_open = ShardWriter._open_shard
    seen: list[tuple[str, int, bool, bool]] = []  # set, shard opened, previous up, manifest

    def open_shard(self: ShardWriter) -> None:
        # before shard k opens, shard k - 1 of this set must reach the bucket on its own
        # (its set is still being written: no manifest yet, here or there)
        if self._shards and stage in self.directory.parents:
            split = self.directory.name
            prev = [f"o/{split}/{f['name']}" for f in shard_files(self._shards[-1])]
            deadline = time.monotonic() + 20
            while not all(_in_bucket(s3, k) for k in prev) and time.monotonic() < deadline:
                time.sleep(0.01)
            up = all(_in_bucket(s3, k) for k in prev)
            manifest = (self.directory / "manifest.json").exists() or _in_bucket(
                s3, f"o/{split}/manifest.json"
            )
            seen.append((split, len(self._shards), up, manifest))
        real_open(self)

    monkeypatch.setattr(ShardWriter, "_open_shard", open_shard)
    build.table(HOUSES, s3.url("o"), stage_dir=stage, **TABLE_KW)
    train = [s for s in seen if s[0] == "train"]
    assert len(train) >= 3, seen  # train has four shards (three opened after another)
    assert all(up and not manifest for _, _, up, manifest in seen), seen
    puts = _set_puts(s3, "o")
    _assert_manifests_last(puts)
    assert sorted(p for p in puts if "/shard-" in p) == sorted(
        k for k in local_files(stage) if "/shard-" in k
    )  # every shard file once: the close did not upload any again
    assert bucket_files(s3, "o") == local_files(stage)


def _store_ops(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """``(op, object URL)`` of this process's uploads (as each starts) and deletes (as each
    ends), in order: obstore deletes through a bulk POST the proxy's log cannot name."""
    ops: list[tuple[str, str]] = []
    lock = threading.Lock()
    put_file, put_bytes, delete = ObjectStore.put_file, ObjectStore.put_bytes, ObjectStore.delete

    def spy_put_file(self: ObjectStore, name: str, path: Any, **kw: Any) -> None:
        with lock:
            ops.append(("put", self.url_of(name)))
        put_file(self, name, path, **kw)

    def spy_put_bytes(self: ObjectStore, name: str, data: bytes, **kw: Any) -> None:
        with lock:
            ops.append(("put", self.url_of(name)))
        put_bytes(self, name, data, **kw)

    def spy_delete(self: ObjectStore, name: str) -> None:
        delete(self, name)
        with lock:
            ops.append(("delete", self.url_of(name)))

    monkeypatch.setattr(ObjectStore, "put_file", spy_put_file)
    monkeypatch.setattr(ObjectStore, "put_bytes", spy_put_bytes)
    monkeypatch.setattr(ObjectStore, "delete", spy_delete)
    return ops


def test_a_rebuild_deletes_the_old_manifest_before_its_first_shard_upload(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build.table(HOUSES, s3.url("r"), stage_dir=tmp_path / "stage", **TABLE_KW)
    ops = _store_ops(monkeypatch)
    kw = {**TABLE_KW, "shard_bytes": 30_000}  # other cuts, fewer shards: every file changes
    build.table(HOUSES, s3.url("r"), stage_dir=tmp_path / "stage", **kw)
    build.table(HOUSES, tmp_path / "local", **kw)
    shards = sorted(k[len("train/") :] for k in local_files(tmp_path / "local") if "train/sh" in k)
    train = s3.url("r/train") + "/"
    log = [(op, url[len(train) :]) for op, url in ops if url.startswith(train)]
    gone = log.index(("delete", "manifest.json"))
    assert log[:gone] == []  # before any of the set's files is replaced
    new_manifest = log.index(("put", "manifest.json"))
    assert sorted(log[gone + 1 : new_manifest]) == [("put", k) for k in shards]
    stale = log[new_manifest + 1 :]  # objects the new manifest does not name: after it
    assert stale and all(op == "delete" and p not in shards for op, p in stale)
    assert bucket_files(s3, "r") == local_files(tmp_path / "local")


def _fail_puts(
    s3: Any, monkeypatch: pytest.MonkeyPatch, contains: str
) -> tuple[list[str], list[bool]]:
    """Every PUT whose path has ``contains`` answers 503 SlowDown while the second list
    returned is not empty; the first is every path refused."""
    real = s3.proxy._arrived
    hits: list[str] = []
    on = [True]

    def arrived(method: str, path: str) -> Any:
        fault, drop = real(method, path)
        if on and method == "PUT" and contains in path:
            hits.append(path.split("?")[0])
            return (503, "SlowDown", None), None
        return fault, drop

    monkeypatch.setattr(s3.proxy, "_arrived", arrived)
    return hits, on


def test_a_shard_upload_failing_past_its_retries_fails_the_build_without_a_manifest(
    s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datafuel.loaders._remote as remote

    monkeypatch.setattr(  # three quick attempts per request instead of eight
        remote, "RetryPolicy", functools.partial(remote.RetryPolicy, attempts=3, maximum=0.05)
    )
    hits, failing = _fail_puts(s3, monkeypatch, "/train/shard-00002.")
    stage = tmp_path / "stage"
    with pytest.raises(RemoteError, match="after 3 attempts") as err:
        build.table(HOUSES, s3.url("x"), stage_dir=stage, **TABLE_KW)
    victim = s3.url("x/train/shard-00002.x.bin")
    assert err.value.path == victim and victim in str(err.value)
    assert len(hits) == 3 and all(h.endswith("/x/train/shard-00002.x.bin") for h in hits)
    got = s3.objects("x/")
    assert not [k for k in got if k.endswith("manifest.json")]
    assert "x/split.json" not in got
    assert "x/train/shard-00000.x.bin" in got  # the shards before it went up meanwhile

    # the rerun (no fault) uploads the shard files that are missing, and nothing else
    failing.clear()
    there = {k[len("x/") :] for k in got}
    s3.proxy.reset_counts()
    summary = build.table(HOUSES, s3.url("x"), stage_dir=stage, **TABLE_KW)
    want = local_files(stage)
    puts = _set_puts(s3, "x")
    shards = sorted(k for k in want if "/shard-" in k)
    assert sorted(p for p in puts if "/shard-" in p) == sorted(set(shards) - there)
    assert "train/shard-00002.x.bin" in puts
    assert summary["remote"]["already_there"] >= len(there)
    _assert_manifests_last(puts)
    build.table(HOUSES, tmp_path / "local", **TABLE_KW)
    assert bucket_files(s3, "x") == local_files(tmp_path / "local") == want
