"""``build.text`` from Parquet, Arrow/Feather and HF ``save_to_disk`` inputs: the same shards as .jsonl."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from datafuel import build
from datafuel.demo import generate_documents
from datafuel.errors import InputDataError, SchemaError
from datafuel.loaders import ShardSet


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return [*generate_documents(120, seed=5), "", "  ", "naïve 漢字 🙂"]


def _parquet(docs: list[str], d: Path) -> list[Path]:
    pq.write_table(
        pa.table({"id": range(len(docs)), "text": docs}), d / "c.parquet", row_group_size=7
    )
    return [d / "c.parquet"]


def _parquet_dir(docs: list[str], d: Path) -> list[Path]:
    (d / "parts").mkdir()
    for k, lo in enumerate(range(0, len(docs), 50)):  # part-00000..2, read in sorted order
        pq.write_table(
            pa.table({"text": docs[lo : lo + 50]}), d / "parts" / f"part-{k:05d}.parquet"
        )
    return [d / "parts"]


def _feather(docs: list[str], d: Path) -> list[Path]:
    feather.write_feather(pa.table({"text": docs}), d / "c.feather", chunksize=16)
    return [d / "c.feather"]


def _arrow_stream(docs: list[str], d: Path) -> list[Path]:
    table = pa.table({"text": pa.array(docs, pa.large_string())})
    with pa.OSFile(str(d / "c.arrow"), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        w.write_table(table, max_chunksize=10)
    return [d / "c.arrow"]


def _hf(docs: list[str], d: Path) -> list[Path]:
    datasets = pytest.importorskip("datasets", reason="the 'hf' extra (datasets) is not installed")
    datasets.Dataset.from_dict({"text": docs, "n": list(range(len(docs)))}).save_to_disk(
        str(d / "ds"),
        max_shard_size="8KB",  # several data-*.arrow files
    )
    return [d / "ds"]


SOURCES: dict[str, Callable[[list[str], Path], list[Path]]] = {
    "parquet": _parquet,
    "parquet-directory": _parquet_dir,
    "feather": _feather,
    "arrow-stream": _arrow_stream,
    "hf-save-to-disk": _hf,
}


def shard_bytes(out: Path) -> dict[str, bytes]:
    """Every file a build wrote that does not name its inputs: shards, tokenizer, split record."""
    files = {"tokenizer.json": (out / "tokenizer.json").read_bytes()}
    for name in ("train", "val", "test"):
        for p in sorted((out / name).iterdir()):
            if p.name != "manifest.json":
                files[f"{name}/{p.name}"] = p.read_bytes()
        m = json.loads((out / name / "manifest.json").read_text())
        files[f"{name}/manifest.shards"] = json.dumps([m["shards"], m["metadata"]]).encode()
    files["split.json"] = (out / "split.json").read_bytes()
    return files


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_table_inputs_build_the_same_shards_as_jsonl(
    tmp_path: Path, docs: list[str], kind: str
) -> None:
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    ref = build.text([src], tmp_path / "ref", vocab_size=400, seed=3, shard_bytes=3000)
    inputs = SOURCES[kind](docs, tmp_path)
    got = build.text(inputs, tmp_path / "got", vocab_size=400, seed=3, shard_bytes=3000)
    assert got["counts"] == ref["counts"] and got["tokens"] == ref["tokens"]
    assert got["tokenizer_sha256"] == ref["tokenizer_sha256"]
    assert got["corpus"]["documents"] == len(docs) - 2 and got["corpus"]["empty"] == 2
    a, b = shard_bytes(tmp_path / "ref"), shard_bytes(tmp_path / "got")
    assert sorted(a) == sorted(b) and len(a) > 8
    for name in a:
        assert a[name] == b[name], name
    assert ShardSet(tmp_path / "got" / "train", verify=True).num_shards > 1


def test_a_rewritten_saved_dataset_is_built_again(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the 'hf' extra (datasets) is not installed")
    docs = list(generate_documents(40, seed=1))
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "ds"))
    first = build.text([tmp_path / "ds"], tmp_path / "out", vocab_size=300)
    assert build.text([tmp_path / "ds"], tmp_path / "out", vocab_size=300)["resumed"] is True
    datasets.Dataset.from_dict({"text": docs[:30]}).save_to_disk(str(tmp_path / "ds2"))
    for p in (tmp_path / "ds2").iterdir():  # same directory, new contents
        p.replace(tmp_path / "ds" / p.name)
    again = build.text([tmp_path / "ds"], tmp_path / "out", vocab_size=300)
    assert again["resumed"] is False
    assert sum(again["counts"].values()) == 30 < sum(first["counts"].values())


def test_bad_text_fields_are_refused_naming_file_and_row(tmp_path: Path) -> None:
    pq.write_table(pa.table({"body": ["a b c"] * 5}), tmp_path / "nofield.parquet")
    with pytest.raises(SchemaError, match=r"nofield\.parquet: row 0 .*no 'text' column"):
        build.text([tmp_path / "nofield.parquet"], tmp_path / "o", vocab_size=300)
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "ints.parquet")
    with pytest.raises(SchemaError, match=r"ints\.parquet: row 0 .*must be a string, got int64"):
        build.text([tmp_path / "ints.parquet"], tmp_path / "o", vocab_size=300)
    pq.write_table(pa.table({"text": ["a b", None, "c"]}), tmp_path / "nulls.parquet")
    with pytest.raises(InputDataError, match=r"nulls\.parquet: row 1 \(0-based\).*null") as e:
        build.text([tmp_path / "nulls.parquet"], tmp_path / "o", vocab_size=300)
    assert e.value.row == 1 and e.value.field == "text"
    assert not (tmp_path / "o" / "train" / "manifest.json").exists()
    s = build.text(
        [tmp_path / "nofield.parquet"], tmp_path / "o", vocab_size=300, text_field="body"
    )
    assert sum(s["counts"].values()) == 5
