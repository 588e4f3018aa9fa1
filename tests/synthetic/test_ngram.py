from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from datafuel.errors import ConfigError, InputDataError
from datafuel.synthetic import NGramPrior


def random_docs(rng: np.random.Generator, n: int, vocab: int, eot: int = 0) -> list[np.ndarray]:
    docs = []
    for _ in range(n):
        body = rng.integers(1, vocab, size=int(rng.integers(1, 30)))
        body[::3] = 1 + body[::3] % 4  # some structure: frequent small ids
        docs.append(np.concatenate([body, [eot]]).astype(np.uint16))
    return docs


def reference_probs(
    docs: list[np.ndarray], doc: np.ndarray, vocab: int, order: int, prior: NGramPrior
) -> list[float]:
    """Interpolated absolute discounting, written the slow obvious way."""
    counts = [Counter() for _ in range(order)]  # counts[c][(context tuple, w)]
    uni = Counter()
    total = 0
    for d in docs:
        seq = [0, *d.tolist()]
        for j in range(1, len(seq)):
            uni[seq[j]] += 1
            total += 1
            for c in range(1, order):
                if j - c >= 0:
                    counts[c][(tuple(seq[j - c : j]), seq[j])] += 1
    alpha = 0.1

    def p(ctx: list[int], w: int) -> float:
        val = (uni[w] + alpha) / (total + alpha * vocab)
        for c in range(1, order):
            if len(ctx) < c:
                break
            h = tuple(ctx[-c:])
            follow = {k[1]: v for k, v in counts[c].items() if k[0] == h}
            if not follow:
                break
            n_h = sum(follow.values())
            D = prior.discounts[c - 1]
            val = (max(follow.get(w, 0) - D, 0) + D * len(follow) * val) / n_h
        return val

    seq = [0, *doc.tolist()]
    return [p(seq[:j], seq[j]) for j in range(1, len(seq))]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_slow_reference_and_dense_rows_sum_to_one(order: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = 12
    docs = random_docs(rng, 60, vocab)
    prior = NGramPrior.fit(docs, vocab_size=vocab, eot_id=0, order=order, chunk_tokens=97)
    probe = docs[:3] + random_docs(np.random.default_rng(99), 2, vocab)
    scores = prior.score(probe, threshold=0.0, top_k=vocab)
    for d, s in zip(probe, scores, strict=True):
        np.testing.assert_allclose(s.p, reference_probs(docs, d, vocab, order, prior), rtol=1e-10)
        # top-k over the whole vocabulary: the dense distribution, consistent with p
        assert s.positions.tolist() == list(range(1, len(d)))
        np.testing.assert_allclose(s.top_probs.sum(axis=1), 1.0, rtol=1e-9)
        for j, pos in enumerate(s.positions.tolist()):
            np.testing.assert_allclose(s.top_probs[j][s.top_ids[j] == d[pos]], s.p[pos], rtol=1e-9)
    P = prior.next_token_probs([probe[0][:0], probe[0][:1], probe[0][:5]])
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-9)
    np.testing.assert_allclose(P[2, probe[0][5]], scores[0].p[5], rtol=1e-9)


def test_top_k_is_sorted_and_only_where_asked() -> None:
    docs = [np.array([5, 6, 7, 0])] * 30 + [np.array([5, 6, 8, 0])] * 2 + [np.array([9, 6, 7, 0])]
    prior = NGramPrior.fit(docs, vocab_size=16, eot_id=0, order=3)
    (s,) = prior.score([np.array([5, 6, 7, 0], np.uint16)], threshold=0.9, top_k=3)
    assert (s.p[s.positions] >= 0.9).all() and 0 not in s.positions.tolist()
    assert ((s.p >= 0.9) & (np.arange(4) > 0)).sum() == len(s.positions)
    assert (np.diff(s.top_probs, axis=1) <= 0).all()
    assert s.top_ids.shape == (len(s.positions), 3)


def test_hashed_contexts_agree_with_exact_packing() -> None:
    rng = np.random.default_rng(3)
    docs = [rng.integers(1, 3000, size=40).astype(np.uint32) for _ in range(30)]
    docs = [np.concatenate([d, [0]]).astype(np.uint32) for d in docs]
    exact = NGramPrior.fit(docs, vocab_size=3000, eot_id=0, order=5)
    hashed = NGramPrior.fit(docs, vocab_size=3000, eot_id=0, order=5, hash_contexts=True)
    assert not exact.hashed and hashed.hashed
    assert NGramPrior.fit(docs, vocab_size=300_000, eot_id=0, order=5).hashed  # 300000**5 > 2**63
    probe = [*docs[:5], np.array([7, 7, 7, 0], np.uint32)]
    for a, b in zip(
        exact.score(probe, threshold=0.3), hashed.score(probe, threshold=0.3), strict=True
    ):
        np.testing.assert_allclose(a.p, b.p, rtol=1e-12)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_allclose(a.top_probs, b.top_probs, rtol=1e-12)


def test_arrays_round_trip_without_pickle(tmp_path: Path) -> None:
    docs = random_docs(np.random.default_rng(5), 40, 20)
    prior = NGramPrior.fit(docs, vocab_size=20, eot_id=0, order=3)
    np.savez(tmp_path / "prior.npz", **prior.to_arrays())
    with np.load(tmp_path / "prior.npz", allow_pickle=False) as z:
        again = NGramPrior.from_arrays(z)
    a = prior.score(docs[:4], threshold=0.5)
    b = again.score(docs[:4], threshold=0.5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.p, y.p)
        np.testing.assert_array_equal(x.top_ids, y.top_ids)


def test_bad_arguments() -> None:
    docs = [np.array([1, 2, 0])]
    with pytest.raises(ConfigError, match="order"):
        NGramPrior.fit(docs, vocab_size=4, eot_id=0, order=0)
    with pytest.raises(ConfigError, match="eot_id"):
        NGramPrior.fit(docs, vocab_size=4, eot_id=9)
    with pytest.raises(InputDataError, match="outside the vocabulary"):
        NGramPrior.fit([np.array([1, 7, 0])], vocab_size=4, eot_id=0)
    with pytest.raises(InputDataError, match="no tokens"):
        NGramPrior.fit([], vocab_size=4, eot_id=0)
    prior = NGramPrior.fit(docs, vocab_size=4, eot_id=0)
    with pytest.raises(InputDataError, match="outside"):
        prior.score([np.array([1, 5, 0])])


@pytest.mark.parametrize(("order", "k"), [(1, 3), (2, 4), (3, 5), (4, 8)])
def test_sparse_top_k_equals_the_dense_top_k(order: int, k: int) -> None:
    rng = np.random.default_rng(order)
    docs = random_docs(rng, 200, 50)
    prior = NGramPrior.fit(docs, vocab_size=50, eot_id=0, order=order)
    probe = docs[:6] + random_docs(np.random.default_rng(42), 4, 50)
    scores = prior.score(probe, threshold=0.0, top_k=k)
    for d, s in zip(probe, scores, strict=True):
        dense = prior.next_token_probs([d[:i] for i in s.positions.tolist()])
        want = -np.sort(-dense, axis=1)[:, :k]
        np.testing.assert_allclose(s.top_probs, want, rtol=1e-9)
        np.testing.assert_allclose(
            np.take_along_axis(dense, s.top_ids, axis=1), s.top_probs, rtol=1e-9
        )
        assert all(len(set(row)) == k for row in s.top_ids.tolist())


def test_next_token_topk_matches_the_dense_distribution() -> None:
    docs = random_docs(np.random.default_rng(8), 100, 40)
    prior = NGramPrior.fit(docs, vocab_size=40, eot_id=0, order=3)
    ctx = [docs[0][:0], docs[0][:1], docs[1][:4], np.array([39, 38, 37])]
    ids, pr = prior.next_token_topk(ctx, 6)
    dense = prior.next_token_probs(ctx)
    np.testing.assert_allclose(pr, -np.sort(-dense, axis=1)[:, :6], rtol=1e-9)
    np.testing.assert_allclose(np.take_along_axis(dense, ids, axis=1), pr, rtol=1e-9)
    synth = prior.sample([3, 9, 1], rng=np.random.default_rng(0), top_k=4, temperature=1.5)
    assert [len(s) for s in synth] == [3, 9, 1]
    assert all(s[-1] == 0 and 0 not in s[:-1].tolist() for s in synth)
