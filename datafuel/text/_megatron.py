"""Export a token shard set to Megatron-LM's indexed dataset (``PREFIX.bin`` + ``PREFIX.idx``).

The layout (``megatron/core/datasets/indexed_dataset.py``, the "MMIDIDX" format that
``tools/preprocess_data.py`` writes and ``IndexedDataset(PREFIX)`` reads):

``PREFIX.bin``
    every token of every sequence, concatenated, in the index's dtype.
``PREFIX.idx``, little-endian
    ``b"MMIDIDX\\x00\\x00"`` (9 bytes), version ``uint64 = 1``, dtype code ``uint8``
    (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16),
    sequence count ``uint64``, document count ``uint64``; then per sequence its
    length (``int32``), then per sequence its byte offset in ``.bin`` (``int64``), then
    the document indices (``int64``, ``documents + 1`` of them: ``[0, ..., sequences]``,
    document ``d`` being sequences ``[idx[d], idx[d+1])``).

Each datafuel row (one document, ending with its end-of-document token, as
``preprocess_data.py --append-eod`` writes it) is one sequence and one document.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from datafuel.errors import ConfigError, SchemaError

__all__ = ["MEGATRON_DTYPE_CODES", "MEGATRON_INDEX_HEADER", "export_megatron"]

#: the first 9 bytes of every Megatron ``.idx`` file
MEGATRON_INDEX_HEADER = b"MMIDIDX\x00\x00"
#: Megatron's ``DType`` codes (there is no uint32: uint32 token streams are written as int32)
MEGATRON_DTYPE_CODES = {
    "uint8": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "float64": 6,
    "float32": 7,
    "uint16": 8,
}
_INT32_MAX = 2**31 - 1


def export_megatron(
    shards: Any,
    prefix: str | os.PathLike[str],
    *,
    field: str = "tokens",
    chunk_tokens: int = 1 << 24,
    chunk_documents: int = 1 << 20,
) -> int:
    """Write a token shard set as Megatron-LM's ``PREFIX.bin`` + ``PREFIX.idx``; returns the token count.

    Every row (document) becomes one Megatron sequence and one document, in storage
    order, with its end-of-document token kept. uint16 token streams are written as
    uint16 (code 8); uint32 streams as int32 (code 4, Megatron's dtype for
    vocabularies of 65,500 ids or more). Train with ``--data-path PREFIX``. Written in
    chunks (bounded memory besides the shard set's own document offsets), each file
    to a temp file that is fsynced and renamed into place (``.bin`` first).

    Parameters
    ----------
    shards
        A :class:`datafuel.loaders.ShardSet` or a shard-set directory.
    prefix
        The output path without extension (Megatron's ``--data-path`` convention).
    field
        The ragged token field.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from datafuel.loaders import ShardWriter, ragged
    >>> d = tempfile.mkdtemp()
    >>> with ShardWriter(d, {"tokens": ragged("uint16")}) as w:
    ...     w.write({"tokens": [np.array([5, 6, 0], np.uint16), np.array([7, 0], np.uint16)]})
    >>> export_megatron(d, os.path.join(d, "train_text_document"))
    5
    >>> with open(os.path.join(d, "train_text_document.idx"), "rb") as f:
    ...     f.read(9)
    b'MMIDIDX\\x00\\x00'
    """
    from datafuel.loaders import ShardSet

    p = Path(prefix)
    if p.suffix in (".bin", ".idx"):
        raise ConfigError(
            f"prefix must not end with .bin or .idx (both files are written from it, as "
            f"Megatron's --data-path names them). Got {str(prefix)!r} instead.",
        )
    for name, value in (("chunk_tokens", chunk_tokens), ("chunk_documents", chunk_documents)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an int >= 1. Got {value!r} instead.")
    ds = shards if isinstance(shards, ShardSet) else ShardSet(shards)
    stream = ds.token_stream(field)
    dtype = np.dtype("<u2") if np.dtype(stream.dtype).itemsize == 2 else np.dtype("<i4")
    starts = np.asarray(stream.doc_starts, dtype=np.int64)
    longest = int(np.diff(starts).max()) if len(starts) > 1 else 0
    if longest > _INT32_MAX:
        raise SchemaError(
            f"Megatron's index holds sequence lengths as int32; a document of {longest} "
            "tokens does not fit.",
            field=field,
        )
    _write_bin(stream, p.with_name(p.name + ".bin"), dtype, chunk_tokens, field)
    _write_idx(starts, p.with_name(p.name + ".idx"), dtype, chunk_documents)
    return stream.num_tokens


def _write_bin(stream: Any, out: Path, dtype: np.dtype[Any], chunk_tokens: int, field: str) -> None:
    n = stream.num_tokens
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        for start in range(0, n, chunk_tokens):
            chunk = stream.read(start, min(chunk_tokens, n - start))
            if dtype.kind == "i" and chunk.size and int(chunk.max()) > _INT32_MAX:
                tmp.unlink()
                raise SchemaError(
                    f"token id {int(chunk.max())} does not fit Megatron's int32 token dtype.",
                    field=field,
                )
            fh.write(chunk.astype(dtype, copy=False).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)


def _write_idx(starts: np.ndarray, out: Path, dtype: np.dtype[Any], chunk: int) -> None:
    """The ``.idx`` from the global token offset of each document (``documents + 1`` of them)."""
    docs = len(starts) - 1
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(MEGATRON_INDEX_HEADER)
        fh.write(struct.pack("<Q", 1))
        fh.write(struct.pack("<B", MEGATRON_DTYPE_CODES[dtype.name]))
        fh.write(struct.pack("<Q", docs))  # sequences: one per document
        fh.write(struct.pack("<Q", docs + 1))  # document indices, with the leading 0
        for a in range(0, docs, chunk):
            fh.write(np.diff(starts[a : a + chunk + 1]).astype("<i4").tobytes())
        for a in range(0, docs, chunk):  # where each sequence starts: not the final total
            fh.write((starts[a : min(a + chunk, docs)] * dtype.itemsize).astype("<i8").tobytes())
        for a in range(0, docs + 1, chunk):
            fh.write(np.arange(a, min(a + chunk, docs + 1), dtype="<i8").tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)
