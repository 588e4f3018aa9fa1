"""The per-record work of each build kind as engine units, and the split writers using them.

Each ``*_unit`` function is the body of one work unit (it runs on a Ray worker): the
exact per-record code of the local build, applied to a run of records in canonical
order. Each ``write_*`` function is what a build calls for one split instead of its
``ShardWriter`` loop when the engine is not local. Stage code is imported inside the
functions, so ``datafuel.engine`` stays light to import.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel.loaders import Field

from ._base import Engine
from ._plan import unit_ranges

__all__ = [
    "SharedTokenizer",
    "image_check",
    "image_unit",
    "table_unit",
    "text_unit",
    "write_image_split",
    "write_table_split",
    "write_text_splits",
]

#: Table rows per work unit (also the local build's write batch).
TABLE_UNIT_ROWS = 65536
#: Image files per work unit (the local build's load chunk).
IMAGE_UNIT_FILES = 256


# -- table ------------------------------------------------------------------------------
def table_unit(shared: tuple[Any, ...], payload: tuple[Any, Any]) -> dict[str, np.ndarray]:
    """Recipe transform + one-hot of a run of rows: ``{"x": float32, "y": ...}``."""
    import pyarrow as pa

    from datafuel.tabular import _one_hot

    recipe, numeric, categories, labels = shared
    part, y_part = payload
    x_num, y_out, keep = recipe.transform_rows(part.select(numeric), y_part)
    x_cat, _ = _one_hot(part.filter(pa.array(keep)), categories)
    batch = {"x": np.concatenate([x_num.astype(np.float32), x_cat], axis=1)}
    if y_out is not None:
        batch["y"] = y_out.astype(np.int64 if labels else np.float32)
    return batch


def write_table_split(
    engine: Engine,
    directory: str | os.PathLike[str],
    part: Any,
    y_part: np.ndarray | None,
    *,
    recipe: Any,
    numeric: Sequence[str],
    categories: Mapping[str, Sequence[str]],
    labels: bool,
    shard_bytes: int,
    provenance: Mapping[str, Any],
    metadata: Mapping[str, Any],
    unit_rows: int | None = None,
) -> int:
    """Write one table split through ``engine``; returns the rows written.

    The recipe was fitted on the driver (exactly as the local build fits it); each
    unit transforms ``unit_rows`` rows of ``part`` (rows are independent once the
    recipe is fitted) and the shard cut is the local one, so the shards are the
    local engine's bytes.
    """
    width = len(numeric) + sum(len(v) for v in categories.values())
    fields: dict[str, Field] = {"x": Field("fixed", "float32", (width,))}
    if y_part is not None:
        fields["y"] = Field("fixed", "int64" if labels else "float32")
    shared = (recipe, list(numeric), {k: list(v) for k, v in categories.items()}, labels)

    def payloads() -> Iterable[tuple[Any, Any]]:
        for s, e in unit_ranges(part.num_rows, unit_rows or TABLE_UNIT_ROWS):
            rows = part.take(np.arange(s, e))  # a copy: a slice would ship the whole table
            yield rows, None if y_part is None else np.ascontiguousarray(y_part[s:e])

    manifest = engine.write_units(
        directory,
        fields,
        table_unit,
        payloads(),
        shared=shared,
        shard_bytes=shard_bytes,
        provenance=provenance,
        metadata=metadata,
    )
    return int(manifest["total_rows"])


# -- images -----------------------------------------------------------------------------
def image_check(root: Path, item: tuple[Path, int]) -> Any:
    """Validate one file (full decode) as the local build does: its DecodeError or None."""
    from datafuel.errors import DecodeError
    from datafuel.vision._build import _result_or_error

    res = _result_or_error(item[0], root, None)
    return res if isinstance(res, DecodeError) else None


def image_unit(
    shared: tuple[Path, int | None], items: Sequence[tuple[Path, int]]
) -> dict[str, Any]:
    """Load (and re-encode with ``max_side``) a run of files: ``{"jpeg", "label"}``."""
    from datafuel.vision._build import _load

    root, max_side = shared
    return {
        "jpeg": [_load(path, root, max_side) for path, _ in items],
        "label": np.array([label for _, label in items], np.int64),
    }


def write_image_split(
    engine: Engine,
    directory: str | os.PathLike[str],
    items: Sequence[tuple[Path, int]],
    *,
    root: Path,
    max_side: int | None,
    fields: Mapping[str, Field],
    shard_bytes: int,
    provenance: Mapping[str, Any],
    metadata: Mapping[str, Any],
    unit_files: int | None = None,
) -> int:
    """Write one image split (files in split order) through ``engine``; returns the rows."""
    manifest = engine.write_units(
        directory,
        fields,
        image_unit,
        (list(items[s:e]) for s, e in unit_ranges(len(items), unit_files or IMAGE_UNIT_FILES)),
        shared=(root, max_side),
        shard_bytes=shard_bytes,
        provenance=provenance,
        metadata=metadata,
    )
    return int(manifest["total_rows"])


# -- text -------------------------------------------------------------------------------
_TOKENIZERS: dict[str, Any] = {}  # per worker process: fingerprint -> BPETokenizer


class SharedTokenizer:
    """A tokenizer shipped to workers as its JSON, built once per worker process.

    Pickling a ``BPETokenizer`` rebuilds it on every task that receives it; this
    keeps the JSON (cheap to ship) and caches the built tokenizer by fingerprint.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.fingerprint = str(tokenizer.fingerprint)
        self.eot_token = str(tokenizer.eot_token)
        self.json = str(tokenizer.tokenizer.to_str())

    def get(self) -> Any:
        tok = _TOKENIZERS.get(self.fingerprint)
        if tok is None:
            from tokenizers import Tokenizer

            from datafuel.text import BPETokenizer

            tok = BPETokenizer(
                Tokenizer.from_str(self.json),
                eot_token=self.eot_token,
                fingerprint=self.fingerprint,
            )
            _TOKENIZERS.clear()  # one build at a time per worker: keep only the latest
            _TOKENIZERS[self.fingerprint] = tok
        return tok


def text_unit(shared: SharedTokenizer, texts: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Encode a run of documents, each followed by the end-of-document id."""
    return {"tokens": shared.get().encode_batch(list(texts), append_eot=True)}


def write_text_splits(
    engine: Engine,
    outdir: str | os.PathLike[str],
    names: Sequence[str],
    tagged: Iterable[tuple[int, str]],
    *,
    tokenizer: Any,
    split_names: Sequence[str],
    shard_bytes: int,
    provenance: Mapping[str, Any],
    metadata: Mapping[str, Any],
    batch_chars: int = 1 << 21,
    before_close: Callable[[], None] | None = None,
) -> dict[str, dict[str, int]]:
    """Encode ``(split index, text)`` documents through ``engine`` into ``outdir/<split>``.

    Documents are read and routed on the driver (one stream, in corpus order, so
    errors name the same file and line as the local build); each unit encodes about
    ``batch_chars`` characters of one split's documents. Returns documents and tokens
    per split. ``before_close`` runs once every document was read, before any
    manifest is written (a check that raises leaves no manifest behind).
    """
    field = {"tokens": Field("ragged", str(np.dtype(tokenizer.dtype)))}
    sinks = {
        n: engine.shard_sink(
            Path(outdir) / n,
            field,
            text_unit,
            shared=SharedTokenizer(tokenizer),
            shard_bytes=shard_bytes,
            provenance={**provenance, "split": n},
            metadata=metadata,
        )
        for n in names
    }
    pending: dict[str, list[str]] = {n: [] for n in names}
    chars = dict.fromkeys(names, 0)
    try:
        for k, text in tagged:
            n = split_names[k]
            pending[n].append(text)
            chars[n] += len(text)
            if chars[n] >= batch_chars:
                sinks[n].submit(pending[n])
                pending[n], chars[n] = [], 0
        for n in names:
            if pending[n]:
                sinks[n].submit(pending[n])
        if before_close is not None:
            before_close()
        manifests = {n: sinks[n].close() for n in names}
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    itemsize = np.dtype(tokenizer.dtype).itemsize
    return {
        n: {
            "documents": int(m["total_rows"]),
            "tokens": sum(s["files"]["tokens"]["bin"]["bytes"] for s in m["shards"]) // itemsize,
        }
        for n, m in manifests.items()
    }
