"""Cleaning: scrub infinities, drop sparse rows, impute (mean, median, KNN), winsorize;
category codes, missing-value indicators and datetime expansion for tabular models.

Every transformer follows scikit-learn's protocol, treats infinities as missing,
learns only from the data given to ``fit`` (the train split), and saves its fitted
state as JSON through :class:`datafuel.Recipe`.
"""

from __future__ import annotations

from ._categorical import CategoryEncoder
from ._datetime import DateExpander
from ._indicator import MissingIndicator
from ._knn import KNNImputer
from ._scrub import DropSparseRows, ScrubInfinite
from ._simple import SimpleImputer
from ._winsor import Winsorizer

__all__ = [
    "CategoryEncoder",
    "DateExpander",
    "DropSparseRows",
    "KNNImputer",
    "MissingIndicator",
    "ScrubInfinite",
    "SimpleImputer",
    "Winsorizer",
]
