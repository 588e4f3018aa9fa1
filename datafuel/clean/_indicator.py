"""Missing-value indicators: one 0/1 column per feature that had a missing value in train."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from datafuel._transformer import DatafuelTransformer, require
from datafuel.errors import ConfigError

__all__ = ["MissingIndicator"]


class MissingIndicator(DatafuelTransformer):
    """0/1 columns marking the missing (NaN or infinite) entries of chosen features.

    As scikit-learn's ``MissingIndicator`` (``SimpleImputer(add_indicator=True)``) and
    fastai's ``FillMissing``: with ``features="missing-only"`` only the features that
    had a missing value in the training data get an indicator, so the output width is
    fixed by ``fit`` and a feature that is only missing at test time gets none.
    Unlike scikit-learn's, the indicators are floats (the dtype of the input), ready
    to append to a feature matrix.

    Parameters
    ----------
    features : {"missing-only", "all"}, default "missing-only"
        Which features get an indicator.

    Attributes
    ----------
    n_missing_ : ndarray of shape (n_features,), int64
        Missing entries per feature in the training data.
    features_ : ndarray of int64
        Indices of the features with an indicator, in order.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import MissingIndicator
    >>> X = np.array([[1.0, np.nan], [2.0, 3.0]])
    >>> MissingIndicator().fit(X).transform(np.array([[np.nan, np.nan], [4.0, 5.0]]))
    array([[1.],
           [0.]])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("n_missing_",)
    _count_attrs: ClassVar[tuple[str, ...]] = ("n_missing_",)

    n_missing_: np.ndarray
    features_: np.ndarray

    def __init__(self, features: str = "missing-only") -> None:
        self.features = features

    def _validate_params(self) -> None:
        if not isinstance(self.features, str) or self.features not in ("missing-only", "all"):
            raise ConfigError(
                f"features must be 'missing-only' or 'all'. Got {self.features!r} instead."
            )

    def _check_fitted_state(self) -> None:
        require(self.n_missing_ >= 0, self, "n_missing_", ">= 0 (a count)")

    def _after_load(self) -> None:
        if self.features == "all":
            self.features_ = np.arange(self.n_features_in_, dtype=np.int64)
        else:
            self.features_ = np.flatnonzero(self.n_missing_ > 0).astype(np.int64)

    def fit(self, X: Any, y: Any = None) -> MissingIndicator:
        """Count the missing entries of each training feature."""
        self._validate_params()
        X = self._validate(X, reset=True)
        self.n_missing_ = np.isnan(X).sum(axis=0).astype(np.int64)
        self._after_load()
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(n_samples, len(features_))`` of 1.0 where the feature is missing, else 0.0."""
        X = self._validate(X, reset=False)
        return np.isnan(X[:, self.features_]).astype(X.dtype)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``missingindicator_<name>`` for each feature with an indicator (scikit-learn's names)."""
        names = super().get_feature_names_out(input_features)
        return np.asarray([f"missingindicator_{names[j]}" for j in self.features_], dtype=object)
