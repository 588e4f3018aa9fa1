"""Hostile shard sets: links out of the directory, overflowing sizes, malformed manifests.

Every case must end in a DatafuelError naming the file or the manifest key, never a raw
TypeError/ValueError/KeyError/RecursionError, and never a read outside the directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from json_paths import json_paths, json_values

from datafuel.errors import CorruptShardError, DatafuelError, ManifestError, SchemaError
from datafuel.loaders import ShardSet, ShardWriter, bytes_field, fixed, ragged

FIELDS = {"x": fixed("float32", (3,)), "jpeg": bytes_field(), "tokens": ragged("uint16")}


def write_set(d: Path, n: int = 20) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    with ShardWriter(d, FIELDS, shard_bytes=200) as w:
        w.write(
            {
                "x": rng.normal(size=(n, 3)).astype(np.float32),
                "jpeg": [rng.bytes(int(k)) for k in rng.integers(0, 9, size=n)],
                "tokens": [np.arange(int(k), dtype=np.uint16) for k in rng.integers(0, 7, size=n)],
            }
        )
    assert w.manifest is not None
    return w.manifest


def load(d: Path) -> dict[str, Any]:
    return json.loads((d / "manifest.json").read_text())


def save(d: Path, m: Any) -> None:
    (d / "manifest.json").write_text(json.dumps(m))


# -- 1. links and non-regular files ---------------------------------------------------------
def forge_link(d: Path, name: str, target: Path) -> None:
    """Replace ``name`` by a link to ``target`` and forge the manifest to match it."""
    (d / name).unlink()
    (d / name).symlink_to(target)
    data = target.read_bytes()
    m = load(d)
    for shard in m["shards"]:
        for parts in shard["files"].values():
            for f in parts.values():
                if f["name"] == name:
                    f["bytes"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    m["total_bytes"] = sum(
        f["bytes"] for s in m["shards"] for p in s["files"].values() for f in p.values()
    )
    save(d, m)


@pytest.mark.parametrize("verify", [False, True])
def test_symlink_to_etc_passwd_with_forged_sha256_is_refused(tmp_path: Path, verify: bool) -> None:
    d = tmp_path / "set"
    write_set(d)
    # a bytes field's bin may hold any size: only the link itself can be refused
    forge_link(d, "shard-00000.jpeg.bin", Path("/etc/passwd"))
    with pytest.raises(CorruptShardError, match=r"shard-00000\.jpeg\.bin: is a symbolic link"):
        ShardSet(d, verify=verify)


def test_symlink_to_a_file_inside_the_set_is_refused_too(tmp_path: Path) -> None:
    d = tmp_path / "set"
    write_set(d)
    shutil.copy(d / "shard-00000.x.bin", d / "copy.bin")
    forge_link(d, "shard-00000.x.bin", d / "copy.bin")
    with pytest.raises(CorruptShardError, match=r"shard-00000\.x\.bin.*symbolic link") as info:
        ShardSet(d, verify=True)
    assert info.value.path == str(d / "shard-00000.x.bin") and info.value.field == "x"


def test_symlinked_manifest_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "set"
    write_set(d)
    (d / "manifest.json").rename(tmp_path / "elsewhere.json")
    (d / "manifest.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ManifestError, match=r"manifest\.json.*symbolic link"):
        ShardSet(d)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_shard_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    d = tmp_path / "set"
    write_set(d)
    victim = d / "shard-00000.x.bin"
    victim.unlink()
    if kind == "directory":
        victim.mkdir()
    else:
        os.mkfifo(victim)  # a FIFO must not hang the open
    with pytest.raises(CorruptShardError, match=r"shard-00000\.x\.bin: .*not a regular file"):
        ShardSet(d)


def test_a_file_swapped_for_a_link_after_opening_is_refused_when_mapped(tmp_path: Path) -> None:
    d = tmp_path / "set"
    write_set(d)
    ds = ShardSet(d)  # sizes checked; data files of fixed fields are mapped on first use
    shutil.copy(d / "shard-00001.x.bin", tmp_path / "same.bin")
    (d / "shard-00001.x.bin").unlink()
    (d / "shard-00001.x.bin").symlink_to(tmp_path / "same.bin")
    with pytest.raises(CorruptShardError, match="symbolic link"):
        ds.gather(np.arange(len(ds)), fields=["x"])


def test_a_link_directory_to_the_shard_set_is_fine(tmp_path: Path) -> None:
    write_set(tmp_path / "set")
    (tmp_path / "alias").symlink_to(tmp_path / "set")  # the set itself may be reached by a link
    assert len(ShardSet(tmp_path / "alias", verify=True)) == 20


# -- 2. sizes whose products overflow int64 --------------------------------------------------
def _edit(d: Path, path: list[Any], value: Any) -> None:
    m = load(d)
    obj = m
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value
    save(d, m)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (["shards", 0, "rows"], 2**62, r"shards\[0\]\.rows .*overflow"),
        (
            ["shards", 0, "rows"],
            2**63,
            r"shards\[0\]\.rows must be an integer in \[0, 2\*\*63 - 1\]",
        ),
        (["shards", 0, "rows"], 2**64 + 3, r"shards\[0\]\.rows must be an integer"),
        (["fields", "x", "shape"], [2**40, 2**40], r"fields\.x.*more than 2\*\*63 - 1"),
        (["fields", "x", "shape"], [2**64], r"fields\.x\.shape must be a list of integers"),
        (["fields", "x", "shape"], [0, 2**62], r"fields\.x.*zero dimensions counted as 1"),
        (["fields", "x", "shape"], [1] * 40, r"fields\.x.*at most 31 dimensions"),
        (["shards", 0, "files", "x", "bin", "bytes"], 2**63, r"shards\[0\]\.files\.x\.bin\.bytes"),
        (["shards", 0, "files", "jpeg", "idx", "bytes"], 2**66, r"jpeg\.idx\.bytes"),
        (["total_rows"], 2**64, "total_rows"),
    ],
)
def test_overflowing_sizes_are_refused_naming_the_key(
    tmp_path: Path, path: list[Any], value: Any, match: str
) -> None:
    write_set(tmp_path)
    _edit(tmp_path, path, value)
    with pytest.raises(ManifestError, match=match) as info:
        ShardSet(tmp_path)
    assert "manifest.json" in str(info.value)


def test_huge_rows_of_a_zero_size_field_do_not_reach_numpy(tmp_path: Path) -> None:
    # rows x 0 bytes = 0 bytes matches an empty file; numpy would still refuse the shape
    with ShardWriter(tmp_path, {"e": fixed("uint8", (0, 2**20))}) as w:
        w.write({"e": np.zeros((3, 0, 2**20), np.uint8)})
    assert ShardSet(tmp_path).gather([0, 2])["e"].shape == (2, 0, 2**20)
    _edit(tmp_path, ["shards", 0, "rows"], 2**50)
    _edit(tmp_path, ["total_rows"], 2**50)
    with pytest.raises(ManifestError, match=r"shards\[0\]\.rows = 1125899906842624 .*overflow"):
        ShardSet(tmp_path)


def test_two_shards_whose_rows_sum_past_int64_are_refused(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, {"e": fixed("uint8", (0,))}, shard_bytes=1) as w:
        w.write({"e": np.zeros((2, 0), np.uint8)})
    m = load(tmp_path)
    assert len(m["shards"]) == 1  # zero-byte rows never reach shard_bytes
    m["shards"].append(copy.deepcopy(m["shards"][0]))
    m["shards"][0]["rows"] = m["shards"][1]["rows"] = 2**62 + 1
    m["total_rows"] = 2**63 + 2
    save(tmp_path, m)
    with pytest.raises(ManifestError, match="the shards hold 9223372036854775810 rows"):
        ShardSet(tmp_path)


def test_writer_refuses_a_shape_that_overflows() -> None:
    with pytest.raises(SchemaError, match="more than 2\\*\\*63 - 1"):
        fixed("float64", (2**31, 2**31))


# -- 3. wrong JSON types and shapes ----------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        (["fields", "x", "shape"], None, r"fields\.x\.shape must be a list"),
        (["fields", "x", "shape"], "3", r"fields\.x\.shape must be a list"),
        (["fields", "x", "shape"], {"a": 1}, r"fields\.x\.shape must be a list"),
        (["fields", "x", "shape"], [True, 3], r"fields\.x\.shape must be a list of integers"),
        (["fields", "x", "shape"], [3.0], r"fields\.x\.shape must be a list of integers"),
        (["fields", "x", "shape"], [-3], r"fields\.x\.shape must be a list of integers"),
        (["fields", "x", "kind"], ["fixed"], r"fields\.x\.kind must be a string"),
        (["fields", "x", "dtype"], {"a": 1}, r"fields\.x\.dtype must be a string"),
        (["fields", "x", "dtype"], "object", r"fields\.x.*dtype must be one of"),
        (["fields", "x"], ["fixed", "float32"], r"fields\.x must be an object"),
        (["fields"], [], "'fields' must be a non-empty object"),
        (["shards"], {"0": {}}, "'shards' must be a list"),
        (["shards", 0], [1, 2], r"shards\[0\] must be an object"),
        (["shards", 0, "rows"], "4", r"shards\[0\]\.rows must be an integer"),
        (["shards", 0, "rows"], True, r"shards\[0\]\.rows must be an integer"),
        (["shards", 0, "rows"], -1, r"shards\[0\]\.rows must be an integer"),
        (["shards", 0, "rows"], 4.0, r"shards\[0\]\.rows must be an integer"),
        (["shards", 0, "rows"], None, r"shards\[0\]\.rows must be an integer"),
        (["shards", 0, "files"], [], r"shards\[0\]\.files must list files"),
        (["shards", 0, "files", "x"], ["bin"], r"shards\[0\]\.files\.x must list"),
        (
            ["shards", 0, "files", "x", "bin"],
            "shard-00000.x.bin",
            r"files\.x\.bin must be an object",
        ),
        (["shards", 0, "files", "x", "bin", "bytes"], "12", r"files\.x\.bin\.bytes must be an int"),
        (
            ["shards", 0, "files", "x", "bin", "bytes"],
            False,
            r"files\.x\.bin\.bytes must be an int",
        ),
        (["shards", 0, "files", "x", "bin", "bytes"], -12, r"files\.x\.bin\.bytes must be an int"),
        (["shards", 0, "files", "x", "bin", "bytes"], 13, r"files\.x\.bin\.bytes is 13 but"),
        (["shards", 0, "files", "jpeg", "idx", "bytes"], 16, r"jpeg: idx\.bytes must be 8"),
        (["shards", 0, "files", "tokens", "bin", "bytes"], 7, r"bin\.bytes a multiple of 2"),
        (["shards", 0, "files", "x", "bin", "sha256"], 5, r"files\.x\.bin\.sha256 must be 64"),
        (["shards", 0, "files", "x", "bin", "name"], None, "not a plain file name"),
        (["shards", 0, "files", "x", "bin", "name"], "a\n", "not a plain file name"),
        (["shards", 0, "files", "x", "bin", "name"], "x" * 5000, "x.bin|cannot be opened"),
        (["total_rows"], "20", "total_rows is '20'"),
        (["total_rows"], 20.0, "total_rows is 20.0"),
        (["total_bytes"], None, "total_bytes is None"),
        (["metadata"], [1], "metadata must be an object"),
        (["provenance"], "x", "provenance must be an object"),
        (["version"], True, "unknown format version True"),
        (["version"], 1.0, "unknown format version 1.0"),
    ],
)
def test_wrong_json_types_give_manifest_error_naming_the_key(
    tmp_path: Path, path: list[Any], value: Any, match: str
) -> None:
    write_set(tmp_path)
    _edit(tmp_path, path, value)
    with pytest.raises((ManifestError, CorruptShardError), match=match) as info:
        ShardSet(tmp_path)
    assert "manifest.json" in str(info.value) or "x" * 5000 in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"format": "datafuel-shards", "version": 1, "metadata": '
        + "[" * 10_000
        + "]" * 10_000
        + "}",
        '{"a": ' + "1" * 5000 + "}",  # an int longer than Python parses
        "[1, 2]",
        '"datafuel-shards"',
        "null",
        "\xff\xfe",
        "",
    ],
)
def test_deeply_nested_or_non_object_json_is_refused(tmp_path: Path, text: str) -> None:
    write_set(tmp_path)
    (tmp_path / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ManifestError, match=r"manifest\.json"):
        ShardSet(tmp_path)


@pytest.mark.parametrize("name", ["a.b", "-x", "a b", "é", "x" * 65, "a\n", ""])
def test_field_names_outside_the_format_pattern_are_refused_by_reader_and_writer(
    tmp_path: Path, name: str
) -> None:
    write_set(tmp_path)
    m = load(tmp_path)
    m["fields"][name] = m["fields"].pop("x")
    for shard in m["shards"]:
        shard["files"][name] = shard["files"].pop("x")
    save(tmp_path, m)
    with pytest.raises(
        ManifestError, match=r"manifest\.json: fields: field name .* does not match"
    ):
        ShardSet(tmp_path)
    with pytest.raises(SchemaError, match="field names"):
        ShardWriter(tmp_path / "w", {name: fixed("float32")})


def test_the_longest_allowed_field_name_round_trips(tmp_path: Path) -> None:
    name = "_" + "a-9" * 21
    assert len(name) == 64
    with ShardWriter(tmp_path, {name: fixed("int8")}) as w:
        w.write({name: np.arange(3, dtype=np.int8)})
    assert ShardSet(tmp_path, verify=True).gather([2])[name].tolist() == [2]


# -- 4. property: random mutations of a valid manifest ----------------------------------------
JSON_VALUES = json_values(
    0, 1, 2**31, 2**62, 2**63 - 1, 2**63, 2**64, -1,
    "shard-00000.x.bin", "shard-00001.jpeg.idx", "manifest.json", "../x",
)  # fmt: skip


@st.composite
def mutations(draw: st.DrawFn, base: dict[str, Any]) -> bytes:
    m = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(m)
        where = draw(st.sampled_from(paths[1:])) if len(paths) > 1 else ()
        parent: Any = m
        for key in where[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["delete", "replace", "nest", "rename", "add"]))
        if not where or action == "add":
            if isinstance(parent, dict):
                parent[draw(st.text(max_size=6))] = draw(JSON_VALUES)
            continue
        key = where[-1]
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(JSON_VALUES)
        elif action == "nest":
            parent[key] = [parent[key]] if draw(st.booleans()) else {"v": parent[key]}
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = parent.pop(key)
    text = json.dumps(m).encode()
    if draw(st.integers(0, 9)) == 0:
        text = text[: draw(st.integers(0, len(text)))]  # truncated JSON
    return text


BASE: dict[str, Any] = {}


def _base(tmp: Path) -> dict[str, Any]:
    if not BASE:
        BASE.update(write_set(tmp / "base", n=12))
    return BASE


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hostile")
    _base(d)
    return d / "base"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_manifest_mutations_raise_only_datafuel_errors(base_dir: Path, data: Any) -> None:
    # drawn from the in-memory manifest, never from the file: the file is rewritten by each
    # example (the writer's key order is not json.dumps' of BASE), and a strategy that
    # read it would generate differently on a replay (FlakyStrategyDefinition)
    text = data.draw(mutations(json.loads(json.dumps(BASE))))
    (base_dir / "manifest.json").write_bytes(text)
    try:
        for verify in (False, True):
            try:
                ds = ShardSet(base_dir, verify=verify)
                if len(ds):
                    ds.gather(np.arange(len(ds)))
                    ds.gather([len(ds) - 1, 0])
                    next(iter(ds.iter_batches(5)))
                _ = (repr(ds), ds.metadata, ds.provenance, ds.nbytes)
                if "tokens" in ds.fields:
                    ds.token_stream("tokens").read(0, 0)
            except DatafuelError:
                pass
    finally:
        save(base_dir, BASE)
