"""Shards written one at a time (loaders._parts) and the engine plan, without Ray."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import FIELDS, payloads, same_tree, unit_rows
from hypothesis import given, settings
from hypothesis import strategies as st

from datafuel.engine import LocalEngine, ShardCutter, get_engine
from datafuel.engine._base import Packed, concat_rows, pack_rows
from datafuel.engine._plan import row_bytes
from datafuel.errors import ConfigError, ManifestError, NonFiniteError, SchemaError
from datafuel.loaders import (
    ShardSet,
    ShardWriter,
    fixed,
    ragged,
)
from datafuel.loaders._parts import start_shard_set, write_manifest, write_shard

PROV = {"source": "test"}


def reference(directory: Path, sizes: list[int], shard_bytes: int) -> dict:
    """What ShardWriter writes for the rows of every unit, in one process."""
    with ShardWriter(directory, FIELDS, shard_bytes=shard_bytes, provenance=PROV) as w:
        for p in payloads(sizes):
            w.write(unit_rows(None, p))
    assert w.manifest is not None
    return w.manifest


def all_rows(sizes: list[int]) -> dict:
    batches = [unit_rows(None, p) for p in payloads(sizes)]
    return concat_rows(FIELDS, batches, [(0, n) for n in sizes])


@pytest.mark.parametrize("shard_bytes", [1, 700, 5000, 1 << 30])
def test_shards_written_in_any_order_equal_shardwriter(tmp_path: Path, shard_bytes: int) -> None:
    sizes = [13, 0, 40, 7, 25]
    ref = reference(tmp_path / "ref", sizes, shard_bytes)
    rows = all_rows(sizes)
    out = start_shard_set(tmp_path / "parts")
    starts = np.concatenate([[0], np.cumsum([s["rows"] for s in ref["shards"]])]).tolist()
    entries: dict[int, dict] = {}
    order = np.random.default_rng(shard_bytes).permutation(len(ref["shards"])).tolist()
    for k in order:  # workers finish in any order
        a, b = starts[k], starts[k + 1]
        entries[k] = write_shard(
            out, FIELDS, {f: v[a:b] for f, v in rows.items()}, shard=k, first_row=a
        )
    m = write_manifest(out, FIELDS, [entries[k] for k in range(len(entries))], provenance=PROV)
    assert m == ref
    assert same_tree(tmp_path / "ref", out) == []
    assert len(ShardSet(out, verify=True)) == sum(sizes)


def test_rewriting_a_shard_gives_the_same_bytes_and_leaves_no_temp(tmp_path: Path) -> None:
    out = start_shard_set(tmp_path / "s")
    batch = unit_rows(None, (0, 9))
    first = write_shard(out, FIELDS, batch, shard=3, first_row=30)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    again = write_shard(out, FIELDS, batch, shard=3, first_row=30)  # a retried task
    assert again == first
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(before) == sorted(
        f"shard-00003.{f}.{part}"
        for f, spec in FIELDS.items()
        for part in (("bin",) if spec.kind == "fixed" else ("bin", "idx"))
    )


def test_write_shard_names_shard_set_rows_in_errors(tmp_path: Path) -> None:
    out = start_shard_set(tmp_path / "s")
    batch = unit_rows(None, (0, 5))
    batch["x"][3, 0] = np.nan
    with pytest.raises(NonFiniteError) as err:
        write_shard(out, FIELDS, batch, shard=2, first_row=100)
    assert err.value.row == 103 and err.value.field == "x"
    assert "103" in str(err.value)
    assert not any(p.name.startswith("shard-") for p in out.iterdir())
    assert not any(out.iterdir())  # the temporary folder went too


def test_write_shard_refuses_bad_arguments(tmp_path: Path) -> None:
    out = start_shard_set(tmp_path / "s")
    with pytest.raises(ConfigError, match="no rows"):
        write_shard(out, FIELDS, unit_rows(None, (0, 0)), shard=0)
    with pytest.raises(ConfigError, match="shard must be"):
        write_shard(out, FIELDS, unit_rows(None, (0, 2)), shard=-1)
    with pytest.raises(ConfigError, match="first_row"):
        write_shard(out, FIELDS, unit_rows(None, (0, 2)), shard=0, first_row=-3)
    with pytest.raises(ConfigError, match="start_shard_set"):
        write_shard(tmp_path / "missing", FIELDS, unit_rows(None, (0, 2)), shard=0)


def test_manifest_refuses_missing_or_resized_shards_and_cleans_up(tmp_path: Path) -> None:
    out = start_shard_set(tmp_path / "s")
    e0 = write_shard(out, FIELDS, unit_rows(None, (0, 4)), shard=0)
    e1 = write_shard(out, FIELDS, unit_rows(None, (1, 4)), shard=1, first_row=4)
    with pytest.raises(ManifestError, match="not a file of shard 0"):
        write_manifest(out, FIELDS, [e1, e0])
    (out / "shard-00001.y.bin").write_bytes(b"short")
    with pytest.raises(ManifestError, match=r"shard-00001\.y\.bin"):
        write_manifest(out, FIELDS, [e0, e1])
    assert not (out / "manifest.json").exists()
    # an earlier, larger build and an interrupted write leave files that must go
    (out / "shard-00007.x.bin").write_bytes(b"old")
    (out / ".tmp-shard-00009-0123456789abcdef0123456789abcdef").mkdir()
    m = write_manifest(out, FIELDS, [e0])
    assert m["total_rows"] == 4
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json"] + [f["name"] for parts in e0["files"].values() for f in parts.values()]
    )
    # starting again removes the manifest before any shard is touched
    start_shard_set(out)
    assert not (out / "manifest.json").exists()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=8),
    shard_bytes=st.integers(1, 200),
)
def test_cutter_matches_shardwriter_cut(sizes: list[list[int]], shard_bytes: int) -> None:
    # ragged uint8 rows of length L count L + 8 bytes: compare the cut with the writer's
    spec = {"t": ragged("uint8")}
    cutter = ShardCutter(shard_bytes)
    plans = []
    for u, lens in enumerate(sizes):
        batch = {"t": [np.zeros(n, np.uint8) for n in lens]}
        plans += cutter.feed(u, row_bytes(spec, batch))
    last = cutter.finish()
    plans += [last] if last is not None else []
    assert [p.number for p in plans] == list(range(len(plans)))
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        with ShardWriter(d, spec, shard_bytes=shard_bytes) as w:
            for lens in sizes:
                w.write({"t": [np.zeros(n, np.uint8) for n in lens]})
        assert w.manifest is not None
        assert [p.rows for p in plans] == [s["rows"] for s in w.manifest["shards"]]
    first = 0
    for p in plans:
        assert p.first_row == first and sum(e - s for _, s, e in p.pieces) == p.rows
        first += p.rows


def test_row_bytes_and_bad_batches() -> None:
    spec = {"x": fixed("float64", (2, 3)), "t": ragged("uint32")}
    got = row_bytes(spec, {"x": np.zeros((2, 2, 3)), "t": [np.zeros(4, np.uint32), []]})
    assert got.tolist() == [48 + 4 * 4 + 8, 48 + 8]
    with pytest.raises(Exception, match="rows but the batch has"):
        row_bytes(spec, {"x": np.zeros((3, 2, 3)), "t": [[]]})
    with pytest.raises(ConfigError):
        ShardCutter(0)


def test_local_engine_equals_shardwriter(tmp_path: Path) -> None:
    sizes = [5, 30, 0, 12]
    ref = reference(tmp_path / "ref", sizes, 900)
    m = LocalEngine().write_units(
        tmp_path / "local", FIELDS, unit_rows, payloads(sizes), shard_bytes=900, provenance=PROV
    )
    assert m == ref and same_tree(tmp_path / "ref", tmp_path / "local") == []


def test_local_engine_reports_each_shard_as_soon_as_its_files_are_complete(
    tmp_path: Path,
) -> None:
    import hashlib

    seen: list[tuple[dict, bool, list[str]]] = []

    def on_shard(entry: dict) -> None:
        files = [f for parts in entry["files"].values() for f in parts.values()]
        whole = all(
            hashlib.sha256((tmp_path / f["name"]).read_bytes()).hexdigest() == f["sha256"]
            for f in files
        )
        later = sorted(p.name for p in tmp_path.iterdir())  # no manifest, no later shard yet
        seen.append((entry, whole, later))

    sizes = [13, 0, 40, 7, 25, 3, 31]
    engine = LocalEngine(threads=2)
    assert engine.reports_shards and not engine.uploads_shards
    with engine:
        m = engine.write_units(
            tmp_path, FIELDS, unit_rows, payloads(sizes), shard_bytes=400, on_shard=on_shard
        )
    assert [e for e, _, _ in seen] == m["shards"] and len(seen) > 3
    assert all(whole for _, whole, _ in seen)
    for k, (_, _, names) in enumerate(seen):
        assert "manifest.json" not in names
        assert max(int(n[6:11]) for n in names if n.startswith("shard-")) == k


def test_get_engine_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_engine("local").name == "local"
    assert get_engine(None).name == "local"
    engine = LocalEngine()
    assert get_engine(engine) is engine
    with pytest.raises(ConfigError, match="--engine must be one of local, ray"):
        get_engine("spark")
    with pytest.raises(ConfigError, match="add --engine ray"):
        get_engine("local", ray_address="10.0.0.1:6379")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'datafuel\[ray\]'"):
        get_engine("ray")


def test_packed_rows_round_trip_and_leave_bad_rows_to_the_writer(tmp_path: Path) -> None:
    batch = unit_rows(None, (3, 11))
    packed = pack_rows(FIELDS, batch)
    assert isinstance(packed["jpeg"], Packed) and isinstance(packed["tokens"], Packed)
    got = concat_rows(FIELDS, [packed, packed], [(2, 7), (0, 11)])
    want = concat_rows(FIELDS, [batch, batch], [(2, 7), (0, 11)])
    assert [bytes(b) for b in got["jpeg"]] == want["jpeg"]
    assert [t.tolist() for t in got["tokens"]] == [t.tolist() for t in want["tokens"]]
    np.testing.assert_array_equal(got["x"], want["x"])
    a = write_shard(start_shard_set(tmp_path / "a"), FIELDS, got, shard=0)
    b = write_shard(start_shard_set(tmp_path / "b"), FIELDS, want, shard=0)
    assert a == b
    # a row of the wrong dtype is not packed (nothing is cast): the writer refuses it
    batch["tokens"][4] = batch["tokens"][4].astype(np.int64)
    assert isinstance(pack_rows(FIELDS, batch)["tokens"], list)
    with pytest.raises(SchemaError, match="row 4"):
        write_shard(
            tmp_path / "a",
            FIELDS,
            concat_rows(FIELDS, [pack_rows(FIELDS, batch)], [(0, 11)]),
            shard=1,
        )


class FailsOn:
    """A unit function that raises on one payload (by index), after a short delay."""

    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __call__(self, shared: object, payload: tuple[int, int]) -> dict:
        if payload[0] == self.bad:
            raise SchemaError(f"unit {self.bad} is bad")
        return unit_rows(shared, payload)


@pytest.mark.parametrize("bad", [0, 3, 7])  # first, middle, last (raised while closing)
@pytest.mark.parametrize("threads", [1, 4])
def test_local_engine_failure_anywhere_leaves_no_manifest_and_no_open_file(
    tmp_path: Path, bad: int, threads: int
) -> None:
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        with (
            LocalEngine(threads=threads) as engine,
            pytest.raises(SchemaError, match=f"unit {bad}"),
        ):
            engine.write_units(tmp_path, FIELDS, FailsOn(bad), payloads([9] * 8), shard_bytes=300)
        gc.collect()
    assert not (tmp_path / "manifest.json").exists()
    assert [w for w in seen if issubclass(w.category, ResourceWarning)] == []


def test_local_engine_threads_write_the_bytes_of_one_thread(tmp_path: Path) -> None:
    sizes = [13, 0, 40, 7, 25, 3, 31, 18, 2, 60]
    for threads in (1, 2, 5):
        with LocalEngine(threads=threads) as engine:
            m = engine.write_units(
                tmp_path / str(threads), FIELDS, unit_rows, payloads(sizes), shard_bytes=400
            )
        assert m["total_rows"] == sum(sizes)
    assert same_tree(tmp_path / "1", tmp_path / "2") == []
    assert same_tree(tmp_path / "1", tmp_path / "5") == []
    assert list(LocalEngine(threads=3).map(lambda s, x: x * s, list(range(600)), shared=2)) == [
        2 * x for x in range(600)
    ]
    with pytest.raises(ConfigError, match="threads must be a positive int"):
        LocalEngine(threads=0)
