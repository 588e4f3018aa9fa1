"""Export a token shard set to the flat ``.bin`` files nanoGPT and llm.c train from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np

from datafuel.errors import ConfigError, CorruptShardError, SchemaError

__all__ = ["LLMC_MAGIC", "export_bin", "read_bin"]

#: llm.c token file header: 256 int32, [magic, version, num_tokens, 0...], then the tokens.
LLMC_MAGIC = 20240520
_HEADER_INTS = 256

Style = Literal["nanogpt", "llmc"]


def export_bin(
    shards: Any,
    path: str | os.PathLike[str],
    *,
    style: Style = "nanogpt",
    field: str = "tokens",
    chunk_tokens: int = 1 << 24,
) -> int:
    """Write every token of a shard set, in order, to one flat file; returns the token count.

    ``style="nanogpt"``: raw little-endian tokens, nothing else, as nanoGPT's
    ``prepare.py`` writes them (read with ``np.memmap(path, dtype=np.uint16)``; the
    dtype is the shard set's, uint32 for vocabularies of 65,535 ids or more).
    ``style="llmc"``: llm.c's format: a 1024-byte header of 256 int32
    ``[20240520, version, num_tokens, 0, ...]`` (version 1 = uint16 tokens,
    version 2 = uint32 tokens), then the tokens. Documents keep their end-of-document
    tokens, which is how both projects separate documents. Written in chunks of
    ``chunk_tokens`` (bounded memory), to a temp file renamed into place.

    Parameters
    ----------
    shards
        A :class:`datafuel.loaders.ShardSet` or a shard-set directory.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from datafuel.loaders import ShardWriter, ragged
    >>> d = tempfile.mkdtemp()
    >>> with ShardWriter(d, {"tokens": ragged("uint16")}) as w:
    ...     w.write({"tokens": [np.array([5, 6, 0], np.uint16), np.array([7, 0], np.uint16)]})
    >>> export_bin(d, os.path.join(d, "train.bin"))
    5
    >>> read_bin(os.path.join(d, "train.bin")).tolist()
    [5, 6, 0, 7, 0]
    """
    from datafuel.loaders import ShardSet

    if style not in ("nanogpt", "llmc"):
        raise ConfigError(f"style must be 'nanogpt' or 'llmc'. Got {style!r} instead.")
    ds = shards if isinstance(shards, ShardSet) else ShardSet(shards)
    stream = ds.token_stream(field)
    dtype = np.dtype(stream.dtype).newbyteorder("<")
    n = stream.num_tokens
    if style == "llmc" and n > 2**31 - 1:
        raise SchemaError(
            f"llm.c headers hold the token count in an int32; {n} tokens do not fit. "
            "Export in several files or use style='nanogpt'.",
            field=field,
        )
    _write_tokens(stream, Path(path), style, dtype, chunk_tokens)
    return n


def _llmc_header(num_tokens: int, dtype: np.dtype[Any]) -> bytes:
    """llm.c's 1024-byte header: ``[magic, version (1: uint16, 2: uint32), num_tokens, 0...]``."""
    header = np.zeros(_HEADER_INTS, dtype="<i4")
    header[0] = LLMC_MAGIC
    header[1] = 1 if dtype.itemsize == 2 else 2
    header[2] = num_tokens
    return header.tobytes()


def _write_tokens(
    stream: Any, out: Path, style: Style, dtype: np.dtype[Any], chunk_tokens: int
) -> None:
    """Every token of ``stream`` (after llm.c's header) to ``out``, via a fsynced temp file."""
    n = stream.num_tokens
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as fh:
        if style == "llmc":
            fh.write(_llmc_header(n, dtype))
        for start in range(0, n, chunk_tokens):
            fh.write(
                stream.read(start, min(chunk_tokens, n - start)).astype(dtype, copy=False).tobytes()
            )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out)


def read_bin(path: str | os.PathLike[str], *, dtype: str = "uint16") -> np.ndarray:
    """Read a file written by :func:`export_bin` (llm.c headers are detected; memory-mapped).

    ``dtype`` applies to headerless nanoGPT files only (llm.c files say theirs).
    """
    p = Path(path)
    size = p.stat().st_size
    if size >= 4 * _HEADER_INTS:
        head = np.fromfile(p, dtype="<i4", count=_HEADER_INTS)
        if head[0] == LLMC_MAGIC and head[1] in (1, 2):
            dt = np.dtype("<u2") if head[1] == 1 else np.dtype("<u4")
            n = int(head[2])
            if size != 4 * _HEADER_INTS + n * dt.itemsize:
                raise CorruptShardError(
                    f"{p}: llm.c header says {n} tokens but the file has {size} bytes.", path=p
                )
            if n == 0:
                return np.zeros(0, dt)
            return np.memmap(p, dtype=dt, mode="r", offset=4 * _HEADER_INTS)
    dt = np.dtype(dtype).newbyteorder("<")
    if size % dt.itemsize:
        raise CorruptShardError(
            f"{p}: {size} bytes is not a whole number of {dtype} tokens.", path=p
        )
    if size == 0:
        return np.zeros(0, dt)
    return np.memmap(p, dtype=dt, mode="r")
