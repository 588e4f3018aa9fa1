from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from datafuel.errors import (
    CorruptShardError,
    DatafuelError,
    ManifestError,
    NonFiniteError,
    SchemaError,
)
from datafuel.loaders import ShardSet, ShardWriter, bytes_field, fixed, ragged, write_shards

FIELDS = {
    "x": fixed("float32", (3,)),
    "y": fixed("int64"),
    "img": fixed("uint8", (4, 4, 3)),
    "jpeg": bytes_field(),
    "tokens": ragged("uint16"),
}


def make_rows(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(n, 3)).astype(np.float32),
        "y": rng.integers(-(2**40), 2**40, size=n),
        "img": rng.integers(0, 256, size=(n, 4, 4, 3), dtype=np.uint8),
        "jpeg": [rng.bytes(int(k)) for k in rng.integers(0, 50, size=n)],
        "tokens": [
            rng.integers(0, 65535, size=int(k), dtype=np.uint16)
            for k in rng.integers(0, 40, size=n)
        ],
    }


def write(directory: Path, rows: dict, batch: int = 37, shard_bytes: int = 2000) -> dict:
    n = len(rows["y"])
    with ShardWriter(
        directory, FIELDS, shard_bytes=shard_bytes, provenance={"source": "test"}
    ) as w:
        for s in range(0, n, batch):
            w.write({k: v[s : s + batch] for k, v in rows.items()})
    return w.manifest


def assert_row_equal(got: dict, rows: dict, i: int) -> None:
    np.testing.assert_array_equal(got["x"], rows["x"][i])
    assert got["y"] == rows["y"][i]
    np.testing.assert_array_equal(got["img"], rows["img"][i])
    assert got["jpeg"] == rows["jpeg"][i]
    np.testing.assert_array_equal(got["tokens"], rows["tokens"][i])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_every_field_kind(tmp_path: Path, seed: int) -> None:
    rows = make_rows(300, seed)
    m = write(tmp_path, rows)
    ds = ShardSet(tmp_path, verify=True)
    assert len(ds) == 300 == m["total_rows"]
    assert ds.num_shards > 3  # the size limit rolled over
    assert ds.provenance["source"] == "test"
    seq = [b for b in ds.iter_batches(64)]
    flat = {
        k: (
            np.concatenate([b[k] for b in seq])
            if FIELDS[k].kind == "fixed"
            else [item for b in seq for item in b[k]]
        )
        for k in FIELDS
    }
    for i in range(300):
        assert_row_equal({k: flat[k][i] for k in FIELDS}, rows, i)


def test_random_access_equals_sequential_and_gather(tmp_path: Path) -> None:
    rows = make_rows(200, 3)
    write(tmp_path, rows)
    ds = ShardSet(tmp_path)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 200, size=120)  # crosses shards, with repeats
    got = ds.gather(idx)
    for j, i in enumerate(idx):
        assert_row_equal({k: got[k][j] for k in FIELDS}, rows, int(i))
        assert_row_equal(ds[int(i)], rows, int(i))
    assert_row_equal(ds[-1], rows, 199)
    with pytest.raises(IndexError, match="out of range"):
        ds.gather([200])


def test_gather_into_preallocated_out(tmp_path: Path) -> None:
    rows = make_rows(50)
    write(tmp_path, rows, shard_bytes=1 << 30)
    ds = ShardSet(tmp_path)
    buf = np.empty((5, 3), np.float32)
    got = ds.gather([4, 3, 2, 1, 0], fields=["x"], out={"x": buf})
    assert got["x"] is buf
    np.testing.assert_array_equal(buf, rows["x"][[4, 3, 2, 1, 0]])
    with pytest.raises(SchemaError, match="out\\['x'\\]"):
        ds.gather([0, 1], fields=["x"], out={"x": buf})


def test_rebuild_gives_identical_bytes_whatever_the_batching(tmp_path: Path) -> None:
    rows = make_rows(250, 5)
    write(tmp_path / "a", rows, batch=250)
    write(tmp_path / "b", rows, batch=7)
    write(tmp_path / "a", rows, batch=13)  # rewrite in place
    names_a = sorted(os.listdir(tmp_path / "a"))
    assert names_a == sorted(os.listdir(tmp_path / "b"))
    for name in names_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_rewrite_with_fewer_rows_removes_stale_shards(tmp_path: Path) -> None:
    write(tmp_path, make_rows(300))
    write(tmp_path, make_rows(20))
    ds = ShardSet(tmp_path, verify=True)
    assert len(ds) == 20
    listed = {f["name"] for s in ds.shards for p in s["files"].values() for f in p.values()}
    assert set(os.listdir(tmp_path)) == listed | {"manifest.json"}


def test_exception_inside_writer_leaves_no_manifest(tmp_path: Path) -> None:
    write(tmp_path, make_rows(100))
    rows = make_rows(100, 1)
    with (
        pytest.raises(RuntimeError, match="boom"),
        ShardWriter(tmp_path, FIELDS, shard_bytes=2000) as w,
    ):
        w.write({k: v[:50] for k, v in rows.items()})
        raise RuntimeError("boom")
    assert not (tmp_path / "manifest.json").exists()
    with pytest.raises(ManifestError, match="interrupted"):
        ShardSet(tmp_path)


def test_killed_writer_leaves_no_manifest_and_rerun_is_identical(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_shards import make_rows, FIELDS
        from datafuel.loaders import ShardWriter
        rows = make_rows(400, 9)
        with ShardWriter(sys.argv[1], FIELDS, shard_bytes=2000) as w:
            for s in range(0, 400, 20):
                w.write({{k: v[s:s+20] for k, v in rows.items()}})
                if s == 200:
                    print("half", flush=True)
                    time.sleep(60)
        """
    )
    target = tmp_path / "killed"
    write(target, make_rows(400, 9))  # a complete earlier build, then a rebuild that is killed
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "half"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with pytest.raises(ManifestError):
        ShardSet(target)
    write(target, make_rows(400, 9), batch=20)
    write(tmp_path / "clean", make_rows(400, 9), batch=20)
    for name in sorted(os.listdir(tmp_path / "clean")):
        assert (target / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert sorted(os.listdir(target)) == sorted(os.listdir(tmp_path / "clean"))


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _save(d: Path, m: dict) -> None:
    (d / "manifest.json").write_text(json.dumps(m))


def test_truncated_bin_is_refused_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, make_rows(60))
    victim = tmp_path / "shard-00001.x.bin"
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(CorruptShardError, match=r"shard-00001\.x\.bin.*size"):
        ShardSet(tmp_path)


def test_grown_bin_is_refused(tmp_path: Path) -> None:
    write(tmp_path, make_rows(60))
    with open(tmp_path / "shard-00000.jpeg.bin", "ab") as fh:
        fh.write(b"extra")
    with pytest.raises(CorruptShardError, match=r"shard-00000\.jpeg\.bin"):
        ShardSet(tmp_path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, make_rows(60))
    (tmp_path / "shard-00000.tokens.idx").unlink()
    with pytest.raises(CorruptShardError, match=r"shard-00000\.tokens\.idx.*missing"):
        ShardSet(tmp_path)


def test_checksum_mismatch_is_caught_on_verify(tmp_path: Path) -> None:
    write(tmp_path, make_rows(60))
    victim = tmp_path / "shard-00000.img.bin"
    data = bytearray(victim.read_bytes())
    data[10] ^= 0xFF  # same size, different bytes
    victim.write_bytes(bytes(data))
    ShardSet(tmp_path)  # sizes still match: opening without verify is O(1)
    with pytest.raises(CorruptShardError, match=r"shard-00000\.img\.bin.*checksum"):
        ShardSet(tmp_path, verify=True)


def test_corrupt_offsets_are_refused(tmp_path: Path) -> None:
    write(tmp_path, make_rows(60))
    victim = tmp_path / "shard-00000.jpeg.idx"
    idx = np.fromfile(victim, "<u8")
    idx[2] = 10**9
    idx.tofile(victim)
    with pytest.raises(CorruptShardError, match=r"shard-00000\.jpeg\.idx"):
        ShardSet(tmp_path)


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    write(tmp_path, make_rows(10))
    m = _manifest(tmp_path)
    m["version"] = 99
    _save(tmp_path, m)
    with pytest.raises(ManifestError, match=r"manifest\.json.*unknown format version 99"):
        ShardSet(tmp_path)


@pytest.mark.parametrize(
    "name", ["../x.bin", "/etc/passwd", "sub/x.bin", "..", "manifest.json", ""]
)
def test_manifest_pointing_outside_is_refused(tmp_path: Path, name: str) -> None:
    write(tmp_path, make_rows(10))
    m = _manifest(tmp_path)
    m["shards"][0]["files"]["x"]["bin"]["name"] = name
    _save(tmp_path, m)
    with pytest.raises(ManifestError, match="not a plain file name"):
        ShardSet(tmp_path)


def test_manifest_total_rows_must_add_up(tmp_path: Path) -> None:
    write(tmp_path, make_rows(10))
    m = _manifest(tmp_path)
    m["total_rows"] = 11
    _save(tmp_path, m)
    with pytest.raises(ManifestError, match="total_rows"):
        ShardSet(tmp_path)


def test_not_json_manifest(tmp_path: Path) -> None:
    write(tmp_path, make_rows(10))
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(ManifestError, match="not valid JSON"):
        ShardSet(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("x", np.zeros((2, 3), np.float64), "declared float32; got an array of float64"),
        ("x", np.zeros((2, 4), np.float32), r"shape \(3,\)"),
        ("y", np.zeros(2, np.int32), "declared int64"),
        ("jpeg", [b"a", "text"], "row 1: expected bytes"),
        (
            "tokens",
            [np.zeros(2, np.uint32), np.zeros(1, np.uint16)],
            "row 0: expected a 1-D uint16",
        ),
        ("tokens", np.zeros((2, 3), np.uint16), "variable-length"),
    ],
)
def test_wrong_dtype_or_shape_is_refused(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    batch = {k: v[:2] for k, v in make_rows(2).items()}
    batch[field] = value
    with ShardWriter(tmp_path, FIELDS) as w, pytest.raises(SchemaError, match=message) as info:
        w.write(batch)
    assert info.value.field == field
    assert isinstance(info.value, DatafuelError) and isinstance(info.value, ValueError)


def test_missing_extra_and_misaligned_fields(tmp_path: Path) -> None:
    batch = {k: v[:3] for k, v in make_rows(3).items()}
    with ShardWriter(tmp_path, FIELDS) as w:
        with pytest.raises(SchemaError, match="Missing \\['y'\\]"):
            w.write({k: v for k, v in batch.items() if k != "y"})
        with pytest.raises(SchemaError, match="unexpected \\['z'\\]"):
            w.write({**batch, "z": np.zeros(3)})
        with pytest.raises(SchemaError, match="has 2 rows but the batch has 3"):
            w.write({**batch, "y": batch["y"][:2]})


def test_nan_never_reaches_a_shard(tmp_path: Path) -> None:
    x = np.ones((10, 2), np.float32)
    x[7, 1] = np.nan
    with pytest.raises(NonFiniteError, match="rows \\[7\\]") as info:
        write_shards(tmp_path, x=x)
    assert info.value.row == 7 and info.value.field == "x"
    x[7, 1] = np.inf
    with pytest.raises(NonFiniteError):
        write_shards(tmp_path, x=x)


def test_bad_field_names_and_specs() -> None:
    with pytest.raises(SchemaError, match="field names"):
        ShardWriter("/tmp/never", {"a/b": fixed("float32")})
    with pytest.raises(SchemaError, match="dtype"):
        fixed("complex64")
    with pytest.raises(SchemaError, match="non-empty|at least one"):
        ShardWriter("/tmp/never", {})


def test_empty_shard_set(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, {"x": fixed("float32", 2)}):
        pass
    ds = ShardSet(tmp_path, verify=True)
    assert len(ds) == 0 and ds.num_shards == 0
    assert ds.gather([])["x"].shape == (0, 2)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not a directory"):
        ShardSet(tmp_path / "nope")
