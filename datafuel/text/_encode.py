"""Parallel, bounded-memory encoding of a document stream into token arrays."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from datafuel.errors import ConfigError

from ._pieces import MAX_PIECE_CHARS, check_piece_chars
from ._tokenizer import BPETokenizer

__all__ = ["encode_documents"]

T = TypeVar("T")


def _batches(
    items: Iterable[tuple[T, str]], batch_chars: int
) -> Iterator[tuple[list[T], list[str]]]:
    tags: list[T] = []
    texts: list[str] = []
    size = 0
    for tag, text in items:
        tags.append(tag)
        texts.append(text)
        size += len(text)
        if size >= batch_chars:
            yield tags, texts
            tags, texts, size = [], [], 0
    if texts:
        yield tags, texts


def encode_documents(
    tokenizer: BPETokenizer,
    items: Iterable[tuple[T, str]],
    *,
    batch_chars: int = 1 << 22,
    prefetch: int = 4,
    workers: int = 2,
    max_piece_chars: int = MAX_PIECE_CHARS,
) -> Iterator[tuple[list[T], list[np.ndarray]]]:
    """Encode ``(tag, text)`` pairs in order, each document followed by the EOT id.

    Documents are grouped into batches of about ``batch_chars`` characters; each batch
    goes to ``encode_batch`` (HF tokenizers encodes it on its own Rust thread pool,
    with the GIL released) on one of ``workers`` background threads while this thread
    reads the next batch, so reading, encoding and whatever consumes the output
    overlap. Two workers let one batch encode while the previous one is turned into
    arrays (which needs the GIL). At most ``prefetch`` batches are in flight, so
    memory stays bounded by about ``(prefetch + 1) * batch_chars`` characters of text
    plus their tokens, however large the corpus. Threads, not processes: tokenizers'
    pool must not be forked.

    A document longer than ``max_piece_chars`` characters (default 1 MiB), or with a
    run of more than 64 KiB without whitespace, is cut into pieces before the
    tokenizer (at whitespace where it can be, which leaves the ids unchanged) and
    their ids are concatenated: still one array per document, one EOT at its end,
    and ``tokenizer.decode`` of it gives the document back. See
    :meth:`BPETokenizer.encode_batch`.

    Yields ``(tags, token_arrays)`` per batch, in input order; every array ends with
    ``tokenizer.eot_id`` and has ``tokenizer.dtype``.

    Examples
    --------
    >>> from datafuel.text import train_bpe
    >>> tok = train_bpe(["to be or not to be"] * 8, vocab_size=280)
    >>> [(tags, [a.tolist()[-1] for a in arrs]) for tags, arrs in encode_documents(tok, [("a", "to be"), ("b", "or not")])]
    [(['a', 'b'], [0, 0])]
    """
    if batch_chars < 1:
        raise ConfigError(f"batch_chars must be >= 1. Got {batch_chars} instead.")
    if prefetch < 1:
        raise ConfigError(f"prefetch must be >= 1. Got {prefetch} instead.")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1. Got {workers} instead.")
    check_piece_chars(max_piece_chars)
    pending: deque[tuple[list[Any], Future[list[np.ndarray]]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datafuel-encode") as pool:
        try:
            for tags, texts in _batches(items, batch_chars):
                pending.append(
                    (
                        tags,
                        pool.submit(
                            tokenizer.encode_batch,
                            texts,
                            append_eot=True,
                            max_piece_chars=max_piece_chars,
                        ),
                    )
                )
                while len(pending) > prefetch:
                    t, fut = pending.popleft()
                    yield t, fut.result()
            while pending:
                t, fut = pending.popleft()
                yield t, fut.result()
        finally:
            for _, fut in pending:
                fut.cancel()
