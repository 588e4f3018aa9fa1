"""Long documents are cut into pieces before the tokenizer (``datafuel.text._pieces``).

Cuts at whitespace leave the ids exactly as encoding the whole text gives them; cuts
inside a long run (no whitespace) change the ids but never the decoded text.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafuel.demo import sample_corpus_path
from datafuel.errors import ConfigError
from datafuel.text import BPETokenizer, Corpus, encode_documents, train_bpe
from datafuel.text._pieces import (
    _CUT,
    MAX_PIECE_CHARS,
    MAX_WORD_CHARS,
    cut_document,
    needs_cut,
)
from datafuel.text._tokenizer import _new_bpe

LICENSES = sorted(
    p for p in Path("/usr/share/common-licenses").glob("*") if p.is_file() and not p.is_symlink()
)
HUGE = 1 << 40  # a max_piece_chars no text reaches: the whole text in one call


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return list(Corpus([sample_corpus_path()]))


@pytest.fixture(scope="module")
def tok(docs: list[str]) -> BPETokenizer:
    return train_bpe(docs, vocab_size=2000)


def whole_ids(tok: BPETokenizer, text: str) -> list[int]:
    """Ids from the tokenizer itself, on the whole text at once (no datafuel cutting)."""
    return list(tok.tokenizer.encode(text, add_special_tokens=False).ids)


def cut_points(text: str, max_piece_chars: int, max_word_chars: int = MAX_WORD_CHARS) -> list[int]:
    pieces = list(cut_document(text, max_piece_chars, max_word_chars))
    assert "".join(pieces) == text
    return list(np.cumsum([len(p) for p in pieces])[:-1])


@pytest.mark.parametrize("max_piece_chars", [64, 1000, 50_000])
def test_pieces_cut_at_whitespace_give_the_ids_of_the_whole_sample_corpus(
    tok: BPETokenizer, docs: list[str], max_piece_chars: int
) -> None:
    text = "\n\n".join(docs)  # one long document of real prose (~290k characters)
    cuts = cut_points(text, max_piece_chars)
    assert len(cuts) >= len(text) // max_piece_chars
    assert all(_CUT.match(text, c) for c in cuts)  # every cut is at whitespace
    ids = tok.encode(text, max_piece_chars=max_piece_chars)
    assert ids.tolist() == whole_ids(tok, text)
    assert tok.decode(ids) == text


@pytest.mark.skipif(not LICENSES, reason="no /usr/share/common-licenses on this system")
@pytest.mark.parametrize("path", LICENSES, ids=lambda p: p.name)
def test_pieces_give_the_ids_of_the_whole_license_text(tok: BPETokenizer, path: Path) -> None:
    text = path.read_text(encoding="utf-8", errors="replace")
    for max_piece_chars in (100, 1000):
        cuts = cut_points(text, max_piece_chars)
        assert cuts and all(_CUT.match(text, c) for c in cuts)
        ids = tok.encode(text, append_eot=True, max_piece_chars=max_piece_chars)
        assert ids.tolist() == [*whole_ids(tok, text), tok.eot_id]
        assert tok.decode(ids, skip_eot=True) == text


# words and every kind of whitespace the two regexes might disagree on
_WS = [" ", "  ", "\n", "\n\n", "\t", "\r\n", " \t ", "\u00a0", "\u3000", "\x1c", "\x85", "\u2028"]
_WORDS = ["the", "cat's", "42", "x9", "!!", "...", "东京", "😀", "e\u0301", "\u200b", "'ll", "-"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parts=st.lists(st.sampled_from(_WS + _WORDS), min_size=1, max_size=80),
    max_piece_chars=st.integers(4, 40),
)
def test_cuts_at_whitespace_never_change_the_ids(
    tok: BPETokenizer, parts: list[str], max_piece_chars: int
) -> None:
    text = "".join(parts)
    cuts = cut_points(text, max_piece_chars, 10**6)
    ids = tok.encode(text, max_piece_chars=max_piece_chars)
    assert tok.decode(ids) == text
    if all(_CUT.match(text, c) for c in cuts):  # no window without a whitespace cut point
        assert ids.tolist() == whole_ids(tok, text)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_without_whitespace_are_cut_at_characters_and_decode_losslessly(
    tok: BPETokenizer, seed: int
) -> None:
    rnd = random.Random(seed)
    alphabet = "abcxyz019!?东京😀é\u0301\ufffd\x00"
    word = "".join(rnd.choice(alphabet) for _ in range(5000))
    text = f"start {word} middle {' ' * 3000} end"
    for max_piece_chars, max_word_chars in ((1000, 300), (97, 10**6), (1, 1)):
        pieces = list(cut_document(text, max_piece_chars, max_word_chars))
        assert "".join(pieces) == text
        assert max(map(len, pieces)) <= max_piece_chars
        longest_run = max(len(m.group()) for p in pieces for m in re.finditer(r"\S+|\s+", p))
        assert longest_run <= max_word_chars
        ids = tok.encode(text, max_piece_chars=max_piece_chars)
        assert tok.decode(ids) == text
    # a run longer than the default word cap (64 KiB) is cut into runs of 8 KiB
    big = "q" * (MAX_WORD_CHARS + 1000)
    assert [len(p) for p in cut_document(big)] == [8 << 10] * 8 + [1000]
    assert list(cut_document("q" * MAX_WORD_CHARS)) == ["q" * MAX_WORD_CHARS]  # not too long
    assert tok.decode(tok.encode(big)) == big


def test_short_documents_are_never_cut(docs: list[str]) -> None:
    for d in docs:
        assert not needs_cut(d, MAX_PIECE_CHARS, MAX_WORD_CHARS)
        assert list(cut_document(d)) == [d]
    assert not needs_cut("w" * MAX_WORD_CHARS, MAX_PIECE_CHARS, MAX_WORD_CHARS)
    assert needs_cut("w" * (MAX_WORD_CHARS + 1), MAX_PIECE_CHARS, MAX_WORD_CHARS)
    assert needs_cut("w " * MAX_PIECE_CHARS, MAX_PIECE_CHARS, MAX_WORD_CHARS)


def test_encode_documents_keeps_one_row_and_one_eot_per_long_document(
    tok: BPETokenizer, docs: list[str]
) -> None:
    long = "\n".join(docs)
    items = [("a", docs[0]), ("long", long), ("b", docs[1]), ("word", "z" * 3000)]
    out = list(encode_documents(tok, items, max_piece_chars=500, batch_chars=10**9))
    tags = [t for ts, _ in out for t in ts]
    arrays = [a for _, arrs in out for a in arrs]
    assert tags == ["a", "long", "b", "word"]
    for (_, text), arr in zip(items, arrays, strict=True):
        assert arr.dtype == tok.dtype
        assert arr[-1] == tok.eot_id and int((arr == tok.eot_id).sum()) == 1
        assert tok.decode(arr, skip_eot=True) == text
    assert arrays[1][:-1].tolist() == whole_ids(tok, long)  # cut at whitespace only
    for short, arr in ((docs[0], arrays[0]), (docs[1], arrays[2])):
        assert arr[:-1].tolist() == whole_ids(tok, short)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_piece_chars_must_be_a_positive_int(tok: BPETokenizer, bad: object) -> None:
    with pytest.raises(ConfigError, match="max_piece_chars"):
        tok.encode("text", max_piece_chars=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_piece_chars"):
        list(encode_documents(tok, [(0, "text")], max_piece_chars=bad))  # type: ignore[arg-type]


def test_training_on_pieces_fits_the_tokenizer_the_whole_text_fits(docs: list[str]) -> None:
    text = "\n\n".join(docs) * 4  # ~1.1 M characters: more than one piece
    assert len(list(cut_document(text))) > 1
    ours = train_bpe([text], vocab_size=1500)
    tok, trainer = _new_bpe(1500, 2, ours.eot_token)
    tok.train_from_iterator([text], trainer=trainer)  # the whole string at once
    assert ours.tokenizer.to_str() == tok.to_str()


def test_training_on_a_long_run_without_whitespace_is_quick(docs: list[str]) -> None:
    rnd = random.Random(0)
    word = "".join(rnd.choice("etaoinshrdlu") for _ in range(1 << 20))
    t0 = time.perf_counter()
    tok = train_bpe([*docs, word], vocab_size=2000)  # one 1 MiB word took minutes before
    seconds = time.perf_counter() - t0
    assert seconds < 30, f"training took {seconds:.1f} s"
    assert tok.decode(tok.encode(word)) == word
