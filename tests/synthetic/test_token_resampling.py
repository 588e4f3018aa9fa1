from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from datafuel.demo import generate_documents
from datafuel.errors import ConfigError, SchemaError
from datafuel.loaders import ShardSet, ShardWriter, ragged
from datafuel.synthetic import (
    NGramPrior,
    Prior,
    Scores,
    TorchPrior,
    load_hf_prior,
    resample_documents,
    resample_shards,
)
from datafuel.text import build_text

EOT = 0


def chain_docs(seed: int, n: int = 80) -> list[np.ndarray]:
    """Docs where most next tokens are near-certain (t -> t+1 mod 30) with random breaks."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        t = int(rng.integers(1, 31))
        body = []
        for _ in range(int(rng.integers(2, 40))):
            body.append(t)
            t = int(rng.integers(1, 31)) if rng.random() < 0.1 else t % 30 + 1
        docs.append(np.array([*body, EOT], np.uint16))
    return docs


def check_invariants(
    prior: Prior, docs: list[np.ndarray], new: list[np.ndarray], threshold: float, top_k: int
) -> int:
    """Only tokens at/above the threshold change, to one of the prior's top-k; first and EOT stay."""
    scores = prior.score(docs, threshold=threshold, top_k=top_k)
    changed = 0
    for d, n, s in zip(docs, new, scores, strict=True):
        assert n.shape == d.shape and n.dtype == d.dtype
        assert n[0] == d[0]
        np.testing.assert_array_equal(n == EOT, d == EOT)  # boundaries never move
        diff = np.flatnonzero(n != d)
        assert (s.p[diff] >= threshold).all()  # the prior's own probabilities
        for i in diff.tolist():
            j = s.positions.tolist().index(i)
            assert int(n[i]) in s.top_ids[j].tolist()
        changed += diff.size
    return changed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ngram_resampling_edits_only_confident_tokens_and_is_deterministic(seed: int) -> None:
    docs = chain_docs(seed)
    prior = NGramPrior.fit(docs, vocab_size=32, eot_id=EOT, order=3)
    new, counts = resample_documents(
        prior, docs, threshold=0.8, top_k=4, temperature=3.0, seed=seed
    )
    changed = check_invariants(prior, docs, new, 0.8, 4)
    assert changed == counts.changed > 0 and counts.above >= counts.changed
    again, _ = resample_documents(prior, docs, threshold=0.8, top_k=4, temperature=3.0, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(new, again, strict=True))
    # batching does not matter: document i always uses the generator (seed, i)
    half = len(docs) // 2
    a, _ = resample_documents(
        prior, docs[:half], threshold=0.8, top_k=4, temperature=3.0, seed=seed
    )
    b, _ = resample_documents(
        prior, docs[half:], threshold=0.8, top_k=4, temperature=3.0, seed=seed, first_index=half
    )
    assert all(np.array_equal(x, y) for x, y in zip(a + b, new, strict=True))
    other, _ = resample_documents(
        prior, docs, threshold=0.8, top_k=4, temperature=3.0, seed=seed + 100
    )
    assert any(not np.array_equal(x, y) for x, y in zip(other, new, strict=True))


def test_threshold_one_and_top_k_one_change_nothing() -> None:
    docs = chain_docs(4)
    prior = NGramPrior.fit(docs, vocab_size=32, eot_id=EOT, order=3)
    for kw in ({"threshold": 1.0}, {"threshold": 0.5, "top_k": 1}):
        new, counts = resample_documents(prior, docs, **kw)  # type: ignore[arg-type]
        assert counts.changed == 0 and all(
            np.array_equal(a, b) for a, b in zip(docs, new, strict=True)
        )


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"top_k": 0}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_resampling_arguments(kw: dict[str, float], match: str) -> None:
    prior = NGramPrior.fit(chain_docs(0, 5), vocab_size=32, eot_id=EOT)
    with pytest.raises(ConfigError, match=match):
        resample_documents(prior, chain_docs(0, 2), **kw)  # type: ignore[arg-type]


class TinyCausalLM(torch.nn.Module):
    """Embedding + GRU: a real causal LM (logits at t predict t + 1)."""

    def __init__(self, vocab: int = 32, dim: int = 32) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.rnn = torch.nn.GRU(dim, dim, batch_first=True)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(self.emb(ids))[0])


@pytest.fixture(scope="module")
def trained_lm() -> TinyCausalLM:
    torch.manual_seed(0)
    model = TinyCausalLM()
    docs = chain_docs(10, 200)
    stream = torch.from_numpy(np.concatenate([[EOT], *docs]).astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    rng = np.random.default_rng(0)
    for _ in range(80):
        starts = rng.integers(0, len(stream) - 33, size=16)
        w = torch.stack([stream[s : s + 33] for s in starts])
        loss = torch.nn.functional.cross_entropy(
            model(w[:, :-1]).reshape(-1, 32), w[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.0  # it learned the chain
    return model


def test_a_torch_lm_trained_here_works_through_the_same_interface(trained_lm: TinyCausalLM) -> None:
    prior = TorchPrior(trained_lm, vocab_size=32, eot_id=EOT, device="cpu", batch_tokens=256)
    docs = chain_docs(20, 30)
    scores = prior.score(docs, threshold=0.8, top_k=4)
    # teacher forcing on the original prefix: p equals the model's own softmax
    d = torch.from_numpy(np.concatenate([[EOT], docs[0][:-1]]).astype(np.int64))[None]
    with torch.no_grad():
        ref = torch.softmax(trained_lm(d)[0], -1)[
            torch.arange(len(docs[0])), torch.from_numpy(docs[0].astype(np.int64))
        ]
    np.testing.assert_allclose(scores[0].p, ref.double().numpy(), rtol=1e-5)
    assert sum(len(s.positions) for s in scores) > 0.3 * sum(len(x) for x in docs)
    new, counts = resample_documents(prior, docs, threshold=0.8, top_k=4, temperature=5.0, seed=3)
    assert check_invariants(prior, docs, new, 0.8, 4) == counts.changed > 0
    # the same prior also samples and scores long documents in windows
    windowed = TorchPrior(trained_lm, vocab_size=32, eot_id=EOT, device="cpu", max_context=8)
    long_doc = np.concatenate(docs[:3])[:-1]
    long_doc = np.concatenate([long_doc[long_doc != EOT], [EOT]]).astype(np.uint16)
    (w,) = windowed.score([long_doc], threshold=0.9)
    assert w.p.shape == long_doc.shape and np.isfinite(w.p).all() and (w.p > 0).all()
    synth = prior.sample([5, 12], rng=np.random.default_rng(0), top_k=4)
    assert [len(s) for s in synth] == [5, 12] and all(
        s[-1] == EOT and EOT not in s[:-1] for s in synth
    )


def test_windows_over_long_documents_match_the_full_pass_for_a_bigram_model() -> None:
    torch.manual_seed(1)
    bigram = torch.nn.Embedding(32, 32)  # logits depend on the current token only
    full = TorchPrior(bigram, vocab_size=32, eot_id=EOT, device="cpu")
    docs = [
        np.concatenate([np.random.default_rng(i).integers(1, 32, size=n), [EOT]]).astype(np.uint16)
        for i, n in enumerate((5, 17, 40, 63))
    ]
    for T in (2, 3, 8, 16):
        win = TorchPrior(
            bigram, vocab_size=32, eot_id=EOT, device="cpu", max_context=T, batch_tokens=64
        )
        for a, b in zip(
            full.score(docs, threshold=0.05, top_k=3),
            win.score(docs, threshold=0.05, top_k=3),
            strict=True,
        ):
            np.testing.assert_allclose(a.p, b.p, rtol=1e-6)
            np.testing.assert_array_equal(a.positions, b.positions)
            np.testing.assert_array_equal(a.top_ids, b.top_ids)


def test_model_output_shape_is_checked() -> None:
    prior = TorchPrior(
        lambda ids: torch.zeros(ids.shape[0], ids.shape[1], 8),
        vocab_size=32,
        eot_id=EOT,
        device="cpu",
    )
    with pytest.raises(SchemaError, match="predicts 8 tokens"):
        prior.score(chain_docs(0, 2))


def test_hf_prior_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json"):
        load_hf_prior(tmp_path, vocab_size=32, eot_id=EOT)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError, match="differs from the shards' tokenizer"):
        load_hf_prior(tmp_path, vocab_size=32, eot_id=EOT, tokenizer_sha256="0" * 64)
    if importlib.util.find_spec("transformers") is None:
        # the optional extra is not installed: a clear error, never a download
        with pytest.raises(ConfigError, match="transformers"):
            load_hf_prior(tmp_path, vocab_size=32, eot_id=EOT)
        return
    import transformers  # pragma: no cover - runs where the extra is installed

    cfg = transformers.GPT2Config(vocab_size=32, n_positions=64, n_embd=16, n_layer=1, n_head=2)
    model_dir = tmp_path / "gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(model_dir)
    prior = load_hf_prior(model_dir, vocab_size=32, eot_id=EOT, device="cpu")
    docs = chain_docs(1, 5)
    new, _ = resample_documents(prior, docs, threshold=0.01, seed=0)
    check_invariants(prior, docs, new, 0.01, 8)


# -- resample_shards ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    (root / "c.jsonl").write_text(
        "".join(json.dumps({"text": d}) + "\n" for d in generate_documents(120, seed=2))
    )
    build_text(
        [root / "c.jsonl"], root / "out", vocab_size=400, split=(0.9, 0.1, 0.0), shard_bytes=8 << 10
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


def test_resample_shards_report_boundaries_and_tail(token_dir: Path, tmp_path: Path) -> None:
    r = resample_shards(token_dir, tmp_path / "rs", seed=0, report_tokens=8000)
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


def test_resample_shards_resumes_per_shard_to_the_same_bytes(
    token_dir: Path, tmp_path: Path
) -> None:
    src = ShardSet(token_dir)
    assert src.num_shards >= 3
    prior = NGramPrior.fit(
        [src.token_stream().document(i) for i in range(len(src))],
        vocab_size=src.metadata["vocab_size"],
        eot_id=src.metadata["eot_id"],
    )
    kw = {"seed": 5, "report_tokens": 3000, "batch_tokens": 1 << 20}
    full = resample_shards(token_dir, tmp_path / "full", prior=prior, **kw)
    with pytest.raises(KeyboardInterrupt):
        resample_shards(token_dir, tmp_path / "part", prior=Interrupting(prior, 2), **kw)
    assert not (tmp_path / "part" / "manifest.json").exists()
    flaky = Interrupting(prior, 10**9)
    again = resample_shards(token_dir, tmp_path / "part", prior=flaky, **kw)
    assert again["shards_resumed"] == 2
    assert again["counts"] == full["counts"]
    # same shard files, byte for byte (the manifests differ only in the prior's class name)
    assert ShardSet(tmp_path / "part").shards == ShardSet(tmp_path / "full").shards
    # a finished run is not redone
    calls = flaky.calls
    done = resample_shards(token_dir, tmp_path / "part", prior=flaky, **kw)
    assert done["resumed"] and flaky.calls == calls


def test_resample_shards_bad_inputs(tmp_path: Path, token_dir: Path) -> None:
    with ShardWriter(tmp_path / "nometa", {"tokens": ragged("uint16")}) as w:
        w.write({"tokens": [np.array([1, 2, 0], np.uint16)]})
    with pytest.raises(SchemaError, match="vocab_size and eot_id"):
        resample_shards(tmp_path / "nometa", tmp_path / "o")
    with pytest.raises(ConfigError, match="must differ"):
        resample_shards(token_dir, token_dir)
    with pytest.raises(ConfigError, match="config.json"):
        resample_shards(token_dir, tmp_path / "o", prior=tmp_path)
