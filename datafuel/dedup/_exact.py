"""Exact duplicates: content keys of texts, decoded images and table rows.

Two records are exact duplicates when their keys are equal. Keys are 128 bits
(blake2b of the normalised content, or two independent 64-bit mixes for table
rows), so unequal content gets equal keys with probability about ``n**2 / 2**129``.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from datafuel.errors import InputDataError

from ._mix import mix64

__all__ = ["exact_normalize", "key_labels", "row_keys", "text_key"]


def exact_normalize(text: str) -> str:
    """Unicode NFC with every run of whitespace one space, ends stripped; case kept."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def text_key(text: str) -> bytes:
    """16-byte blake2b of the normalised text (:func:`exact_normalize`)."""
    return hashlib.blake2b(exact_normalize(text).encode("utf-8"), digest_size=16).digest()


def key_labels(keys: Sequence[bytes] | np.ndarray) -> np.ndarray:
    """Each record's cluster under equal keys: the index of its key's first occurrence."""
    arr = np.asarray(keys)
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.int64)
    if arr.ndim == 2:  # rows of words (row_keys)
        _, first, inverse = np.unique(arr, axis=0, return_index=True, return_inverse=True)
    else:
        _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    return np.asarray(first, np.int64)[np.asarray(inverse).reshape(-1)]


def _value_words(values: Any, name: str) -> np.ndarray:
    """A column as one uint64 word per row: numbers by value, text by its blake2b."""
    import pyarrow as pa

    col = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    t = col.type
    nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        x = np.asarray(col.cast(pa.float64()).to_numpy(zero_copy_only=False), np.float64).copy()
        x[x == 0] = 0.0  # -0.0 is 0.0
        x[np.isnan(x)] = math.nan
        words = x.view(np.uint64).copy()
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        enc = col.dictionary_encode() if not pa.types.is_dictionary(t) else col
        uniq = enc.dictionary.cast(pa.string()).to_pylist()
        table = np.array(
            [
                int.from_bytes(hashlib.blake2b(str(u).encode(), digest_size=8).digest(), "little")
                for u in uniq
            ]
            or [0],
            np.uint64,
        )
        idx = np.asarray(enc.indices.fill_null(0).to_numpy(zero_copy_only=False), np.int64)
        words = table[idx]
    elif pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_time(t):
        words = np.asarray(col.cast(pa.int64()).fill_null(0).to_numpy(), np.int64).view(np.uint64)
    else:
        raise InputDataError(
            f"column {name!r} has type {t}, which exact row keys cannot compare; give "
            "dedup_key columns of numbers, booleans, text or dates.",
            field=name,
        )
    return np.where(nulls, np.uint64(0x6E756C6C), words)


def row_keys(table: Any, columns: Sequence[str]) -> np.ndarray:
    """``(rows, 2)`` uint64 keys of a pyarrow table's rows over ``columns``.

    Numbers compare by value (``1`` equals ``1.0``; ``-0.0`` equals ``0.0``; every NaN
    equals every NaN), text by its exact UTF-8, a missing value equals only a missing
    value.
    """
    if not columns:
        raise InputDataError("exact row keys need at least one column; got none.")
    h1 = np.full(table.num_rows, np.uint64(0x243F6A8885A308D3), np.uint64)
    h2 = np.full(table.num_rows, np.uint64(0x13198A2E03707344), np.uint64)
    with np.errstate(over="ignore"):
        for k, name in enumerate(columns):
            if name not in table.column_names:
                raise InputDataError(
                    f"key column {name!r} is not in the table (columns: {table.column_names}).",
                    field=name,
                )
            w = _value_words(table.column(name), name)
            h1 = mix64(h1 ^ w)
            h2 = mix64(h2 ^ mix64(w + np.uint64(2 * k + 1)))
    return np.stack([h1, h2], axis=1)
