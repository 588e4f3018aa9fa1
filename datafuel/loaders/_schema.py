"""Field declarations of a shard set: what each named column holds."""

from __future__ import annotations

import re
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
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


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
        if any((not isinstance(d, int)) or d < 0 for d in self.shape):
            raise SchemaError(
                f"a field shape is a tuple of non-negative ints. Got {self.shape!r} instead."
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
        return self.itemsize * int(np.prod(self.shape, dtype=np.int64))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype}
        if self.kind == "fixed":
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_json(cls, name: str, obj: Any, *, path: str) -> Field:
        if not isinstance(obj, dict) or "kind" not in obj or "dtype" not in obj:
            raise ManifestError(
                f"{path}: field {name!r} must be an object with 'kind' and 'dtype'. Got {obj!r}.",
                path=path,
                field=name,
            )
        try:
            return cls(obj["kind"], obj["dtype"], tuple(obj.get("shape", ())))
        except SchemaError as exc:
            raise ManifestError(f"{path}: field {name!r}: {exc}", path=path, field=name) from exc


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
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SchemaError(
            f"field names are 1-64 characters of letters, digits, '_' and '-'. Got {name!r} instead.",
            field=str(name),
        )
