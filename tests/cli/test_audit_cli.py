"""datafuel audit: a build without dedup over planted copies is flagged (exit 1); one with
--dedup near is not (exit 0); bad sets get one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datafuel import build
from datafuel.cli import main


def _corpus(path: Path) -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    docs = []
    for _ in range(60):
        words = list(rng.choice(vocab, 100))
        docs += [" ".join(words), " ".join([*words[:-2], "x", "y"])]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_audit_flags_a_build_without_dedup_and_passes_one_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _corpus(tmp_path / "c.jsonl")
    build.text([tmp_path / "c.jsonl"], tmp_path / "none", vocab_size=400, dedup="none")
    build.text([tmp_path / "c.jsonl"], tmp_path / "near", vocab_size=400, dedup="near")
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "none"), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["leaked"] and got["cross_pairs"] > 0 and got["kind"] == "text"
    worst = got["pairs"][0]
    assert worst["similarity"] >= 0.8 and worst["a"]["set"] != worst["b"]["set"]
    assert worst["a"]["excerpt"][:40] == worst["b"]["excerpt"][:40]
    assert main(["audit", str(tmp_path / "near")]) == 0
    assert build.audit([tmp_path / "near"])["cross_pairs"] == 0


def test_audit_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.resources import files

    _corpus(tmp_path / "c.jsonl")
    build.text([tmp_path / "c.jsonl"], tmp_path / "t", vocab_size=400)
    build.table(
        str(files("datafuel") / "data" / "houses.csv"),
        tmp_path / "tab",
        target="price",
        drop=["id"],
    )
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "t" / "train"), str(tmp_path / "tab" / "train")]) == 1
    err = capsys.readouterr().err
    assert "one kind" in err and err.count("\n") == 1
    assert main(["audit", str(tmp_path / "t" / "train")]) == 1
    assert "two or more" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "tab")]) == 0  # no duplicated rows across its splits
