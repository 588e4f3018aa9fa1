"""``export_megatron``, read back by a reader written here from Megatron-LM's published layout.

The reader follows ``megatron/core/datasets/indexed_dataset.py`` (``_IndexReader``,
``_MMapBinReader``): it shares no code with the writer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from datafuel import build
from datafuel.demo import generate_documents
from datafuel.errors import ConfigError
from datafuel.loaders import ShardSet, ShardWriter, ragged
from datafuel.text import BPETokenizer, export_megatron

# Megatron's DType enum: code -> numpy dtype
CODES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}


def megatron_read(prefix: Path) -> tuple[list[np.ndarray], np.ndarray, dict[str, int]]:
    """(sequences, document indices, header) as Megatron's IndexedDataset reads them."""
    idx = (prefix.parent / (prefix.name + ".idx")).read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    (version,) = struct.unpack("<Q", idx[9:17])
    (code,) = struct.unpack("<B", idx[17:18])
    sequences, documents = struct.unpack("<QQ", idx[18:34])
    dtype = np.dtype(CODES[code])
    offset = 34
    lengths = np.frombuffer(idx, dtype=np.int32, count=sequences, offset=offset)
    offset += lengths.nbytes
    pointers = np.frombuffer(idx, dtype=np.int64, count=sequences, offset=offset)
    offset += pointers.nbytes
    doc_idx = np.frombuffer(idx, dtype=np.int64, count=documents, offset=offset)
    assert offset + doc_idx.nbytes == len(idx), "trailing bytes in the .idx"
    data = (prefix.parent / (prefix.name + ".bin")).read_bytes()
    seqs = [
        np.frombuffer(data, dtype=dtype, count=int(n), offset=int(p))
        for n, p in zip(lengths, pointers, strict=True)
    ]
    header = {"version": version, "code": code, "sequences": sequences, "documents": documents}
    return seqs, doc_idx, header


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("meg")
    docs = list(generate_documents(90, seed=8))
    (d / "c.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    build.text(
        [d / "c.jsonl"], d / "out", vocab_size=350, fractions=(1.0, 0.0, 0.0), shard_bytes=2500
    )
    return d / "out"


def test_read_back_equals_the_token_stream_and_document_boundaries(
    built: Path, tmp_path: Path
) -> None:
    ds = ShardSet(built / "train")
    assert ds.num_shards > 2  # documents come from several shards
    ts = ds.token_stream("tokens")
    n = export_megatron(ds, tmp_path / "train_text_document", chunk_tokens=333, chunk_documents=7)
    assert n == ts.num_tokens
    seqs, doc_idx, header = megatron_read(tmp_path / "train_text_document")
    assert header == {
        "version": 1,
        "code": 8,
        "sequences": ts.num_documents,
        "documents": ts.num_documents + 1,
    }
    np.testing.assert_array_equal(doc_idx, np.arange(ts.num_documents + 1))
    np.testing.assert_array_equal(np.concatenate(seqs), ts.read(0, ts.num_tokens))
    tok = BPETokenizer.load(built / "tokenizer.json")
    for i, s in enumerate(seqs):
        np.testing.assert_array_equal(s, ts.document(i))  # one sequence per document
        assert s[-1] == tok.eot_id and tok.eot_id not in s[:-1].tolist()
    assert (tmp_path / "train_text_document.bin").stat().st_size == 2 * n
    # the chunk sizes do not change a byte
    export_megatron(built / "train", tmp_path / "whole")
    for ext in (".bin", ".idx"):
        a = (tmp_path / f"train_text_document{ext}").read_bytes()
        assert a == (tmp_path / f"whole{ext}").read_bytes()


def test_uint32_tokens_are_written_as_int32(tmp_path: Path) -> None:
    rows = [
        np.array([70_000, 5, 0], np.uint32),
        np.array([0], np.uint32),
        np.array([2**31 - 1, 0], np.uint32),
    ]
    with ShardWriter(tmp_path / "s", {"tokens": ragged("uint32")}, shard_bytes=8) as w:
        w.write({"tokens": rows})
    export_megatron(tmp_path / "s", tmp_path / "m")
    seqs, doc_idx, header = megatron_read(tmp_path / "m")
    assert header["code"] == 4 and doc_idx.tolist() == [0, 1, 2, 3]
    assert [s.tolist() for s in seqs] == [r.tolist() for r in rows]


def test_an_empty_set_and_bad_prefixes(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "e", {"tokens": ragged("uint16")}) as w:
        w.write({"tokens": []})
    assert export_megatron(tmp_path / "e", tmp_path / "empty") == 0
    seqs, doc_idx, header = megatron_read(tmp_path / "empty")
    assert seqs == [] and doc_idx.tolist() == [0] and header["documents"] == 1
    with pytest.raises(ConfigError, match="prefix"):
        export_megatron(tmp_path / "e", tmp_path / "x.bin")
    with pytest.raises(ConfigError, match="chunk_tokens"):
        export_megatron(tmp_path / "e", tmp_path / "x", chunk_tokens=0)
