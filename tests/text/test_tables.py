"""Documents from Parquet, Arrow IPC / Feather and HF ``save_to_disk`` inputs (``_tables``)."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from datafuel.errors import ConfigError, DatafuelError, InputDataError, SchemaError
from datafuel.text import Corpus

TEXTS = [
    "plain ascii",
    "two\nlines\n",
    "",  # empty: skipped and counted, as in .jsonl
    "   \t ",
    "unicode: é ß 漢字 🙂 \ufffd",
    '{"looks": "like json"}',
]


def hf_save(table: pa.Table, d: Path) -> Path:
    datasets = pytest.importorskip("datasets", reason="the 'hf' extra (datasets) is not installed")
    datasets.Dataset(table).save_to_disk(str(d))
    return d


def write_parquet(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=2)  # several row groups
    return path


def write_feather(table: pa.Table, path: Path) -> Path:
    feather.write_feather(table, path, chunksize=3)  # several record batches
    return path


def write_arrow_stream(table: pa.Table, path: Path) -> Path:
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as w:
        for batch in table.to_batches(max_chunksize=4):
            w.write_batch(batch)
    return path


WRITERS: dict[str, Callable[[pa.Table, Path], Path]] = {
    "parquet": lambda t, d: write_parquet(t, d / "c.parquet"),
    "feather": lambda t, d: write_feather(t, d / "c.feather"),
    "arrow-stream": lambda t, d: write_arrow_stream(t, d / "c.arrow"),
    "hf-save-to-disk": lambda t, d: hf_save(t, d / "ds"),
}


def write_jsonl(texts: list[str], path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_table_reads_the_same_documents_as_jsonl(tmp_path: Path, kind: str) -> None:
    table = pa.table({"id": list(range(len(TEXTS))), "text": TEXTS})
    src = WRITERS[kind](table, tmp_path)
    jsonl = Corpus([write_jsonl(TEXTS, tmp_path / "c.jsonl")])
    c = Corpus([src])
    assert list(c) == list(jsonl) == [t for t in TEXTS if t.strip()]
    assert (c.stats.documents, c.stats.empty, c.stats.files) == (4, 2, 1)
    assert c.stats.bytes == sum(len(t.encode()) for t in TEXTS)
    assert list(c) == list(c)  # re-iterable


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_other_text_field_and_large_and_dictionary_strings(tmp_path: Path, kind: str) -> None:
    table = pa.table(
        {
            "text": pa.array([1, 2, 3]),
            "body": pa.array(["a", "b", "a"], pa.large_string()),
            "tag": pa.array(["x", "y", "x"]).dictionary_encode(),
        }
    )
    src = WRITERS[kind](table, tmp_path)
    assert list(Corpus([src], text_field="body")) == ["a", "b", "a"]
    assert list(Corpus([src], text_field="tag")) == ["x", "y", "x"]


def test_a_directory_of_parquet_files_is_read_in_sorted_order(tmp_path: Path) -> None:
    root = tmp_path / "dump"
    (root / "lang=en").mkdir(parents=True)
    (root / "lang=fr").mkdir()
    for i, d in enumerate(["lang=en", "lang=en", "lang=fr"]):
        texts = [f"file {i} doc {k}" for k in range(5)]
        write_parquet(pa.table({"text": texts}), root / d / f"part-{i:05d}.parquet")
    (root / "_SUCCESS").write_text("")
    (root / "lang=en" / ".part-00000.parquet.crc").write_bytes(b"\0\1")
    c = Corpus([root])
    assert list(c) == [f"file {i} doc {k}" for i in range(3) for k in range(5)]
    assert c.stats.files == 3 and c.stats.ignored_files == 2
    mixed = Corpus([root, write_jsonl(["last"], tmp_path / "z.jsonl")])
    assert list(mixed)[-1] == "last" and mixed.stats.documents == 16


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_missing_text_column_names_the_file_the_row_and_the_field(
    tmp_path: Path, kind: str
) -> None:
    src = WRITERS[kind](pa.table({"body": ["a", "b"]}), tmp_path)
    with pytest.raises(SchemaError, match=r"row 0 .*no 'text' column.*\['body'\]") as e:
        list(Corpus([src]))
    assert e.value.path == str(src) and e.value.row == 0 and e.value.field == "text"
    assert str(src) in str(e.value) and "--text-field" in str(e.value)


@pytest.mark.parametrize("kind", sorted(WRITERS))
@pytest.mark.parametrize(
    "column",
    [pa.array([1, 2]), pa.array([b"a", b"b"]), pa.array([["a"], ["b"]]), pa.array([1.5, 2.0])],
    ids=["int64", "binary", "list", "double"],
)
def test_a_non_string_text_column_is_refused(tmp_path: Path, kind: str, column: pa.Array) -> None:
    src = WRITERS[kind](pa.table({"text": column}), tmp_path)
    got = str(column.type).split("<")[0]  # Parquet names a list's item "element"
    with pytest.raises(SchemaError, match=rf"row 0 .*'text' must be a string, got {got}"):
        list(Corpus([src]))


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_null_is_refused_naming_its_row_across_batches(tmp_path: Path, kind: str) -> None:
    texts: list[str | None] = [f"doc {i}" for i in range(3000)]
    texts[2500] = None  # past the reader's first batches of 1024 rows
    src = WRITERS[kind](pa.table({"text": texts}), tmp_path)
    seen: list[str] = []
    with pytest.raises(InputDataError, match=r"row 2500 \(0-based\): field 'text' is null") as e:
        for t in Corpus([src]):
            seen.append(t)
    assert e.value.row == 2500 and e.value.field == "text" and e.value.path == str(src)
    assert seen == [f"doc {i}" for i in range(len(seen))] and len(seen) <= 2500
    (tmp_path / "n").mkdir()
    all_null = WRITERS[kind](pa.table({"text": pa.nulls(2)}), tmp_path / "n")
    with pytest.raises(InputDataError, match="row 0 .*null"):
        list(Corpus([all_null]))


def test_invalid_utf8_in_a_string_column_is_replaced_and_counted(tmp_path: Path) -> None:
    data = b"ok\xffgood"  # Arrow does not check UTF-8 when built from buffers
    arr = pa.Array.from_buffers(
        pa.string(),
        2,
        [None, pa.py_buffer(pa.array([0, 3, 7], pa.int32()).buffers()[1]), pa.py_buffer(data)],
    )
    src = write_arrow_stream(pa.table({"text": arr}), tmp_path / "bad.arrow")
    c = Corpus([src])
    assert list(c) == ["ok\ufffd", "good"] and c.stats.replaced == 1


def test_parquet_streams_batch_by_batch(tmp_path: Path) -> None:
    texts = [f"{i:06d} " + "x" * 500 for i in range(40_000)]  # ~20 MB of text
    src = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": texts, "other": texts}), src, row_group_size=2000)
    del texts
    it = iter(Corpus([src]))
    assert next(it).startswith("000000 ")
    # the first row group's text column is decoded, not the file (~40 MB decoded)
    assert pa.total_allocated_bytes() < 8 << 20
    assert sum(1 for _ in it) == 39_999


def test_unreadable_tables_name_the_file(tmp_path: Path) -> None:
    src = write_parquet(
        pa.table({"text": [f"d{i}" * 50 for i in range(100)]}), tmp_path / "t.parquet"
    )
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(src.read_bytes()[:200])
    not_arrow = tmp_path / "x.arrow"
    not_arrow.write_bytes(b"this is not arrow at all")
    v1 = tmp_path / "v1.feather"
    with warnings.catch_warnings():  # pyarrow deprecates writing Feather v1; we refuse it
        warnings.simplefilter("ignore", DeprecationWarning)
        feather.write_feather(pa.table({"text": ["a"]}), v1, version=1)
    for f in (cut, not_arrow, v1):
        with pytest.raises(InputDataError, match="cannot read as") as e:
            list(Corpus([f]))
        assert e.value.path == str(f) and str(f) in str(e.value)


def test_a_dataset_dict_is_refused_naming_its_splits(tmp_path: Path) -> None:
    d = tmp_path / "dd"
    d.mkdir()
    (d / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    with pytest.raises(ConfigError, match=r"DatasetDict.*dd/train, .*dd/test"):
        Corpus([d])


def test_a_saved_dataset_without_datasets_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    (d / "state.json").write_text("{}")
    (d / "dataset_info.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ConfigError, match=r"datafuel\[hf\]") as e:
        list(Corpus([d]))
    assert isinstance(e.value, DatafuelError) and e.value.path == str(d)


def test_a_saved_dataset_keeps_its_saved_order_and_selection(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the 'hf' extra (datasets) is not installed")
    ds = datasets.Dataset.from_dict({"text": [f"doc {i}" for i in range(50)], "n": list(range(50))})
    picked = ds.shuffle(seed=3).select(range(20))  # an indices mapping, flattened on save
    picked.save_to_disk(str(tmp_path / "ds"))
    c = Corpus([tmp_path / "ds"])
    assert list(c) == picked["text"]
    assert {Path(p).name for p, _, _ in c.file_stats()} >= {"state.json", "dataset_info.json"}


def test_a_saved_dataset_met_in_a_walk_is_read_as_a_dataset(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets", reason="the 'hf' extra (datasets) is not installed")
    root = tmp_path / "corpora"
    datasets.Dataset.from_dict({"text": ["hf one", "hf two"]}).save_to_disk(str(root / "b-hf"))
    write_arrow_stream(pa.table({"text": ["stale cache row"]}), root / "b-hf" / "cache-1234.arrow")
    write_parquet(pa.table({"text": ["pq one"]}), root / "a.parquet")
    c = Corpus([root])
    assert list(c) == ["pq one", "hf one", "hf two"]  # the dataset's cache file is not a row
    assert c.stats.files == 2
