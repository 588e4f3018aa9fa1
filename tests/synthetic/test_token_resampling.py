from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from datafuel.errors import ConfigError, SchemaError
from datafuel.synthetic import (
    NGramPrior,
    Prior,
    TorchPrior,
    load_hf_prior,
    resample_documents,
)

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
