"""Field declarations of a shard set: what each named column holds."""

from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from datafuel.errors import ManifestError, SchemaError

__all__ = ["Field", "bytes_field", "fixed", "ragged"]

FieldKind = Literal["fixed", "ragged", "bytes"]

#: dtypes a shard may hold; stored little-endian.
ALLOWED_DTYPES = (
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
)
#: what a field name must match (FORMAT.md): it is part of every file name of the field
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)
#: the largest count or byte size a shard set may hold: numpy and mmap offsets are int64
MAX_INT = 2**63 - 1
#: at most this many dimensions per row, so a batch (one more) stays within numpy's 32
MAX_DIMS = 31


@dataclass(frozen=True)
class Field:
    """One named column of a shard set.

    ``fixed`` fields hold one array of ``shape`` per row (a scalar when ``shape`` is
    ``()``), stored as a contiguous ``rows x item`` block. ``ragged`` fields hold a
    1-D array of any length per row (documents of tokens); ``bytes`` fields hold an
    opaque byte string per row (encoded JPEG files). Both variable-length kinds
    keep an offsets file beside the data.
    """

    kind: FieldKind
    dtype: str
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "ragged", "bytes"):
            raise SchemaError(
                f"field kind must be 'fixed', 'ragged' or 'bytes'. Got {self.kind!r} instead."
            )
        if self.dtype not in ALLOWED_DTYPES:
            raise SchemaError(
                f"field dtype must be one of {', '.join(ALLOWED_DTYPES)}. Got {self.dtype!r} instead."
            )
        if self.kind == "bytes" and self.dtype != "uint8":
            raise SchemaError(f"a 'bytes' field is uint8. Got dtype {self.dtype!r} instead.")
        if self.kind != "fixed" and self.shape:
            raise SchemaError(
                f"only 'fixed' fields have a shape. Got shape {self.shape} for a {self.kind!r} field."
            )
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in self.shape):
            raise SchemaError(
                f"a field shape is a tuple of non-negative ints. Got {self.shape!r} instead."
            )
        if len(self.shape) > MAX_DIMS:
            raise SchemaError(
                f"a field shape has at most {MAX_DIMS} dimensions. Got {len(self.shape)} instead."
            )
        if self.row_extent > MAX_INT:
            raise SchemaError(
                f"a row of shape {list(self.shape)} of {self.dtype} spans "
                f"{self.row_extent} bytes (zero dimensions counted as 1), more than 2**63 - 1."
            )

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return (
            np.dtype(self.dtype).newbyteorder("<")
            if np.dtype(self.dtype).itemsize > 1
            else np.dtype(self.dtype)
        )

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def row_bytes(self) -> int:
        """Bytes per row of a fixed field (0 for variable-length fields)."""
        if self.kind != "fixed":
            return 0
        return self.itemsize * math.prod(self.shape)  # exact: no int64 wrap-around

    @property
    def row_extent(self) -> int:
        """Bytes per row with zero dimensions counted as 1: what numpy bounds an array by."""
        return self.itemsize * math.prod(max(d, 1) for d in self.shape)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype}
        if self.kind == "fixed":
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_json(cls, name: str, obj: Any, *, path: str) -> Field:
        """The field ``fields.<name>`` of the manifest at ``path``; ManifestError naming the key."""
        where = f"{path}: fields.{name}"
        if not isinstance(obj, dict) or "kind" not in obj or "dtype" not in obj:
            raise ManifestError(
                f"{where} must be an object with 'kind' and 'dtype'. Got {reprlib.repr(obj)}.",
                path=path,
                field=name,
            )
        for key in ("kind", "dtype"):
            if not isinstance(obj[key], str):
                raise ManifestError(
                    f"{where}.{key} must be a string. Got {reprlib.repr(obj[key])}.",
                    path=path,
                    field=name,
                )
        shape = obj.get("shape", [])
        if not isinstance(shape, list) or any(
            isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= MAX_INT for d in shape
        ):
            raise ManifestError(
                f"{where}.shape must be a list of integers in [0, 2**63 - 1]. "
                f"Got {reprlib.repr(shape)}.",
                path=path,
                field=name,
            )
        try:
            return cls(obj["kind"], obj["dtype"], tuple(shape))  # type: ignore[arg-type]
        except SchemaError as exc:
            raise ManifestError(f"{where}: {exc}", path=path, field=name) from exc


def fixed(dtype: str | np.dtype[Any] | type, shape: tuple[int, ...] | int = ()) -> Field:
    """A fixed-shape field, e.g. ``fixed("float32", (20,))`` or ``fixed("int64")``."""
    if isinstance(shape, int):
        shape = (shape,)
    return Field("fixed", np.dtype(dtype).name, tuple(int(s) for s in shape))


def ragged(dtype: str | np.dtype[Any] | type) -> Field:
    """A variable-length 1-D field, e.g. token documents ``ragged("uint16")``."""
    return Field("ragged", np.dtype(dtype).name)


def bytes_field() -> Field:
    """A variable-length byte-string field (encoded images, raw documents)."""
    return Field("bytes", "uint8")


def check_field_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise SchemaError(
            f"field names are 1-64 characters of letters, digits, '_' and '-'. Got {name!r} instead.",
            field=str(name),
        )
