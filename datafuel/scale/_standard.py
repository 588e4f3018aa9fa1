"""Standardisation with exact streaming statistics (count, mean, M2 per column)."""

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

__all__ = ["StandardScaler"]


def _constant(var: np.ndarray, mean: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Columns whose variance is within rounding of zero (sklearn's rule)."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


def _scale(var: np.ndarray, mean: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The standard deviation, 1.0 for a constant column (no division by zero)."""
    scale = np.sqrt(var)
    scale[_constant(var, mean, n)] = 1.0
    return scale


class StandardScaler(DatafuelTransformer):
    """Centre each column on its training mean and divide by its training standard deviation.

    Statistics are merged chunk by chunk (Chan et al.'s update of count, mean and the
    sum of squared deviations ``M2``), so :meth:`partial_fit` over pieces gives the
    same result as :meth:`fit` on their concatenation, to rounding. NaNs are ignored
    when fitting and kept when transforming; infinities are refused (scrub them to
    missing first). A constant column gets scale 1 (no division by zero).
    float32 input gives float32 output; statistics are kept in float64.

    Parameters
    ----------
    with_mean, with_std : bool, default True
        Whether to centre and whether to scale.

    Attributes
    ----------
    mean_, var_, scale_ : ndarray of shape (n_features,)
    n_samples_seen_ : ndarray of shape (n_features,)
        Non-missing values seen per column.
    m2_ : ndarray of shape (n_features,)
        Sum of squared deviations from the mean (what the streaming merge needs).

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.scale import StandardScaler
    >>> s = StandardScaler().partial_fit(np.array([[0.0], [2.0]])).partial_fit(np.array([[4.0]]))
    >>> float(s.mean_[0]), float(s.var_[0])
    (2.0, 2.6666666666666665)
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("mean_", "var_", "scale_", "n_samples_seen_", "m2_")
    _count_attrs: ClassVar[tuple[str, ...]] = ("n_samples_seen_",)
    _inf_is_missing: ClassVar[bool] = False
    n_samples_seen_: np.ndarray
    mean_: np.ndarray
    m2_: np.ndarray
    var_: np.ndarray

    def __init__(self, *, with_mean: bool = True, with_std: bool = True) -> None:
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X: Any, y: Any = None) -> StandardScaler:
        """Learn mean and standard deviation of each column (NaNs ignored)."""
        for name in self._fitted_attrs:
            self.__dict__.pop(name, None)
        return self.partial_fit(X)

    def _validate_params(self) -> None:
        for name in ("with_mean", "with_std"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"{name} must be a bool. Got {getattr(self, name)!r} instead.")

    def _check_fitted_state(self) -> None:
        n = self.n_samples_seen_
        require(n >= 1, self, "n_samples_seen_", "at least 1 (fit refuses an empty column)")
        for name in ("mean_", "m2_", "var_", "scale_"):
            require_finite(self, name)
        require(self.m2_ >= 0, self, "m2_", ">= 0 (a sum of squares)")
        require_close(self, "var_", self.m2_ / n, "m2_ / n_samples_seen_")
        require_close(
            self,
            "scale_",
            _scale(self.var_, self.mean_, n),
            "sqrt(var_), or 1.0 for a constant column",
        )

    def partial_fit(self, X: Any, y: Any = None) -> StandardScaler:
        """Merge one more chunk into the running count, mean and M2 of each column."""
        self._validate_params()
        first = not hasattr(self, "m2_")
        X = self._validate(X, reset=first, copy=False, fitting=True)
        if not np.isnan(X).any():  # fast path: no missing value in this chunk
            nb = np.full(X.shape[1], X.shape[0], dtype=np.int64)
            mb = X.mean(axis=0, dtype=np.float64)
            dev = X - mb
            m2b = np.einsum("ij,ij->j", dev, dev)
        else:
            present = ~np.isnan(X)
            nb = present.sum(axis=0).astype(np.int64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mb = np.where(present, X, 0.0).sum(axis=0, dtype=np.float64) / nb
            mb = np.where(nb > 0, mb, 0.0)
            dev = np.where(present, X - mb, 0.0).astype(np.float64)
            m2b = np.einsum("ij,ij->j", dev, dev)
        if first:
            n, mean, m2 = nb, mb, m2b
        else:
            na, ma, m2a = self.n_samples_seen_, self.mean_, self.m2_
            n = na + nb
            with np.errstate(invalid="ignore", divide="ignore"):
                delta = mb - ma
                mean = np.where(n > 0, ma + delta * (nb / np.maximum(n, 1)), 0.0)
                m2 = m2a + m2b + delta * delta * (na * nb / np.maximum(n, 1))
        if (n == 0).any():
            j = int(np.flatnonzero(n == 0)[0])
            raise InputDataError(
                f"column {column_name(self, j)} has no value in the training data; its "
                "mean is undefined (drop the column).",
                field=str(j),
            )
        self.n_samples_seen_ = n
        self.mean_ = mean
        self.m2_ = m2
        self.var_ = m2 / n
        self.scale_ = _scale(self.var_, self.mean_, n)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(X - mean_) / scale_`` per column, in the input's float dtype."""
        X = self._validate(X, reset=False)
        if self.with_mean:
            X -= self.mean_.astype(X.dtype)
        if self.with_std:
            X /= self.scale_.astype(X.dtype)
        return X

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Undo :meth:`transform`."""
        X = self._validate(X, reset=False)
        if self.with_std:
            X *= self.scale_.astype(X.dtype)
        if self.with_mean:
            X += self.mean_.astype(X.dtype)
        return X
