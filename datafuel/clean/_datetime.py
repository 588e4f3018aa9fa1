"""Datetime expansion: year, month, day, day of week and time elapsed since a train origin."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.utils.validation import check_is_fitted

from datafuel._transformer import DatafuelTransformer, column_name, require_finite
from datafuel.errors import ConfigError, InputDataError, SchemaError

__all__ = ["PARTS", "DateExpander", "is_datetime_type"]

#: the features each date column becomes, in order
PARTS = ("year", "month", "day", "dayofweek", "elapsed")
_UNITS = {"seconds": 1.0, "days": 86400.0}


def is_datetime_type(t: Any) -> bool:
    """Whether a pyarrow type is a timestamp or a date (what :class:`DateExpander` reads)."""
    import pyarrow as pa

    return bool(pa.types.is_timestamp(t) or pa.types.is_date(t))


def _arrow_seconds(col: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    if not is_datetime_type(col.type):
        raise InputDataError(
            f"column {name!r} has type {col.type}, not a timestamp or date; DateExpander "
            "takes timestamp/date columns only.",
            field=name,
        )
    if pa.types.is_timestamp(col.type) and col.type.tz is not None:
        col = col.cast(pa.timestamp(col.type.unit))  # the UTC instant, as stored
    values = col.cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype="datetime64[us]")


def _as_datetimes(X: Any) -> tuple[np.ndarray, list[str] | None]:
    """``datetime64[us]`` matrix (NaT for missing) and the column names (None for arrays)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(X, (pa.Table, pa.RecordBatch)):
        arrow_names = [str(c) for c in X.column_names]
        cols = [_arrow_seconds(c, n) for c, n in zip(X.columns, arrow_names, strict=True)]
        arr = np.stack(cols, axis=1) if cols else np.empty((X.num_rows, 0), "datetime64[us]")
        return arr, arrow_names
    names: list[str] | None = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a pandas DataFrame
        names = [str(c) for c in X.columns]
        try:
            import pandas as pd

            X = (
                np.stack(
                    [
                        np.asarray(pd.to_datetime(X[c], utc=True).dt.tz_localize(None))
                        for c in X.columns
                    ],
                    axis=1,
                )
                if len(X.columns)
                else np.empty((len(X), 0), "datetime64[us]")
            )
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"DateExpander takes dates or timestamps only: {exc}") from exc
    try:
        arr = np.asarray(X, dtype="datetime64[us]")
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"DateExpander takes dates or timestamps only: {exc}") from exc
    if arr.ndim != 2:
        raise SchemaError(f"DateExpander expects a 2-D input. Got shape {arr.shape}.")
    return arr, names


class DateExpander(DatafuelTransformer):
    """Turn each date or timestamp column into five numeric features.

    For each column, in order: ``year``, ``month`` (1-12), ``day`` (1-31),
    ``dayofweek`` (Monday 0 to Sunday 6) and ``elapsed``, the time since the column's
    earliest training value (``origin_``) in ``unit``, as fastai's ``add_datepart``.
    Time-zone-aware timestamps are read as their UTC instant. A missing value (NaT,
    null) gives NaN in all five, for the imputer that follows.

    Parameters
    ----------
    unit : {"days", "seconds"}, default "days"
        Unit of ``elapsed``.

    Attributes
    ----------
    origin_ : ndarray of shape (n_features,)
        Earliest training value of each column, in seconds since 1970-01-01 UTC.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import DateExpander
    >>> X = np.array([["2024-03-01"], ["2024-03-04"]], dtype="datetime64[D]")
    >>> DateExpander().fit(X).transform(X).astype(int)  # 2024-03-01 was a Friday
    array([[2024,    3,    1,    4,    0],
           [2024,    3,    4,    0,    3]])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("origin_",)

    origin_: np.ndarray

    def __init__(self, unit: str = "days") -> None:
        self.unit = unit

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []
        return tags

    def _validate_params(self) -> None:
        if not isinstance(self.unit, str) or self.unit not in _UNITS:
            raise ConfigError(f"unit must be 'days' or 'seconds'. Got {self.unit!r} instead.")

    def _check_fitted_state(self) -> None:
        require_finite(self, "origin_", " (the earliest training value of each column)")

    def _read(self, X: Any, *, reset: bool) -> np.ndarray:
        arr, names = _as_datetimes(X)
        if reset:
            self.n_features_in_ = arr.shape[1]
            if names is not None:
                self.feature_names_in_ = np.asarray(names, dtype=object)
            else:
                self.__dict__.pop("feature_names_in_", None)
            return arr
        self._check_fitted()
        if arr.shape[1] != self.n_features_in_:
            raise SchemaError(
                f"X has {arr.shape[1]} features, but DateExpander is expecting "
                f"{self.n_features_in_} features as input (it was fitted on that many)."
            )
        fitted = getattr(self, "feature_names_in_", None)
        if fitted is not None and names is not None and list(fitted) != names:
            raise SchemaError(
                f"X has columns {names}, but DateExpander was fitted on {list(fitted)}."
            )
        return arr

    def fit(self, X: Any, y: Any = None) -> DateExpander:
        """Learn each column's earliest training value (the origin of ``elapsed``)."""
        self._validate_params()
        arr = self._read(X, reset=True)
        origin = np.empty(arr.shape[1])
        for j in range(arr.shape[1]):
            present = arr[~np.isnat(arr[:, j]), j]
            if present.size == 0:
                raise InputDataError(
                    f"column {column_name(self, j)} has no value in the training data; no "
                    "origin can be learned (drop the column).",
                    field=str(j),
                )
            origin[j] = present.min().astype("datetime64[us]").astype(np.int64) / 1e6
        self.origin_ = origin
        return self

    def transform(self, X: Any) -> np.ndarray:
        """float64 ``(n_samples, 5 * n_features)``: the :data:`PARTS` of each column."""
        arr = self._read(X, reset=False)
        out = np.full((arr.shape[0], len(PARTS) * arr.shape[1]), np.nan)
        for j in range(arr.shape[1]):
            t = arr[:, j]
            ok = ~np.isnat(t)
            v = t[ok]
            days = v.astype("datetime64[D]")
            months = v.astype("datetime64[M]")
            block = out[ok, len(PARTS) * j : len(PARTS) * (j + 1)]
            block[:, 0] = v.astype("datetime64[Y]").astype(np.int64) + 1970
            block[:, 1] = months.astype(np.int64) % 12 + 1
            block[:, 2] = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
            block[:, 3] = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
            seconds = v.astype(np.int64) / 1e6
            block[:, 4] = (seconds - self.origin_[j]) / _UNITS[self.unit]
            out[ok, len(PARTS) * j : len(PARTS) * (j + 1)] = block
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``<column>_<part>`` for each column and each of :data:`PARTS`."""
        check_is_fitted(self, "origin_")
        names = getattr(self, "feature_names_in_", None)
        if input_features is not None:
            names = np.asarray(input_features, dtype=object)
        if names is None:
            names = np.asarray([f"x{j}" for j in range(self.n_features_in_)], dtype=object)
        return np.asarray([f"{n}_{p}" for n in names for p in PARTS], dtype=object)
