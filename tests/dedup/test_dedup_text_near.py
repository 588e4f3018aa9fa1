"""Near-duplicate text: recall and false positives at planted Jaccard levels, datasketch as
the oracle of the pair decisions, determinism, and the pieces (shingles, banding)."""

from __future__ import annotations

import numpy as np
import pytest
from planted import NGRAM, corpus, shingles

from datafuel.dedup import (
    candidate_pairs,
    detection,
    lsh_params,
    minhash_signatures,
    s_curve,
    shingle_hashes,
    text_clusters,
    verify_pairs,
)
from datafuel.errors import ConfigError


def _flagged(labels: np.ndarray, pairs: list[tuple[int, int, float]]) -> np.ndarray:
    return np.array([labels[i] == labels[j] for i, j, _ in pairs])


@pytest.mark.parametrize("seed", [0, 1])
def test_recall_at_0_8_and_false_positives_at_0_5_and_below(seed: int) -> None:
    levels = {0.8: 250, 0.5: 150, 0.4: 100, 0.3: 100}
    docs, pairs = corpus(seed, levels)
    c = text_clusters(docs, "near", seed=seed)
    at = {lvl: [p for p in pairs if abs(p[2] - lvl) < 0.01] for lvl in levels}
    assert all(len(v) == levels[k] for k, v in at.items())  # the planting hit its levels
    recall = _flagged(c.labels, at[0.8]).mean()
    assert recall >= 0.92, recall
    low = [p for lvl in (0.5, 0.4, 0.3) for p in at[lvl]]
    assert _flagged(c.labels, low).mean() <= 0.01
    # unrelated documents (Jaccard ~ 0) are never joined
    assert (c.labels[:500] == np.arange(500)).all()


def test_every_pair_above_0_9_is_found() -> None:
    docs, pairs = corpus(5, {0.9: 100, 0.95: 100, 1.0: 50})
    assert _flagged(text_clusters(docs, "near").labels, pairs).all()


def test_pair_decisions_agree_with_datasketch() -> None:
    from datasketch import MinHash, MinHashLSH

    docs, planted = corpus(2, {0.3: 100, 0.5: 100, 0.8: 100, 0.9: 100, 1.0: 50}, singles=800)
    params = lsh_params(0.8, 128)
    c = text_clusters(docs, "near")
    ours = {(int(i), int(j)) for i, j in zip(c.pairs[0], c.pairs[1], strict=True)}

    lsh = MinHashLSH(num_perm=128, params=(params.bands, params.rows))
    hashes = []
    for k, d in enumerate(docs):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in shingles(d, NGRAM)])
        lsh.insert(k, m)
        hashes.append(m)

    def theirs(i: int, j: int) -> bool:
        return j in lsh.query(hashes[i]) and hashes[i].jaccard(hashes[j]) >= params.cutoff

    rng = np.random.default_rng(0)
    rand = [tuple(sorted(map(int, rng.choice(len(docs), 2, replace=False)))) for _ in range(1500)]
    sampled = [(i, j) for i, j, _ in planted] + rand
    agree = np.mean([((i, j) in ours) == theirs(i, j) for i, j in sampled])
    assert agree >= 0.99, agree
    # the two estimators of each planted pair's Jaccard agree on average
    sig = minhash_signatures(docs)
    diff = [(sig[i] == sig[j]).mean() - hashes[i].jaccard(hashes[j]) for i, j, _ in planted]
    assert abs(float(np.mean(diff))) < 0.01


@pytest.mark.parametrize("seed", [0, 7])
def test_the_same_input_and_seed_give_the_same_clusters(seed: int) -> None:
    docs, _ = corpus(3, {0.85: 50, 1.0: 20}, singles=200)
    a = minhash_signatures(docs, seed=seed, workers=1)
    b = minhash_signatures(docs, seed=seed, workers=4)
    assert np.array_equal(a, b)
    c1, c2 = text_clusters(docs, "near", seed=seed), text_clusters(docs, "near", seed=seed)
    assert np.array_equal(c1.labels, c2.labels)
    assert not np.array_equal(a, minhash_signatures(docs, seed=seed + 1))


def test_shingles_are_word_ngrams_within_each_document() -> None:
    h, doc = shingle_hashes(["a b c d e f", "x y", "", "a b c d e f"])
    assert doc.tolist() == [0, 0, 1, 3, 3]  # 2 five-grams, one short shingle, none, 2
    assert h[:2].tolist() == h[3:].tolist() and h[0] != h[1]
    # a shingle never spans two documents: the same words split in two give other hashes
    h2, _ = shingle_hashes(["a b c", "d e f"])
    assert not set(h2.tolist()) & set(h.tolist())
    # case, Unicode form and spacing do not matter
    a, _ = shingle_hashes(["Caf\u00e9 one two three four"])
    b, _ = shingle_hashes(["cafe\u0301   ONE two\tthree four"])
    assert a.tolist() == b.tolist()


def test_the_banding_and_its_s_curve() -> None:
    p = lsh_params(0.8, 128)
    assert (p.bands, p.rows) == (21, 6) and round(p.cutoff, 3) == 0.729
    assert float(s_curve(0.8, p.bands, p.rows)) > 0.99
    assert float(detection(0.8, p)) > 0.95 and float(detection(0.5, p)) < 1e-4
    for bad in (0.0, 1.0, 1.5, "0.8"):
        with pytest.raises(ConfigError, match="threshold"):
            lsh_params(bad)  # type: ignore[arg-type]


def test_a_big_bucket_of_copies_costs_linear_pairs_and_is_one_cluster() -> None:
    docs = ["the very same words again and again here"] * 500 + ["other text entirely one two"]
    sig = minhash_signatures(docs)
    p = lsh_params()
    i, j = candidate_pairs(sig, p.bands, p.rows)
    assert i.size <= 2 * 499 and (i < j).all()
    vi, _, est = verify_pairs(sig, i, j, p.cutoff)
    assert vi.size == i.size and (est == 1.0).all()
    c = text_clusters(docs, "near")
    assert (c.labels[:500] == 0).all() and c.labels[500] == 500
    assert c.to_json()["sizes"] == {"500": 1}
