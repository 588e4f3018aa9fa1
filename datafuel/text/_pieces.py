"""Cutting long documents into pieces before the tokenizer, so encoding stays bounded.

HF ``tokenizers`` holds a whole text and all its pre-tokens while it encodes it
(a 200 MB line needs more than 11 GB), and BPE on one enormous pre-token is slow to
encode and very slow to train. So a document longer than ``max_piece_chars``
characters, or with a run of more than ``max_word_chars`` characters without
whitespace (or of whitespace alone), is cut into pieces first; the pieces are encoded
one after another and their ids concatenated: still one document, one row, one EOT.

Where the cuts go:

* **At whitespace** where there is some: a cut goes just before a space, tab, CR or LF
  that is followed by a non-whitespace character. The byte-level pre-tokenizer
  (``ByteLevel``, GPT-2's regex) always starts a pre-token there (``" word"`` is one
  pre-token, and a whitespace run gives its last character to the next one), and BPE
  never merges across pre-tokens, so for datafuel's tokenizers the ids of the pieces
  concatenated are exactly the ids of the whole text.
* **Inside a run** longer than ``max_word_chars`` (no whitespace in it, or nothing but
  whitespace), and in a window of ``max_piece_chars`` with no cut point at all: at a
  character boundary (we cut ``str``, never inside a UTF-8 sequence). The ids there
  differ from those of the whole text, but decoding them still gives the text back
  exactly: byte-level BPE is lossless for any cut.

Documents of at most ``max_word_chars`` characters are never examined, and a document
that needs no cut is passed on as it is, so normal documents encode exactly as before.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from datafuel.errors import ConfigError

__all__ = ["MAX_PIECE_CHARS", "MAX_TRAIN_WORD_CHARS", "MAX_WORD_CHARS", "cut_document"]

#: Longest piece of a document given to the tokenizer at once (1 MiB of characters).
MAX_PIECE_CHARS = 1 << 20
#: Longest run without whitespace (or of whitespace only) encoded as one (64 KiB).
MAX_WORD_CHARS = 1 << 16
#: Longest such run the BPE trainer sees as one word (1 KiB): the trainer rescans a
#: whole word for every merge it makes in it, so long words cost words x merges.
MAX_TRAIN_WORD_CHARS = 1 << 10

# the pieces of a document that is cut are this long where whitespace allows: tokenizers
# encodes texts of a few KiB more than twice as fast per character as texts of 64 KiB+
_TARGET_CHARS = 1 << 13

# a cut point: a whitespace character the pre-tokenizer starts a pre-token at (both
# Python's and the tokenizer's regex call these whitespace) followed by a non-whitespace one
_CUT = re.compile(r"[ \t\n\r](?=\S)")


@functools.lru_cache(maxsize=8)
def _long_runs(max_word_chars: int) -> re.Pattern[str]:
    # each run is matched from its first character only (the lookbehinds), so the scan is linear
    n = max_word_chars + 1
    return re.compile(rf"(?<!\S)\S{{{n},}}|(?<!\s)\s{{{n},}}")


def check_piece_chars(max_piece_chars: object, name: str = "max_piece_chars") -> int:
    """``max_piece_chars`` as an int, refused unless it is an int >= 1."""
    if not isinstance(max_piece_chars, int) or isinstance(max_piece_chars, bool):
        raise ConfigError(f"{name} must be an int. Got {max_piece_chars!r} instead.")
    if max_piece_chars < 1:
        raise ConfigError(f"{name} must be >= 1. Got {max_piece_chars} instead.")
    return max_piece_chars


def needs_cut(text: str, max_piece_chars: int, max_word_chars: int) -> bool:
    """Whether :func:`cut_document` would cut ``text`` (cheap for short texts)."""
    n = len(text)
    if n <= max_word_chars:
        return n > max_piece_chars
    return n > max_piece_chars or _long_runs(max_word_chars).search(text) is not None


def _last_cut(text: str, lo: int, hi: int) -> int | None:
    """The largest cut point ``i`` with ``lo < i <= hi``, searching back from ``hi``."""
    span = 256
    while True:
        a = max(lo + 1, hi - span)
        last = None
        for m in _CUT.finditer(text, a, hi + 2):  # a match at i needs text[i + 1]
            last = m.start()
        if last is not None or a == lo + 1:
            return last
        span *= 16


def _first_cut(text: str, lo: int, hi: int) -> int:
    """The smallest cut point ``i`` with ``lo < i < hi``, else ``hi``."""
    m = _CUT.search(text, lo + 1, hi + 1)
    return hi if m is None else m.start()


def cut_document(
    text: str, max_piece_chars: int = MAX_PIECE_CHARS, max_word_chars: int = MAX_WORD_CHARS
) -> Iterator[str]:
    """Yield the pieces of ``text`` (see the module docstring); they join back to ``text``.

    Each piece has at most ``max_piece_chars`` characters (about 8 KiB where there is
    whitespace to cut at: smaller texts encode faster) and no run of more than
    ``max_word_chars`` characters without whitespace or of whitespace only. A text that
    needs no cut is yielded whole.

    >>> list(cut_document("one two three four", max_piece_chars=9))
    ['one two', ' three', ' four']
    >>> list(cut_document("abcdefgh ij", max_piece_chars=100, max_word_chars=3))
    ['abc', 'def', 'gh ij']
    """
    word = min(max_word_chars, max_piece_chars)
    if not needs_cut(text, max_piece_chars, word):
        yield text
        return
    n = len(text)
    target = min(max_piece_chars, _TARGET_CHARS)
    step = min(word, target)  # a run found too long is cut into runs of about 8 KiB
    forced = (
        p for m in _long_runs(word).finditer(text) for p in range(m.start() + step, m.end(), step)
    )
    start = 0
    nxt = next(forced, n)
    while start < n:
        if nxt - start <= target:  # the next cut inside a long run is near enough
            end = nxt
        else:
            hi = min(start + max_piece_chars, nxt)
            end = _last_cut(text, start, start + target) or _first_cut(text, start + target, hi)
        if end == nxt:
            nxt = next(forced, n)
        yield text[start:end]
        start = end
