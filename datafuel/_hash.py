"""The one stable hash: bytes and a seed to a position in ``[0, 1)``.

Used wherever a record's split must depend only on its own content and the seed
(``split(..., key=)``, the text build's document split): the same record lands in
the same split on every run, on every machine, however the data grows.
blake2b-64 keyed by the seed as 8 little-endian signed bytes (any int64 seed).
"""

from __future__ import annotations

import hashlib

__all__ = ["HASH_DESCRIPTION", "stable_fraction"]

HASH_DESCRIPTION = "blake2b-64 keyed by the seed (int64, little-endian), mapped to [0, 1)"


def stable_fraction(data: bytes, seed: int) -> float:
    """``data``'s position in ``[0, 1)`` for ``seed``.

    >>> 0.0 <= stable_fraction(b"hello", 0) < 1.0
    True
    >>> stable_fraction(b"hello", 0) == stable_fraction(b"hello", 0) != stable_fraction(b"hello", 1)
    True
    """
    key = int(seed).to_bytes(8, "little", signed=True)
    h = hashlib.blake2b(data, digest_size=8, key=key).digest()
    return int.from_bytes(h, "little") / 2.0**64
