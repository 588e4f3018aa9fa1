"""What every datafuel transformer shares: input conversion, validation, JSON state.

The transformers follow scikit-learn's protocol (parameters stored untouched in
``__init__``, validation in ``fit``, learned state in attributes ending in ``_``),
accept numpy arrays, pandas DataFrames and pyarrow Tables, and can turn their fitted
state into plain JSON-able values (:meth:`DatafuelTransformer.get_state`) for
:class:`datafuel.Recipe`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import FLOAT_DTYPES, validate_data

from datafuel.errors import (
    ConfigError,
    DatafuelError,
    InputDataError,
    NonFiniteError,
    NotFittedError,
    SchemaError,
)

__all__ = [
    "DatafuelTransformer",
    "arrow_to_frame",
    "check_keys",
    "column_name",
    "decode_array",
    "decode_value",
    "encode_value",
    "found",
    "is_int",
    "json_type",
    "require",
    "require_close",
    "require_finite",
]


def arrow_to_frame(X: Any) -> Any:
    """Turn a pyarrow Table/RecordBatch into a float64 pandas DataFrame (numpy without pandas).

    Nulls become NaN. A column that is not numeric (strings, dates, lists) is refused
    with an :class:`~datafuel.errors.InputDataError` naming it.
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return X
    if not isinstance(X, (pa.Table, pa.RecordBatch)):
        return X
    cols = []
    for name, col in zip(X.column_names, X.columns, strict=True):
        t = col.type
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_null(t)
        ):
            raise InputDataError(
                f"column {name!r} has type {t}, not a number; transformers take numeric "
                "columns only (encode or drop it first).",
                field=name,
            )
        arr = col.to_numpy(zero_copy_only=False) if len(col) else np.empty(0)
        cols.append(np.asarray(arr, dtype=np.float64))
    data = np.column_stack(cols) if cols else np.empty((X.num_rows, 0))
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is optional
        return data
    return pd.DataFrame(data, columns=[str(c) for c in X.column_names])


def column_name(est: Any, j: int) -> str:
    """The name of feature ``j`` as fitted (its index when fitted without names)."""
    names = getattr(est, "feature_names_in_", None)
    return repr(str(names[j])) if names is not None else f"#{j}"


def encode_value(value: Any) -> Any:
    """A fitted attribute as plain JSON values (arrays become dtype/shape/data)."""
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"dtype": "str", "shape": list(value.shape), "data": [str(v) for v in value]}
        return {
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "data": value.ravel().tolist(),
        }
    if isinstance(value, np.generic):
        return value.item()
    return value


def decode_value(value: Any) -> Any:
    """Inverse of :func:`encode_value` (no checks: :meth:`DatafuelTransformer.from_state` checks)."""
    if isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}:
        if value["dtype"] == "str":
            return np.asarray(value["data"], dtype=object)
        return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    return value


# -- strict reading of saved state ----------------------------------------------
#: dtypes a fitted float attribute may have (float32 input keeps float32 statistics)
_FLOAT_DTYPES = ("<f8", "<f4")
#: dtype of a fitted count (``n_samples_seen_``)
_COUNT_DTYPES = ("<i8",)
_INT64_MAX = int(np.iinfo(np.int64).max)


def json_type(value: Any) -> str:
    """The JSON name of a value's type (for "expected ... found ..." messages)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, np.ndarray):
        return f"array of dtype {value.dtype} and shape {value.shape}"
    return type(value).__name__


def found(value: Any) -> str:
    """``value`` described for a message: its JSON type and a short repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{json_type(value)} {text}"


def is_int(value: Any) -> bool:
    """True for an int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_keys(
    obj: Any,
    key: str,
    required: set[str] | frozenset[str],
    optional: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``obj`` if it is a JSON object with every key in ``required`` and no unknown key."""
    if not isinstance(obj, dict):
        raise SchemaError(f"{key} must be an object. Found {found(obj)}.", field=key)
    bad = sorted(str(k) for k in obj if not isinstance(k, str) or k not in required | optional)
    if bad:
        raise SchemaError(
            f"{key} has unknown key {bad[0]!r}; expected only {sorted(required | optional)}.",
            field=f"{key}.{bad[0]}",
        )
    missing = sorted(required - set(obj))
    if missing:
        raise SchemaError(
            f"{key} is missing key {missing[0]!r} (expected keys {sorted(required | optional)}).",
            field=f"{key}.{missing[0]}",
        )
    return obj


def _check_elements(data: list[Any], key: str, dtype: str) -> None:
    if dtype == "str":
        ok = [isinstance(v, str) for v in data]
        what = "strings"
    elif dtype in _COUNT_DTYPES:
        ok = [is_int(v) and -_INT64_MAX <= v <= _INT64_MAX for v in data]
        what = "64-bit ints"
    else:
        ok = [isinstance(v, float) or (is_int(v) and abs(v) <= 2**1023) for v in data]
        what = "numbers"
    if not all(ok):
        j = ok.index(False)
        raise SchemaError(
            f"{key}.data[{j}] must be one of {len(data)} {what}. Found {found(data[j])}.",
            field=key,
        )


def decode_array(
    value: Any, key: str, dtypes: tuple[str, ...], shape: tuple[int | None, ...]
) -> np.ndarray:
    """An array saved by :func:`encode_value` (or already loaded), its dtype and shape checked.

    ``shape`` gives the expected size of each axis (``None``: any size >= 1).
    Anything else raises :class:`~datafuel.errors.SchemaError` naming ``key``.
    """
    expect = (
        "("
        + ", ".join("n" if d is None else str(d) for d in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )
    if isinstance(value, np.ndarray):
        arr = value
        if arr.dtype.str not in dtypes and not (arr.dtype == object and "str" in dtypes):
            raise SchemaError(
                f"{key} must have dtype {' or '.join(dtypes)}. Found {arr.dtype.str}.", field=key
            )
    else:
        check_keys(value, key, {"dtype", "shape", "data"})
        dtype, dims, data = value["dtype"], value["shape"], value["data"]
        if dtype not in dtypes:
            raise SchemaError(
                f"{key}.dtype must be {' or '.join(map(repr, dtypes))}. Found {found(dtype)}.",
                field=key,
            )
        if not isinstance(dims, list) or not all(is_int(d) and 0 <= d <= _INT64_MAX for d in dims):
            raise SchemaError(
                f"{key}.shape must be a list of non-negative ints. Found {found(dims)}.", field=key
            )
        if not isinstance(data, list):
            raise SchemaError(f"{key}.data must be a list. Found {found(data)}.", field=key)
        if len(data) != int(np.prod(dims, dtype=object)):
            raise SchemaError(
                f"{key}.data holds {len(data)} values, but its shape {dims} needs "
                f"{int(np.prod(dims, dtype=object))}.",
                field=key,
            )
        _check_elements(data, key, dtype)
        if dtype == "str":
            arr = np.asarray(data, dtype=object).reshape(dims)
        else:
            with np.errstate(over="ignore"):  # float32 overflow becomes inf, refused later
                arr = np.asarray(data, dtype=np.dtype(dtype)).reshape(dims)
    if arr.ndim != len(shape) or any(
        (d is None and n < 1) or (d is not None and n != d)
        for n, d in zip(arr.shape, shape, strict=False)
    ):
        raise SchemaError(
            f"{key} must have shape {expect}. Found shape {tuple(arr.shape)}.", field=key
        )
    return arr


def require_finite(est: Any, name: str, why: str = "") -> None:
    """Refuse a fitted array holding NaN or an infinity (fit never leaves one there)."""
    arr = getattr(est, name)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        j = int(bad[0])
        raise NonFiniteError(
            f"fitted.{name}[{j}] must be finite{why}. Found {arr.ravel()[j].item()!r}.", field=name
        )


def require(ok: np.ndarray, est: Any, name: str, rule: str) -> None:
    """Refuse a fitted array where ``ok`` is False, naming the first bad index."""
    bad = np.flatnonzero(~np.asarray(ok, dtype=bool))
    if bad.size:
        j = int(bad[0])
        raise SchemaError(
            f"fitted.{name}[{j}] must be {rule}. Found {getattr(est, name).ravel()[j].item()!r}.",
            field=name,
        )


def require_close(est: Any, name: str, expected: np.ndarray, rule: str) -> None:
    """Refuse a derived fitted array that differs from what fit computes from the others."""
    arr = getattr(est, name)
    with np.errstate(all="ignore"):
        ok = np.isclose(arr, expected, rtol=1e-12, atol=0.0) | (arr == expected)
    bad = np.flatnonzero(~ok)
    if bad.size:
        j = int(bad[0])
        raise SchemaError(
            f"fitted.{name}[{j}] must be {rule} ({expected.ravel()[j].item()!r}), as fit computes it. "
            f"Found {arr.ravel()[j].item()!r}.",
            field=name,
        )


class DatafuelTransformer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Base of the clean/scale transformers (sklearn protocol plus JSON state)."""

    #: names of the fitted attributes that make up the state saved in a recipe
    _fitted_attrs: ClassVar[tuple[str, ...]] = ()
    #: fitted attributes big enough to go in a ``.npy`` file beside the recipe
    _array_attrs: ClassVar[tuple[str, ...]] = ()
    #: fitted attributes holding counts (int64); the other fitted arrays hold floats
    _count_attrs: ClassVar[tuple[str, ...]] = ()
    #: replace +-inf with NaN (treated as missing) instead of refusing it
    _inf_is_missing: ClassVar[bool] = True

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # -- validation -----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "the training split before using it."
            )

    def _validate(
        self, X: Any, *, reset: bool, copy: bool = True, fitting: bool | None = None
    ) -> np.ndarray:
        X = arrow_to_frame(X)
        if not reset:
            self._check_fitted()
            shape = getattr(X, "shape", None)
            n = shape[1] if shape is not None and len(shape) == 2 else None
            if n is not None and n != self.n_features_in_:
                raise SchemaError(
                    f"X has {n} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input (it was fitted on that many)."
                )
        try:
            out = validate_data(
                self,
                X,
                reset=reset,
                dtype=FLOAT_DTYPES,
                ensure_all_finite=False,
                copy=copy,
                force_writeable=True,
            )
        except ValueError as exc:
            if "could not convert" in str(exc) or "dtype" in str(exc):
                raise InputDataError(
                    f"{type(self).__name__} takes numeric data only: {exc}"
                ) from exc
            raise
        fitting = reset if fitting is None else fitting
        if not self._inf_is_missing and not fitting:
            return out  # scalers: infinities are refused when fitting, passed through after
        inf = np.isinf(out)
        if inf.any():
            if self._inf_is_missing:
                out[inf] = np.nan
            else:
                j = int(np.flatnonzero(inf.any(axis=0))[0])
                raise NonFiniteError(
                    f"column {column_name(self, j) if not reset else f'#{j}'} holds an "
                    f"infinity; {type(self).__name__} needs finite values or NaN (scrub "
                    "infinities to missing first).",
                    field=str(j),
                )
        return out

    # -- JSON state -----------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Parameters and fitted attributes as JSON-able values (arrays marked by name)."""
        self._check_fitted()
        fitted: dict[str, Any] = {}
        for name in ("n_features_in_", "feature_names_in_", *self._fitted_attrs):
            if hasattr(self, name):
                value = getattr(self, name)
                fitted[name] = value if name in self._array_attrs else encode_value(value)
        return {"params": self.get_params(deep=False), "fitted": fitted}

    @classmethod
    def from_state(
        cls,
        state: Any,
        *,
        where: str = "",
        path: str | os.PathLike[str] | None = None,
    ) -> DatafuelTransformer:
        """Rebuild a fitted transformer from :meth:`get_state` output, checked as strictly as ``fit``.

        The parameters go through the checks ``fit`` runs (:meth:`_validate_params`);
        every fitted attribute must have its declared dtype and shape and values
        ``fit`` could have produced (finite statistics, positive scales, ordered caps).

        Parameters
        ----------
        state : dict
            ``{"params": {...}, "fitted": {...}}``, arrays encoded or already loaded.
        where : str
            Prefix of every error message (the file and step, for a recipe).
        path : path-like, optional
            The file the state comes from, stored on the error.

        Raises
        ------
        SchemaError
            An unknown, missing or mistyped key, or an array of the wrong dtype or shape.
        ConfigError
            A parameter ``fit`` would refuse.
        NonFiniteError
            NaN or an infinity where ``fit`` only gives finite values.
        """
        try:
            return cls._restore(state)
        except DatafuelError as exc:
            raise type(exc)(
                f"{where}{exc.message}",
                path=path if path is not None else exc.path,
                field=exc.field,
            ) from exc

    @classmethod
    def _restore(cls, state: Any) -> DatafuelTransformer:
        check_keys(state, "state", {"params", "fitted"})
        params = check_keys(state["params"], "params", set(cls._get_param_names()))
        est = cls(**params)
        try:
            est._validate_params()
        except ConfigError as exc:
            raise ConfigError(f"params: {exc.message}", field=exc.field) from exc
        names = est._state_attrs()
        fitted = check_keys(
            state["fitted"], "fitted", {"n_features_in_", *names}, {"feature_names_in_"}
        )
        n = fitted["n_features_in_"]
        if not is_int(n) or not 1 <= n <= 2**31:
            raise SchemaError(
                f"fitted.n_features_in_ must be an int >= 1. Found {found(n)}.",
                field="n_features_in_",
            )
        est.n_features_in_ = n
        if "feature_names_in_" in fitted:
            names_in = decode_array(
                fitted["feature_names_in_"], "fitted.feature_names_in_", ("str",), (n,)
            )
            if not all(isinstance(v, str) for v in names_in):
                raise SchemaError(
                    "fitted.feature_names_in_ must hold strings.", field="feature_names_in_"
                )
            est.feature_names_in_ = names_in
        for name in names:
            dtypes = _COUNT_DTYPES if name in cls._count_attrs else _FLOAT_DTYPES
            shape: tuple[int | None, ...] = (None, n) if name in cls._array_attrs else (n,)
            setattr(est, name, decode_array(fitted[name], f"fitted.{name}", dtypes, shape))
        est._check_fitted_state()
        est._after_load()
        return est

    def _validate_params(self) -> None:
        """Refuse parameters outside what the transformer accepts (``ConfigError``).

        The one rule per parameter: ``fit`` runs it, and so does :meth:`from_state`.
        """

    def _state_attrs(self) -> tuple[str, ...]:
        """The fitted attributes (besides ``n_features_in_``) a state must hold, given the parameters."""
        return self._fitted_attrs

    def _check_fitted_state(self) -> None:
        """Refuse loaded fitted values that ``fit`` could not have produced (no-op by default)."""

    def _after_load(self) -> None:
        """Rebuild private caches after :meth:`from_state` (no-op by default)."""
