from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from datafuel import build
from datafuel.demo import generate_documents
from datafuel.errors import ConfigError, InputDataError, TokenizerError
from datafuel.loaders import ShardSet
from datafuel.text import (
    BPETokenizer,
    assign_split,
    encode_documents,
    export_bin,
    read_bin,
    train_bpe,
)


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return list(generate_documents(160, seed=11))


def test_rows_are_documents_with_eot_and_splits_partition_the_corpus(
    tmp_path: Path, docs: list[str]
) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", docs)
    s = build.text([src], tmp_path / "out", vocab_size=400, seed=7, shard_bytes=4096)
    tok = BPETokenizer.load(tmp_path / "out" / "tokenizer.json")
    assert s["tokenizer_sha256"] == tok.fingerprint
    seen: list[str] = []
    for name in ("train", "val", "test"):
        ds = ShardSet(tmp_path / "out" / name, verify=True)
        assert ds.metadata["vocab_size"] == tok.vocab_size and ds.metadata["eot_id"] == tok.eot_id
        assert (
            ds.provenance["tokenizer_sha256"] == tok.fingerprint and ds.provenance["split"] == name
        )
        ts = ds.token_stream("tokens")
        assert ts.dtype == np.uint16
        for i in range(ts.num_documents):
            row = ts.document(i)
            assert row[-1] == tok.eot_id and tok.eot_id not in row[:-1].tolist()
            text = tok.decode(row[:-1])
            assert assign_split(text, (0.8, 0.1, 0.1), seed=7) == name
            seen.append(text)
        assert s["counts"][name] == ts.num_documents
        assert s["tokens"][name] == ts.num_tokens
    # every document exactly once, in corpus order within a split, never cut
    assert sorted(seen) == sorted(docs)
    assert ShardSet(tmp_path / "out" / "train").num_shards > 1
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert record["method"] == "hash" and record["total"] == len(docs)
    assert record["counts"]["train"] > record["counts"]["val"] > 0


def test_tokenizer_is_fitted_on_train_documents_only(tmp_path: Path, docs: list[str]) -> None:
    secret = "zqxjv" * 8
    fr = (0.7, 0.15, 0.15)
    leak_docs, k = [], 0
    while (
        len(leak_docs) < 40
    ):  # documents the hash sends to test, full of a string seen nowhere else
        d = f"{secret} {secret} record {k} {secret}"
        k += 1
        if assign_split(d, fr, seed=1) == "test":
            leak_docs.append(d)
    src = write_jsonl(tmp_path / "c.jsonl", docs + leak_docs)
    build.text([src], tmp_path / "out", vocab_size=600, fractions=fr, seed=1)
    tok = BPETokenizer.load(tmp_path / "out" / "tokenizer.json")
    # byte-level fallback only: not one merge learned from the test-only string
    assert len(tok.encode(secret)) == len(secret)
    # control: the same documents in train do create merges
    leaky = train_bpe(docs + leak_docs, vocab_size=600)
    assert len(leaky.encode(secret)) < len(secret) // 2
    test = ShardSet(tmp_path / "out" / "test").token_stream("tokens")
    texts = [tok.decode(test.document(i)[:-1]) for i in range(test.num_documents)]
    assert set(leak_docs) <= set(texts)


def test_given_tokenizer_is_used_and_copied(tmp_path: Path, docs: list[str]) -> None:
    tok = train_bpe(docs, vocab_size=350)
    tok.save(tmp_path / "mine.json")
    src = write_jsonl(tmp_path / "c.jsonl", docs[:30])
    s = build.text(
        [src], tmp_path / "out", tokenizer=tmp_path / "mine.json", fractions=(1.0, 0.0, 0.0)
    )
    assert s["tokenizer_trained"] is False and s["tokenizer_sha256"] == tok.fingerprint
    assert (tmp_path / "out" / "tokenizer.json").read_bytes() == (
        tmp_path / "mine.json"
    ).read_bytes()
    assert not (tmp_path / "out" / "val").exists()
    ts = ShardSet(tmp_path / "out" / "train").token_stream("tokens")
    np.testing.assert_array_equal(ts.document(0), tok.encode(docs[0], append_eot=True))


def test_rerun_is_a_no_op_and_same_bytes(tmp_path: Path, docs: list[str]) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", docs[:50])
    a = build.text([src], tmp_path / "out", vocab_size=300)
    m1 = (tmp_path / "out" / "train" / "manifest.json").read_bytes()
    b = build.text([src], tmp_path / "out", vocab_size=300)
    assert not a["resumed"] and b["resumed"]
    assert (tmp_path / "out" / "train" / "manifest.json").read_bytes() == m1
    # an interrupted build (no manifest) is rebuilt to the same bytes
    (tmp_path / "out" / "val" / "manifest.json").unlink()
    c = build.text([src], tmp_path / "out", vocab_size=300)
    assert not c["resumed"] and (tmp_path / "out" / "train" / "manifest.json").read_bytes() == m1


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="not found"):
        build.text([tmp_path / "missing.jsonl"], tmp_path / "o", vocab_size=300)
    empty = write_jsonl(tmp_path / "empty.jsonl", ["", "   "])
    with pytest.raises(InputDataError, match="no non-empty documents"):
        build.text([empty], tmp_path / "o", vocab_size=300)
    (tmp_path / "d").mkdir()
    with pytest.raises(InputDataError, match="no .txt, .jsonl, .parquet"):
        build.text([tmp_path / "d"], tmp_path / "o", vocab_size=300)
    ok = write_jsonl(tmp_path / "ok.jsonl", ["a b c"] * 5)
    with pytest.raises(ConfigError, match="vocab_size"):
        build.text([ok], tmp_path / "o", vocab_size=10)
    with pytest.raises(ConfigError, match="not both"):
        build.text([ok], tmp_path / "o", vocab_size=300, tokenizer=tmp_path / "t.json")
    with pytest.raises(ConfigError, match="sum to 1"):
        build.text([ok], tmp_path / "o", vocab_size=300, fractions=(0.5, 0.1, 0.1))
    (tmp_path / "bad.json").write_text("nope")
    with pytest.raises(TokenizerError, match="bad.json"):
        build.text([ok], tmp_path / "o", tokenizer=tmp_path / "bad.json")


def test_encode_documents_streams_and_keeps_order(docs: list[str]) -> None:
    tok = train_bpe(docs[:40], vocab_size=300)
    endless = ((i, f"document number {i}") for i in itertools.count())
    got = list(itertools.islice(encode_documents(tok, endless, batch_chars=200, prefetch=2), 3))
    tags = [t for tags, _ in got for t in tags]
    assert tags == list(range(len(tags))) and len(tags) > 10
    for tags, arrays in got:
        for i, a in zip(tags, arrays, strict=True):
            assert tok.decode(a[:-1]) == f"document number {i}" and a[-1] == tok.eot_id


@pytest.mark.parametrize("style", ["nanogpt", "llmc"])
def test_export_bin_round_trip(tmp_path: Path, docs: list[str], style: str) -> None:
    src = write_jsonl(tmp_path / "c.jsonl", docs[:40])
    build.text([src], tmp_path / "out", vocab_size=300, fractions=(1.0, 0.0, 0.0), shard_bytes=2048)
    ds = ShardSet(tmp_path / "out" / "train")
    ts = ds.token_stream("tokens")
    n = export_bin(ds, tmp_path / "train.bin", style=style, chunk_tokens=1000)  # type: ignore[arg-type]
    assert n == ts.num_tokens
    got = read_bin(tmp_path / "train.bin")
    np.testing.assert_array_equal(got, ts.read(0, n))
    if style == "llmc":
        head = np.fromfile(tmp_path / "train.bin", dtype="<i4", count=3)
        assert head.tolist() == [20240520, 1, n]
    else:
        assert (tmp_path / "train.bin").stat().st_size == 2 * n
    with pytest.raises(ConfigError, match="style"):
        export_bin(ds, tmp_path / "x.bin", style="gpt")  # type: ignore[arg-type]
