"""Min-max scaling with streaming ``partial_fit``."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from datafuel._transformer import (
    DatafuelTransformer,
    column_name,
    require,
    require_close,
    require_finite,
)
from datafuel.errors import ConfigError, InputDataError

__all__ = ["MinMaxScaler"]


def _finite_number(v: Any) -> bool:
    """A real number (not a bool) that is finite as a float."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:  # an int beyond float range
        return False


def _derived(lo: np.ndarray, hi: np.ndarray, fr: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``data_range_``, ``scale_`` and ``min_`` from the minima, maxima and feature range.

    A constant column (range within rounding of zero) gets range 1: no division by zero.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        rng = hi - lo
        safe = np.where(
            rng <= 10 * np.finfo(np.float64).eps * np.maximum(np.abs(hi), 1.0), 1.0, rng
        )
        scale = (fr[1] - fr[0]) / safe
        return rng, scale, fr[0] - lo * scale


class MinMaxScaler(DatafuelTransformer):
    """Map each column's training range onto ``feature_range``.

    Running minima and maxima merge exactly, so :meth:`partial_fit` over pieces equals
    :meth:`fit` on their concatenation. NaNs are ignored when fitting and kept when
    transforming; infinities are refused. A constant column gets range 1 (no division
    by zero). float32 in, float32 out.

    Parameters
    ----------
    feature_range : tuple (min, max), default (0, 1)
    clip : bool, default False
        Clip transformed values to ``feature_range`` (values outside the training range).

    Attributes
    ----------
    data_min_, data_max_, data_range_, scale_, min_ : ndarray of shape (n_features,)
        As in sklearn: ``transform(X) = X * scale_ + min_``.
    n_samples_seen_ : ndarray of shape (n_features,)

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.scale import MinMaxScaler
    >>> MinMaxScaler().fit_transform(np.array([[1.0], [3.0], [2.0]])).ravel()
    array([0. , 1. , 0.5])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = (
        "data_min_",
        "data_max_",
        "data_range_",
        "scale_",
        "min_",
        "n_samples_seen_",
    )
    _count_attrs: ClassVar[tuple[str, ...]] = ("n_samples_seen_",)
    _inf_is_missing: ClassVar[bool] = False
    n_samples_seen_: np.ndarray
    data_min_: np.ndarray
    data_max_: np.ndarray
    data_range_: np.ndarray

    def __init__(self, feature_range: tuple[float, float] = (0, 1), *, clip: bool = False) -> None:
        self.feature_range = feature_range
        self.clip = clip

    def fit(self, X: Any, y: Any = None) -> MinMaxScaler:
        """Learn each column's minimum and maximum (NaNs ignored)."""
        for name in self._fitted_attrs:
            self.__dict__.pop(name, None)
        return self.partial_fit(X)

    def _validate_params(self) -> None:
        fr = self.feature_range
        if (
            not isinstance(fr, (tuple, list))
            or len(fr) != 2
            or not all(_finite_number(v) for v in fr)
            or not fr[0] < fr[1]
            or not np.isfinite(float(fr[1]) - float(fr[0]))
        ):
            raise ConfigError(
                f"feature_range must be two finite numbers (min, max) with min < max. Got {fr!r} instead."
            )
        if not isinstance(self.clip, (bool, np.bool_)):
            raise ConfigError(f"clip must be a bool. Got {self.clip!r} instead.")

    def _check_fitted_state(self) -> None:
        require(
            self.n_samples_seen_ >= 1,
            self,
            "n_samples_seen_",
            "at least 1 (fit refuses an empty column)",
        )
        for name in ("data_min_", "data_max_", "data_range_", "scale_", "min_"):
            require_finite(self, name)
        require(
            self.data_min_ <= self.data_max_, self, "data_min_", "<= data_max_ at the same index"
        )
        rng, scale, low = _derived(self.data_min_, self.data_max_, self.feature_range)
        require_close(self, "data_range_", rng, "data_max_ - data_min_")
        require_close(self, "scale_", scale, "the feature range over the data range")
        require_close(self, "min_", low, "feature_range[0] - data_min_ * scale_")

    def partial_fit(self, X: Any, y: Any = None) -> MinMaxScaler:
        """Merge one more chunk into the running minimum and maximum of each column."""
        self._validate_params()
        first = not hasattr(self, "data_min_")
        X = self._validate(X, reset=first, copy=False, fitting=True)
        if X.shape[0] and not np.isnan(X).any():  # fast path: no missing value in this chunk
            nb = np.full(X.shape[1], X.shape[0], dtype=np.int64)
            lo = X.min(axis=0).astype(np.float64)
            hi = X.max(axis=0).astype(np.float64)
        else:
            present = ~np.isnan(X)
            nb = present.sum(axis=0).astype(np.int64)
            lo = np.where(present, X, np.inf).min(axis=0, initial=np.inf).astype(np.float64)
            hi = np.where(present, X, -np.inf).max(axis=0, initial=-np.inf).astype(np.float64)
        if not first:
            nb = nb + self.n_samples_seen_
            lo = np.minimum(lo, self.data_min_)
            hi = np.maximum(hi, self.data_max_)
        if (nb == 0).any():
            j = int(np.flatnonzero(nb == 0)[0])
            raise InputDataError(
                f"column {column_name(self, j)} has no value in the training data; its "
                "range is undefined (drop the column).",
                field=str(j),
            )
        self.n_samples_seen_ = nb
        self.data_min_, self.data_max_ = lo, hi
        self.data_range_, self.scale_, self.min_ = _derived(lo, hi, self.feature_range)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``X * scale_ + min_`` per column, in the input's float dtype."""
        X = self._validate(X, reset=False)
        X *= self.scale_.astype(X.dtype)
        X += self.min_.astype(X.dtype)
        if self.clip:
            np.clip(X, self.feature_range[0], self.feature_range[1], out=X)
        return X

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Undo :meth:`transform`."""
        X = self._validate(X, reset=False)
        X -= self.min_.astype(X.dtype)
        X /= self.scale_.astype(X.dtype)
        return X
