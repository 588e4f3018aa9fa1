"""What every datafuel transformer shares: input conversion, validation, JSON state.

The transformers follow scikit-learn's protocol (parameters stored untouched in
``__init__``, validation in ``fit``, learned state in attributes ending in ``_``),
accept numpy arrays, pandas DataFrames and pyarrow Tables, and can turn their fitted
state into plain JSON-able values (:meth:`DatafuelTransformer.get_state`) for
:class:`datafuel.Recipe`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
from sklearn.utils.validation import FLOAT_DTYPES, validate_data

from datafuel.errors import InputDataError, NonFiniteError, NotFittedError, SchemaError

__all__ = ["DatafuelTransformer", "arrow_to_frame", "column_name", "decode_value", "encode_value"]


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
    """Inverse of :func:`encode_value`."""
    if isinstance(value, dict) and set(value) == {"dtype", "shape", "data"}:
        if value["dtype"] == "str":
            return np.asarray(value["data"], dtype=object)
        return np.asarray(value["data"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    return value


class DatafuelTransformer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """Base of the clean/scale transformers (sklearn protocol plus JSON state)."""

    #: names of the fitted attributes that make up the state saved in a recipe
    _fitted_attrs: ClassVar[tuple[str, ...]] = ()
    #: fitted attributes big enough to go in a ``.npy`` file beside the recipe
    _array_attrs: ClassVar[tuple[str, ...]] = ()
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
    def from_state(cls, state: dict[str, Any]) -> DatafuelTransformer:
        """Rebuild a fitted transformer from :meth:`get_state` output."""
        est = cls(**state["params"])
        for name, value in state["fitted"].items():
            setattr(est, name, decode_value(value))
        est._after_load()
        return est

    def _after_load(self) -> None:
        """Rebuild private caches after :meth:`from_state` (no-op by default)."""
