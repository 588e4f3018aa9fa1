"""``build.resample``: a token shard set in, a semi-synthetic one (same boundaries) out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from datafuel import build
from datafuel.demo import generate_documents
from datafuel.errors import ConfigError, SchemaError
from datafuel.loaders import ShardSet, ShardWriter, ragged
from datafuel.synthetic import NGramPrior, Prior, Scores


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    (root / "c.jsonl").write_text(
        "".join(json.dumps({"text": d}) + "\n" for d in generate_documents(120, seed=2))
    )
    build.text(
        [root / "c.jsonl"],
        root / "out",
        vocab_size=400,
        fractions=(0.9, 0.1, 0.0),
        shard_bytes=8 << 10,
    )
    return root / "out" / "train"


class Interrupting(Prior):
    """Delegates to a prior and raises after a number of score calls (a killed run)."""

    def __init__(self, inner: Prior, fail_after: int) -> None:
        self.inner, self.calls, self.fail_after = inner, 0, fail_after
        self.vocab_size, self.eot_id = inner.vocab_size, inner.eot_id

    def score(
        self, docs: Sequence[np.ndarray], *, threshold: float = 0.99, top_k: int = 8
    ) -> list[Scores]:
        self.calls += 1
        if self.calls > self.fail_after:
            raise KeyboardInterrupt
        return self.inner.score(docs, threshold=threshold, top_k=top_k)

    def next_token_probs(self, contexts: Sequence[np.ndarray]) -> np.ndarray:
        return self.inner.next_token_probs(contexts)


def test_resample_report_boundaries_and_tail(token_dir: Path, tmp_path: Path) -> None:
    s = build.resample(token_dir, tmp_path / "rs", seed=0, report_tokens=8000)
    r = s["report"]
    assert s["counts"] == {"train": len(ShardSet(token_dir))} and s["kind"] == "resample"
    src, out = ShardSet(token_dir), ShardSet(tmp_path / "rs", verify=True)
    a, b = src.token_stream("tokens"), out.token_stream("tokens")
    np.testing.assert_array_equal(a.doc_starts, b.doc_starts)
    x, y = a.read(0, a.num_tokens), b.read(0, b.num_tokens)
    eot = src.metadata["eot_id"]
    np.testing.assert_array_equal(x == eot, y == eot)
    assert int((x != y).sum()) == r["counts"]["changed"] > 0
    assert out.metadata["vocab_size"] == src.metadata["vocab_size"]
    assert out.provenance["tokenizer_sha256"] == src.provenance["tokenizer_sha256"]
    c = r["counts"]
    assert 0 < c["fraction_changed"] <= c["fraction_above_threshold"] < 0.5
    d = r["diversity"]
    # semi-synthetic keeps the original's long tail; the purely synthetic sample loses part of it
    assert d["resampled"]["tail_types_kept"] >= 0.98
    assert d["synthetic"]["tail_types_kept"] < d["resampled"]["tail_types_kept"] - 0.05
    assert d["synthetic"]["distinct_4"] < d["resampled"]["distinct_4"]
    assert json.loads((tmp_path / "rs" / "resample_report.json").read_text())["counts"] == c
    assert "tail" in (tmp_path / "rs" / "resample_report.txt").read_text()
    assert not (tmp_path / "rs" / ".resample-work").exists()


def test_resample_resumes_per_shard_to_the_same_bytes(token_dir: Path, tmp_path: Path) -> None:
    src = ShardSet(token_dir)
    assert src.num_shards >= 3
    prior = NGramPrior.fit(
        [src.token_stream().document(i) for i in range(len(src))],
        vocab_size=src.metadata["vocab_size"],
        eot_id=src.metadata["eot_id"],
    )
    kw = {"seed": 5, "report_tokens": 3000, "batch_tokens": 1 << 20}
    full = build.resample(token_dir, tmp_path / "full", prior=prior, **kw)
    with pytest.raises(KeyboardInterrupt):
        build.resample(token_dir, tmp_path / "part", prior=Interrupting(prior, 2), **kw)
    assert not (tmp_path / "part" / "manifest.json").exists()
    flaky = Interrupting(prior, 10**9)
    again = build.resample(token_dir, tmp_path / "part", prior=flaky, **kw)
    assert again["report"]["shards_resumed"] == 2
    assert again["report"]["counts"] == full["report"]["counts"]
    # same shard files, byte for byte (the manifests differ only in the prior's class name)
    assert ShardSet(tmp_path / "part").shards == ShardSet(tmp_path / "full").shards
    # a finished run is not redone
    calls = flaky.calls
    done = build.resample(token_dir, tmp_path / "part", prior=flaky, **kw)
    assert done["resumed"] and flaky.calls == calls


def test_resample_bad_inputs(tmp_path: Path, token_dir: Path) -> None:
    with ShardWriter(tmp_path / "nometa", {"tokens": ragged("uint16")}) as w:
        w.write({"tokens": [np.array([1, 2, 0], np.uint16)]})
    with pytest.raises(SchemaError, match="vocab_size and eot_id"):
        build.resample(tmp_path / "nometa", tmp_path / "o")
    with pytest.raises(ConfigError, match="must differ"):
        build.resample(token_dir, token_dir)
    with pytest.raises(ConfigError, match="config.json"):
        build.resample(token_dir, tmp_path / "o", prior=tmp_path)
