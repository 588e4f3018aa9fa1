"""Mean / median imputation (the mean streams with ``partial_fit``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.utils.metaestimators import available_if

from datafuel._transformer import (
    DatafuelTransformer,
    column_name,
    require,
    require_close,
    require_finite,
)
from datafuel.errors import ConfigError, InputDataError

__all__ = ["SimpleImputer"]


class SimpleImputer(DatafuelTransformer):
    """Replace missing (NaN or infinite) entries by the training mean or median of the column.

    Parameters
    ----------
    strategy : {"mean", "median"}, default "mean"
        The statistic learned per column on the training data. ``"mean"`` can be
        fitted in pieces with :meth:`partial_fit` (data larger than memory).

    Attributes
    ----------
    statistics_ : ndarray of shape (n_features,)
        The fill value of each column.
    n_samples_seen_ : ndarray of shape (n_features,)
        Non-missing values seen per column.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import SimpleImputer
    >>> SimpleImputer(strategy="median").fit_transform(np.array([[1.0], [np.nan], [5.0], [2.0]]))
    array([[1.],
           [2.],
           [5.],
           [2.]])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("statistics_", "n_samples_seen_", "sum_")
    _count_attrs: ClassVar[tuple[str, ...]] = ("n_samples_seen_",)

    sum_: np.ndarray
    n_samples_seen_: np.ndarray

    def __init__(self, strategy: str = "mean") -> None:
        self.strategy = strategy

    def _validate_params(self) -> None:
        if not isinstance(self.strategy, str) or self.strategy not in ("mean", "median"):
            raise ConfigError(
                f"strategy must be 'mean' or 'median'. Got {self.strategy!r} instead."
            )

    def _state_attrs(self) -> tuple[str, ...]:
        if self.strategy == "mean":
            return self._fitted_attrs
        return ("statistics_", "n_samples_seen_")  # the median does not stream: no sum_

    def _check_fitted_state(self) -> None:
        require(
            self.n_samples_seen_ >= 1,
            self,
            "n_samples_seen_",
            "at least 1 (fit refuses an empty column)",
        )
        require_finite(self, "statistics_", " (the fill value of each column)")
        if self.strategy == "mean":
            require_finite(self, "sum_")
            with np.errstate(all="ignore"):
                expected = self.sum_ / self.n_samples_seen_
            require_close(self, "statistics_", expected, "sum_ / n_samples_seen_")

    def _check_empty(self, counts: np.ndarray) -> None:
        if (counts == 0).any():
            j = int(np.flatnonzero(counts == 0)[0])
            raise InputDataError(
                f"column {column_name(self, j)} has no value in the training data; its "
                f"{self.strategy} is undefined (drop the column).",
                field=str(j),
            )

    def fit(self, X: Any, y: Any = None) -> SimpleImputer:
        """Learn each column's mean or median, ignoring missing values."""
        self._validate_params()
        for name in ("statistics_", "n_samples_seen_", "sum_"):
            self.__dict__.pop(name, None)
        if self.strategy == "mean":
            return self.partial_fit(X)  # type: ignore[no-any-return]
        X = self._validate(X, reset=True)
        counts = (~np.isnan(X)).sum(axis=0)
        self._check_empty(counts)
        self.statistics_ = np.nanmedian(X, axis=0) if X.shape[0] else np.zeros(X.shape[1])
        self.n_samples_seen_ = counts.astype(np.int64)
        return self

    @available_if(lambda self: self.strategy == "mean")
    def partial_fit(self, X: Any, y: Any = None) -> SimpleImputer:
        """Update the running column means with one more chunk (``strategy="mean"`` only)."""
        self._validate_params()
        first = not hasattr(self, "sum_")
        X = self._validate(X, reset=first)
        present = ~np.isnan(X)
        counts = present.sum(axis=0).astype(np.int64)
        sums = np.where(present, X, 0.0).sum(axis=0, dtype=np.float64)
        if not first:
            counts = counts + self.n_samples_seen_
            sums = sums + self.sum_
        self._check_empty(counts)
        self.n_samples_seen_ = counts
        self.sum_ = sums
        self.statistics_ = sums / counts
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Fill every missing entry with its column's statistic."""
        X = self._validate(X, reset=False)
        missing = np.isnan(X)
        if missing.any():
            X[missing] = np.broadcast_to(self.statistics_.astype(X.dtype), X.shape)[missing]
        return X
