"""Byte-level BPE: train on an iterator of documents, or load a ``tokenizer.json``."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_bytes
from datafuel.errors import ConfigError, TokenizerError

from ._pieces import (
    MAX_PIECE_CHARS,
    MAX_TRAIN_WORD_CHARS,
    MAX_WORD_CHARS,
    check_piece_chars,
    cut_document,
    needs_cut,
)

__all__ = ["DEFAULT_EOT", "BPETokenizer", "token_dtype", "train_bpe"]

#: The end-of-document special token appended after every document.
DEFAULT_EOT = "<|endoftext|>"

#: 256 byte symbols + the end-of-document token: the smallest byte-level vocabulary.
_MIN_VOCAB = 257

_UINT16_LIMIT = 65535  # FORMAT.md: uint16 when the vocabulary has fewer than 65,535 ids

_GROUP_CHARS = 1 << 22  # pieces of one long text go to encode_batch about 4 MiB at a time


def token_dtype(vocab_size: int) -> np.dtype[Any]:
    """``uint16`` when every id fits (vocabulary < 65,535 ids), else ``uint32``.

    >>> token_dtype(50257), token_dtype(100277)
    (dtype('uint16'), dtype('uint32'))
    """
    if vocab_size < 1:
        raise ConfigError(f"vocab_size must be >= 1. Got {vocab_size} instead.")
    return np.dtype(np.uint16) if vocab_size < _UINT16_LIMIT else np.dtype(np.uint32)


class BPETokenizer:
    """A byte-level BPE tokenizer (HF ``tokenizers``) with an end-of-document token.

    Byte-level BPE encodes any Unicode string: ``decode(encode(text)) == text`` for every
    text without lone surrogates (see :func:`datafuel.text.clean_text` for the policy
    that replaces them). The end-of-document token is never produced from text: a
    literal ``<|endoftext|>`` inside a document is encoded as ordinary bytes
    (``encode_special_tokens``), so documents cannot forge a boundary.

    Parameters
    ----------
    tokenizer
        A ``tokenizers.Tokenizer``.
    eot_token
        The end-of-document special token; it must be in the vocabulary.
    fingerprint
        sha256 of the ``tokenizer.json`` bytes (computed from the serialisation when
        not given).

    Examples
    --------
    >>> tok = train_bpe(["hello world", "hello there"] * 20, vocab_size=300)
    >>> ids = tok.encode("hello 🌍")
    >>> tok.decode(ids)
    'hello 🌍'
    >>> tok.dtype
    dtype('uint16')
    """

    def __init__(
        self, tokenizer: Any, *, eot_token: str = DEFAULT_EOT, fingerprint: str | None = None
    ) -> None:
        eot_id = tokenizer.token_to_id(eot_token)
        if eot_id is None:
            raise TokenizerError(
                f"the tokenizer has no end-of-document token {eot_token!r}; "
                "train it with datafuel.text.train_bpe or pass eot_token= the one it has.",
                field="eot_token",
            )
        self.tokenizer = tokenizer
        # documents never forge the end-of-document token from text
        self.tokenizer.encode_special_tokens = True
        self.eot_token = eot_token
        self.eot_id = int(eot_id)
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.dtype = token_dtype(self.vocab_size)
        self._json = tokenizer.to_str()
        self.fingerprint = fingerprint or hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, eot={self.eot_token!r}->{self.eot_id}, "
            f"fingerprint={self.fingerprint[:12]})"
        )

    # -- persistence ---------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, eot_token: str = DEFAULT_EOT) -> BPETokenizer:
        """Load a ``tokenizer.json``; errors name the file."""
        from tokenizers import Tokenizer

        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError as exc:
            raise TokenizerError(f"{p}: tokenizer file not found.", path=p) from exc
        except OSError as exc:
            raise TokenizerError(f"{p}: cannot read the tokenizer file ({exc}).", path=p) from exc
        try:
            json.loads(raw)
            tok = Tokenizer.from_str(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise TokenizerError(
                f"{p}: not a valid HF tokenizers tokenizer.json ({str(exc).splitlines()[0][:200]}).",
                path=p,
            ) from exc
        except Exception as exc:  # the Rust side raises plain Exception subclasses
            raise TokenizerError(
                f"{p}: not a valid HF tokenizers tokenizer.json ({type(exc).__name__}: {str(exc)[:200]}).",
                path=p,
            ) from exc
        try:
            return cls(tok, eot_token=eot_token, fingerprint=hashlib.sha256(raw).hexdigest())
        except TokenizerError as exc:
            raise TokenizerError(f"{p}: {exc.message}", path=p, field="eot_token") from exc

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write ``tokenizer.json`` (atomically); returns its sha256 (the fingerprint)."""
        p = Path(path)
        data = self._json.encode("utf-8")
        atomic_write_bytes(p, data)
        return hashlib.sha256(data).hexdigest()

    # -- encoding ------------------------------------------------------------------
    def encode(
        self, text: str, *, append_eot: bool = False, max_piece_chars: int = MAX_PIECE_CHARS
    ) -> np.ndarray:
        """Token ids of one text (``self.dtype``), optionally followed by the EOT id."""
        return self.encode_batch([text], append_eot=append_eot, max_piece_chars=max_piece_chars)[0]

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        append_eot: bool = False,
        max_piece_chars: int = MAX_PIECE_CHARS,
    ) -> list[np.ndarray]:
        """Token ids of many texts, encoded in parallel by the tokenizers thread pool.

        A text longer than ``max_piece_chars`` characters (default 1 MiB), or with a
        run of more than 64 KiB (``MAX_WORD_CHARS``) without whitespace, is cut into
        pieces first (:mod:`datafuel.text._pieces`: at whitespace, where the ids do
        not change, else at a character boundary) and the ids of its pieces are
        concatenated, so memory and time stay bounded; ``decode`` of the result is
        still the text. Shorter texts are encoded whole, as one batch.
        """
        check_piece_chars(max_piece_chars)
        word = min(MAX_WORD_CHARS, max_piece_chars)
        long = [i for i, t in enumerate(texts) if needs_cut(t, max_piece_chars, word)]
        if not long:
            return self._encode_whole(texts, append_eot)
        out: list[np.ndarray | None] = [None] * len(texts)
        cut = set(long)
        short = [i for i in range(len(texts)) if i not in cut]
        if short:
            whole = self._encode_whole([texts[i] for i in short], append_eot)
            for i, arr in zip(short, whole, strict=True):
                out[i] = arr
        for i in long:
            out[i] = self._encode_long(texts[i], append_eot, max_piece_chars, word)
        return out  # type: ignore[return-value]  # every slot is filled above

    def _encode_long(
        self, text: str, append_eot: bool, max_piece_chars: int, max_word_chars: int
    ) -> np.ndarray:
        """Ids of one long text: its pieces encoded a few MiB at a time, concatenated."""
        group_chars = max(max_piece_chars, _GROUP_CHARS)
        parts: list[np.ndarray] = []
        group: list[str] = []
        size = 0
        for piece in cut_document(text, max_piece_chars, max_word_chars):
            group.append(piece)
            size += len(piece)
            if size >= group_chars:
                parts.extend(self._encode_whole(group, False))
                group, size = [], 0
        if group:
            parts.extend(self._encode_whole(group, False))
        if append_eot:
            parts.append(np.array([self.eot_id], dtype=self.dtype))
        return np.concatenate(parts)

    def _encode_whole(self, texts: Sequence[str], append_eot: bool) -> list[np.ndarray]:
        try:
            # encode_batch, not encode_batch_fast: measured cheaper in CPU time here (tokenizers 0.23)
            encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        except Exception as exc:  # tokenizers raises plain Exception/TypeError
            raise TokenizerError(f"tokenizers failed to encode a batch: {exc}") from exc
        dt = self.dtype
        if append_eot:
            eot = self.eot_id
            return [np.array([*e.ids, eot], dtype=dt) for e in encs]
        return [np.array(e.ids, dtype=dt) for e in encs]

    def decode(self, ids: Iterable[int] | np.ndarray, *, skip_eot: bool = False) -> str:
        """Text of token ids (the EOT token decodes to its literal unless ``skip_eot``)."""
        seq = np.asarray(ids).astype(np.int64).tolist() if not isinstance(ids, list) else ids
        if skip_eot:
            seq = [t for t in seq if t != self.eot_id]
        return str(self.tokenizer.decode(seq, skip_special_tokens=False))


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    eot_token: str = DEFAULT_EOT,
    min_frequency: int = 2,
    length: int | None = None,
) -> BPETokenizer:
    """Train a byte-level BPE tokenizer on an iterator of documents.

    Parameters
    ----------
    texts
        Documents (any iterable; consumed once, streamed to the trainer). Give only
        the train split: nothing about val or test may shape the merges.
    vocab_size
        Total vocabulary including the 256 byte symbols and the EOT token (>= 257).
    eot_token
        The end-of-document special token (id 0... whatever the trainer assigns; read
        ``.eot_id``).
    min_frequency
        A pair must occur this often to be merged.
    length
        Number of documents, if known (only for the trainer's progress accounting).

    Examples
    --------
    >>> tok = train_bpe(["a cat sat on a mat"] * 10, vocab_size=270)
    >>> tok.vocab_size <= 270 and tok.decode(tok.encode("a cat")) == "a cat"
    True
    """
    _check_vocab_size(vocab_size)
    tok, trainer = _new_bpe(int(vocab_size), int(min_frequency), eot_token)
    if _train(tok, trainer, texts, length) == 0:
        raise TokenizerError(
            "cannot train a tokenizer on an empty corpus: the train split has no documents."
        )
    return BPETokenizer(tok, eot_token=eot_token)


def _check_vocab_size(vocab_size: object) -> None:
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
        raise ConfigError(f"vocab_size must be an int. Got {vocab_size!r} instead.")
    if vocab_size < _MIN_VOCAB:
        raise ConfigError(
            f"vocab_size must be >= {_MIN_VOCAB} (256 byte symbols + the end-of-document token) "
            f"for a byte-level BPE. Got {vocab_size} instead."
        )
    if vocab_size > 2**32 - 1:
        raise ConfigError(f"vocab_size must fit uint32. Got {vocab_size} instead.")


def _new_bpe(vocab_size: int, min_frequency: int, eot_token: str) -> tuple[Any, Any]:
    """An untrained byte-level BPE ``Tokenizer`` and the ``BpeTrainer`` that fits it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[eot_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return tok, trainer


def _train(tok: Any, trainer: Any, texts: Iterable[str], length: int | None) -> int:
    """Stream ``texts`` to the trainer; returns how many documents it read.

    An error raised by ``texts`` itself reaches the caller as it was, not wrapped by the
    Rust trainer; a failure of the trainer is a :class:`TokenizerError`.
    """
    seen = 0
    failure: list[BaseException] = []

    def counted() -> Iterator[str]:
        nonlocal seen
        try:
            for t in texts:
                seen += 1
                # pieces, never one enormous string (see datafuel.text._pieces); cuts at
                # whitespace leave the trainer's word counts as they were
                yield from cut_document(t, MAX_PIECE_CHARS, MAX_TRAIN_WORD_CHARS)
        except Exception as exc:  # re-raised below, unwrapped from the Rust trainer
            failure.append(exc)

    try:
        tok.train_from_iterator(counted(), trainer=trainer, length=length)
    except Exception as exc:
        if failure:
            raise failure[0] from None
        raise TokenizerError(f"BPE training failed: {exc}") from exc
    if failure:
        raise failure[0]
    return seen
