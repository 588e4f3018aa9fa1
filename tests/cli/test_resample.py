from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datafuel import build
from datafuel.cli import main
from datafuel.demo import sample_corpus_path
from datafuel.loaders import ShardSet


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tokens")
    build.text([sample_corpus_path()], root, vocab_size=512, shard_bytes=32 << 10)
    return root / "train"


def test_resample_end_to_end(
    train_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rs"
    argv = ["resample", str(train_dir), "--out", str(out), "--seed", "7", "--report-tokens", "6000"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "above threshold" in text and "original" in text and "synthetic" in text
    report = json.loads((out / "resample_report.json").read_text())
    assert report["threshold"] == 0.99 and report["top_k"] == 8 and report["temperature"] == 1.5
    assert (out / "resample_report.txt").read_text().startswith("resampled ")
    src, dst = ShardSet(train_dir).token_stream(), ShardSet(out, verify=True).token_stream()
    np.testing.assert_array_equal(src.doc_starts, dst.doc_starts)
    # deterministic for a seed: a second output directory gets the same tokens
    assert main([*argv[:3], str(tmp_path / "again"), *argv[4:], "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    other = ShardSet(tmp_path / "again").token_stream()
    np.testing.assert_array_equal(dst.read(0, dst.num_tokens), other.read(0, other.num_tokens))
    assert again["report"]["counts"] == report["counts"]
    # a different threshold, order and seed give a different, still valid, result
    assert (
        main(
            [
                "resample",
                str(train_dir),
                "--out",
                str(tmp_path / "b"),
                "--threshold",
                "0.9",
                "--top-k",
                "4",
                "--temperature",
                "2",
                "--ngram-order",
                "4",
                "--seed",
                "1",
                "--json",
            ]
        )
        == 0
    )
    b = json.loads(capsys.readouterr().out)["report"]
    assert b["counts"]["fraction_above_threshold"] > report["counts"]["fraction_above_threshold"]
    assert b["prior"]["order"] == 4


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--threshold", "1.5"], "threshold must be in (0, 1]"),
        (["--top-k", "0"], "top_k must be an int >= 1"),
        (["--temperature", "0"], "temperature must be"),
        (["--ngram-order", "0"], "order must be an int"),
        (["--prior", "no-such-model-dir"], "no-such-model-dir: not a Hugging Face model directory"),
    ],
)
def test_bad_arguments(
    train_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    needle: str,
) -> None:
    assert main(["resample", str(train_dir), "--out", str(tmp_path / "o"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("datafuel: error:") and needle in err and "\n" not in err


def test_missing_tokens_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resample", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "nothing" in capsys.readouterr().err


def test_resample_with_a_local_hugging_face_model(
    train_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # runs only where the optional extra is installed (datafuel[transformers]); never downloads
    transformers = pytest.importorskip("transformers")
    import shutil

    import torch

    model_dir = tmp_path / "tiny-gpt2"
    cfg = transformers.GPT2Config(vocab_size=512, n_positions=128, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    # the model must read the shards' token ids: the same tokenizer.json, checked by sha256
    shutil.copyfile(train_dir.parent / "tokenizer.json", model_dir / "tokenizer.json")
    out = tmp_path / "rs"
    argv = [
        "resample",
        str(train_dir),
        "--out",
        str(out),
        "--prior",
        str(model_dir),
        "--threshold",
        "0.005",
        "--report-tokens",
        "800",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)["report"]
    assert report["prior"]["model_dir"] == str(model_dir) and report["counts"]["changed"] > 0
    src, dst = ShardSet(train_dir).token_stream(), ShardSet(out, verify=True).token_stream()
    np.testing.assert_array_equal(src.doc_starts, dst.doc_starts)
    # a model directory whose tokenizer differs is refused before any work
    (model_dir / "tokenizer.json").write_text("{}")
    assert (
        main(["resample", str(train_dir), "--out", str(tmp_path / "x"), "--prior", str(model_dir)])
        == 1
    )
    assert "differs from the shards' tokenizer" in capsys.readouterr().err
