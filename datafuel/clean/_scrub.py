"""Scrub infinities to missing, and drop rows that are mostly missing."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from datafuel._checks import check_fraction
from datafuel._transformer import DatafuelTransformer

__all__ = ["DropSparseRows", "ScrubInfinite"]


class ScrubInfinite(DatafuelTransformer):
    """Turn +inf and -inf into NaN so that imputers treat them as missing.

    Stateless apart from the feature count. (Every datafuel ``clean`` transformer
    already treats infinities as missing; this step makes it explicit in a recipe or
    a sklearn ``Pipeline`` in front of other estimators.)

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import ScrubInfinite
    >>> ScrubInfinite().fit_transform(np.array([[1.0, np.inf], [-np.inf, 2.0]]))
    array([[ 1., nan],
           [nan,  2.]])
    """

    def fit(self, X: Any, y: Any = None) -> ScrubInfinite:
        """Record the number of features."""
        self._validate(X, reset=True, copy=False)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Return a copy of ``X`` with every infinity replaced by NaN."""
        return self._validate(X, reset=False)


class DropSparseRows(DatafuelTransformer):
    """Drop rows whose fraction of missing (NaN or infinite) entries exceeds a limit.

    A row filter, not a column transformer: ``transform`` returns fewer rows, so use
    it first in a :class:`datafuel.Recipe` (which drops the matching target rows too)
    or call :meth:`keep_mask` yourself. It is not meant for ``sklearn.pipeline.Pipeline``
    with a target.

    Parameters
    ----------
    max_missing_ratio : float, default 0.5
        Rows with a missing fraction strictly above this are dropped; in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import DropSparseRows
    >>> X = np.array([[1.0, 2.0, 3.0], [np.nan, np.nan, 1.0]])
    >>> DropSparseRows(max_missing_ratio=0.5).fit_transform(X)
    array([[1., 2., 3.]])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, max_missing_ratio: float = 0.5) -> None:
        self.max_missing_ratio = max_missing_ratio

    def _validate_params(self) -> None:
        check_fraction("max_missing_ratio", self.max_missing_ratio)

    def fit(self, X: Any, y: Any = None) -> DropSparseRows:
        """Validate ``max_missing_ratio`` and record the number of features."""
        self._validate_params()
        self._validate(X, reset=True, copy=False)
        return self

    def keep_mask(self, X: Any) -> np.ndarray:
        """Boolean mask of the rows ``transform`` keeps."""
        X = self._validate(X, reset=False, copy=False)
        if X.shape[1] == 0:
            return np.ones(X.shape[0], dtype=bool)
        return np.isnan(X).mean(axis=1) <= self.max_missing_ratio

    def transform(self, X: Any) -> np.ndarray:
        """Return the rows of ``X`` that are not too sparse (infinities become NaN)."""
        X = self._validate(X, reset=False)
        if X.shape[1] == 0:
            return X
        return X[np.isnan(X).mean(axis=1) <= self.max_missing_ratio]
