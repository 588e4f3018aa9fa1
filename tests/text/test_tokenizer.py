from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datafuel.demo import generate_documents
from datafuel.errors import ConfigError, TokenizerError
from datafuel.text import (
    DEFAULT_EOT,
    BPETokenizer,
    clean_text,
    token_dtype,
    train_bpe,
)


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    docs = list(generate_documents(120, seed=3))
    return train_bpe(docs, vocab_size=600)


HARD = [
    "",
    "plain ascii text.",
    "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈 and flags 🇯🇵",
    "CJK 東京都 北京 서울 ひらがな カタカナ",
    "control \x00\x01\x07\x1b[31m red \x7f \u200b zero-width \ufeff bom",
    "whitespace  \t\t\r\n\r\n   trailing   ",
    "combining e\u0301 vs \u00e9, rtl \u05e9\u05dc\u05d5\u05dd, math 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "replacement \ufffd and private use \ue000 and max \U0010ffff",
    f"a literal {DEFAULT_EOT} inside the text",
]


@pytest.mark.parametrize("text", HARD)
def test_decode_encode_round_trips_hard_strings(tok: BPETokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert ids.dtype == np.uint16
    assert tok.decode(ids) == text


def test_a_literal_eot_in_text_cannot_forge_a_document_boundary(tok: BPETokenizer) -> None:
    ids = tok.encode(f"before {DEFAULT_EOT} after")
    assert tok.eot_id not in ids.tolist()
    with_eot = tok.encode("doc", append_eot=True)
    assert with_eot[-1] == tok.eot_id and tok.eot_id not in with_eot[:-1].tolist()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(blacklist_categories=()), max_size=60))
def test_round_trip_of_any_text_after_the_surrogate_policy(tok: BPETokenizer, text: str) -> None:
    cleaned, n = clean_text(text)
    assert n == sum(0xD800 <= ord(c) <= 0xDFFF for c in text)
    assert tok.decode(tok.encode(cleaned)) == cleaned
    assert tok.decode(tok.encode_batch([cleaned, cleaned])[1]) == cleaned


def test_lone_surrogates_without_the_policy_are_a_tokenizer_error(tok: BPETokenizer) -> None:
    with pytest.raises(TokenizerError):
        tok.encode("bad \ud800 surrogate")


def test_token_dtype_boundary() -> None:
    assert token_dtype(257) == np.uint16
    assert token_dtype(65534) == np.uint16
    assert token_dtype(65535) == np.uint32
    assert token_dtype(200_000) == np.uint32
    with pytest.raises(ConfigError):
        token_dtype(0)


def test_a_large_vocabulary_encodes_to_uint32(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab[DEFAULT_EOT] = len(vocab)
    while len(vocab) < 70_000:
        vocab[f"<unused{len(vocab)}>"] = len(vocab)
    t = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    t.save(str(tmp_path / "big.json"))
    big = BPETokenizer.load(tmp_path / "big.json")
    assert big.vocab_size == 70_000 and big.dtype == np.uint32
    ids = big.encode("héllo 😀", append_eot=True)
    assert ids.dtype == np.uint32 and ids[-1] == big.eot_id
    assert big.decode(ids[:-1]) == "héllo 😀"


def test_save_load_keeps_ids_and_fingerprint_is_the_file_sha256(
    tok: BPETokenizer, tmp_path: Path
) -> None:
    import hashlib

    path = tmp_path / "tokenizer.json"
    fp = tok.save(path)
    assert fp == hashlib.sha256(path.read_bytes()).hexdigest()
    again = BPETokenizer.load(path)
    assert (
        again.fingerprint == fp
        and again.eot_id == tok.eot_id
        and again.vocab_size == tok.vocab_size
    )
    text = "The quiet river of Zürich 東京"
    np.testing.assert_array_equal(again.encode(text), tok.encode(text))


def test_training_is_deterministic() -> None:
    docs = list(generate_documents(60, seed=5))
    a, b = train_bpe(docs, vocab_size=400), train_bpe(iter(docs), vocab_size=400)
    assert a.fingerprint == b.fingerprint


@pytest.mark.parametrize("bad", [0, 100, 256, "512", 2.5])
def test_vocab_too_small_or_not_an_int(bad: object) -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        train_bpe(["some text"], vocab_size=bad)  # type: ignore[arg-type]


def test_empty_training_corpus() -> None:
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_bpe([], vocab_size=300)


def test_bad_tokenizer_files(tmp_path: Path, tok: BPETokenizer) -> None:
    with pytest.raises(TokenizerError, match="not found") as e:
        BPETokenizer.load(tmp_path / "missing.json")
    assert e.value.path == str(tmp_path / "missing.json")
    junk = tmp_path / "junk.json"
    junk.write_text("{ not json")
    with pytest.raises(TokenizerError, match="junk.json"):
        BPETokenizer.load(junk)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"model": {"type": "Nope"}}))
    with pytest.raises(TokenizerError, match="wrong.json"):
        BPETokenizer.load(wrong)
    good = tmp_path / "good.json"
    tok.save(good)
    with pytest.raises(TokenizerError, match="no end-of-document token"):
        BPETokenizer.load(good, eot_token="<|eos|>")
