from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datafuel.cli import main
from datafuel.demo import generate_documents
from datafuel.loaders import ShardSet
from datafuel.text import BPETokenizer


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    docs = list(generate_documents(60, seed=4))
    (d / "a.jsonl").write_text("".join(json.dumps({"body": t}) + "\n" for t in docs[:40]))
    (d / "b.txt").write_text("\n\n".join(t.replace("\n\n", "\n") for t in docs[40:]))
    return d


def test_build_text_end_to_end(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [
        "build",
        "text",
        str(corpus),
        "--out",
        str(out),
        "--vocab-size",
        "400",
        "--text-field",
        "body",
        "--txt-mode",
        "paragraph",
        "--split",
        "0.8,0.2,0",
        "--seed",
        "3",
        "--shard-bytes",
        "4KB",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "read 60 documents from 2 file(s)" in text and "tokenizer: 400 ids" in text
    tok = BPETokenizer.load(out / "tokenizer.json")
    train, val = ShardSet(out / "train", verify=True), ShardSet(out / "val", verify=True)
    assert len(train) + len(val) == 60 and not (out / "test").exists()
    assert train.num_shards > 1 and train.metadata["eot_id"] == tok.eot_id
    ts = train.token_stream("tokens")
    assert all(ts.document(i)[-1] == tok.eot_id for i in range(ts.num_documents))
    assert json.loads((out / "split.json").read_text())["counts"] == {
        "train": len(train),
        "val": len(val),
        "test": 0,
    }
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["resumed"] is True and summary["counts"]["train"] == len(train)


def test_build_text_with_a_given_tokenizer(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            [
                "build",
                "text",
                str(corpus / "a.jsonl"),
                "--out",
                str(tmp_path / "one"),
                "--vocab-size",
                "300",
                "--text-field",
                "body",
            ]
        )
        == 0
    )
    tok = tmp_path / "one" / "tokenizer.json"
    assert (
        main(
            [
                "build",
                "text",
                str(corpus / "a.jsonl"),
                "--out",
                str(tmp_path / "two"),
                "--tokenizer",
                str(tok),
                "--text-field",
                "body",
                "--json",
            ]
        )
        == 0
    )
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["tokenizer_trained"] is False
    a = ShardSet(tmp_path / "one" / "train").token_stream("tokens")
    b = ShardSet(tmp_path / "two" / "train").token_stream("tokens")
    np.testing.assert_array_equal(a.read(0, a.num_tokens), b.read(0, b.num_tokens))


@pytest.mark.parametrize(
    ("setup", "args", "needle"),
    [
        (None, ["missing.jsonl"], "missing.jsonl: input not found"),
        ("empty", ["empty.jsonl"], "no non-empty documents"),
        ("nofield", ["nofield.jsonl"], "nofield.jsonl:2: no 'text' field"),
        ("ok", ["ok.jsonl", "--vocab-size", "100"], "vocab_size must be >= 257"),
        ("ok", ["ok.jsonl", "--tokenizer", "bad.json"], "bad.json"),
        ("ok", ["ok.jsonl", "--split", "0.8,x,0.1"], "--split must be comma-separated"),
        ("ok", ["ok.jsonl", "--split", "0.5,0.1,0.1"], "sum to 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str | None,
    args: list[str],
    needle: str,
) -> None:
    (tmp_path / "empty.jsonl").write_text('{"text": ""}\n')
    (tmp_path / "nofield.jsonl").write_text('{"text": "fine"}\n{"title": "x"}\n')
    (tmp_path / "ok.jsonl").write_text('{"text": "fine words here"}\n' * 5)
    (tmp_path / "bad.json").write_text("{broken")
    paths = [str(tmp_path / a) if a.endswith((".jsonl", ".json")) else a for a in args]
    assert main(["build", "text", *paths, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("datafuel: error:") and needle in err and "\n" not in err
