"""Winsorization: clip each column to caps learned on the training data."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from datafuel._checks import check_fraction
from datafuel._transformer import DatafuelTransformer, column_name, require, require_finite
from datafuel.errors import ConfigError, InputDataError

__all__ = ["Winsorizer"]


def _caps(col: np.ndarray, lower: float, upper: float) -> tuple[float, float]:
    """The order statistics ``scipy.stats.mstats.winsorize`` clips to (NaNs ignored)."""
    v = col[~np.isnan(col)]
    n = v.size
    lo_idx = int(lower * n)
    hi_idx = n - int((1.0 - upper) * n) - 1
    hi_idx = max(hi_idx, lo_idx)
    part = np.partition(v, (lo_idx, hi_idx))
    return float(part[lo_idx]), float(part[hi_idx])


class Winsorizer(DatafuelTransformer):
    """Clip every column to per-column caps learned on the training split.

    The caps are the same order statistics ``scipy.stats.mstats.winsorize`` uses with
    ``limits=(lower, 1 - upper)``: of the ``n`` non-missing training values sorted,
    the lower cap is the ``int(lower * n)``-th and the upper cap the
    ``n - round((1 - upper) * n) - 1``-th. NaNs are neither counted nor moved;
    infinities are treated as missing.

    Parameters
    ----------
    lower, upper : float, default 0.01 and 0.99
        Quantile levels of the caps, ``0 <= lower < upper <= 1``.

    Attributes
    ----------
    lower_caps_, upper_caps_ : ndarray of shape (n_features,)
        The caps of each column.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import Winsorizer
    >>> X = np.r_[np.arange(99.0), 999_000_000.0][:, None]
    >>> float(Winsorizer(lower=0.0, upper=0.99).fit_transform(X).max())
    98.0
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("lower_caps_", "upper_caps_")

    def __init__(self, lower: float = 0.01, upper: float = 0.99) -> None:
        self.lower = lower
        self.upper = upper

    def _validate_params(self) -> None:
        lo, hi = self.lower, self.upper
        check_fraction("lower", lo)
        check_fraction("upper", hi)
        if not lo < hi:
            raise ConfigError(f"lower must be < upper. Got lower={lo!r}, upper={hi!r}.")

    def _check_fitted_state(self) -> None:
        require_finite(self, "lower_caps_")
        require_finite(self, "upper_caps_")
        require(
            self.lower_caps_ <= self.upper_caps_,
            self,
            "lower_caps_",
            "<= upper_caps_ at the same index (fit orders the caps)",
        )

    def fit(self, X: Any, y: Any = None) -> Winsorizer:
        """Learn the caps of each column from the non-missing training values."""
        self._validate_params()
        lo, hi = self.lower, self.upper
        X = self._validate(X, reset=True)
        d = X.shape[1]
        self.lower_caps_ = np.empty(d)
        self.upper_caps_ = np.empty(d)
        has_nan = np.isnan(X).any(axis=0)
        if X.shape[0] and not has_nan.any():
            n = X.shape[0]
            lo_idx = int(lo * n)
            hi_idx = max(n - int((1.0 - hi) * n) - 1, lo_idx)
            part = np.partition(X, (lo_idx, hi_idx), axis=0)
            self.lower_caps_[:] = part[lo_idx]
            self.upper_caps_[:] = part[hi_idx]
            return self
        for j in range(d):
            if np.isnan(X[:, j]).all():
                raise InputDataError(
                    f"column {column_name(self, j)} has no value in the training data; "
                    "no caps can be learned (drop the column).",
                    field=str(j),
                )
            self.lower_caps_[j], self.upper_caps_[j] = _caps(X[:, j], lo, hi)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Clip each column to its caps; NaN stays NaN."""
        X = self._validate(X, reset=False)
        np.clip(X, self.lower_caps_.astype(X.dtype), self.upper_caps_.astype(X.dtype), out=X)
        return X
