"""Category codes for embedding layers: train-only vocabularies, code 0 for unknown or missing."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from sklearn.utils.validation import validate_data

from datafuel._transformer import (
    DatafuelTransformer,
    check_keys,
    found,
    is_int,
)
from datafuel.errors import ConfigError, SchemaError

__all__ = ["CategoryEncoder", "as_text"]


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return v if isinstance(v, str) else str(v)


def as_text(X: Any) -> Any:
    """``X`` as an object matrix of ``str`` or ``None`` (missing); a DataFrame keeps its names.

    Takes a pyarrow Table/RecordBatch (any column type, cast to string), a pandas
    DataFrame or anything ``numpy.asarray`` reads; NaN and ``None`` are missing.
    """
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        pa = None
    if pa is not None and isinstance(X, (pa.Table, pa.RecordBatch)):
        cols = [
            [
                _text(v)
                for v in (c if pa.types.is_string(c.type) else c.cast(pa.string())).to_pylist()
            ]
            for c in X.columns
        ]
        data = np.empty((X.num_rows, len(cols)), dtype=object)
        for j, values in enumerate(cols):
            data[:, j] = values
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas is optional
            return data
        return pd.DataFrame(data, columns=[str(c) for c in X.column_names], dtype=object)
    return X


class CategoryEncoder(DatafuelTransformer):
    """Map each text column to int64 codes with a vocabulary learned on the training split.

    The vocabulary of a column is its sorted distinct training values seen at least
    ``min_frequency`` times; value ``vocabularies_[j][i]`` gets code ``i + 1``. Code 0
    is reserved for a value outside the vocabulary (unseen in train, or too rare) and
    for a missing value (``None`` or NaN), so val and test never influence a
    vocabulary. ``cardinalities_[j]`` (vocabulary size + 1) is the row count an
    embedding table for column ``j`` needs, as fastai's ``Categorify`` and
    pytorch-tabular size theirs.

    Parameters
    ----------
    min_frequency : int, default 1
        Training values seen fewer times than this get code 0.

    Attributes
    ----------
    vocabularies_ : list of ndarray of str
        The sorted vocabulary of each column.
    cardinalities_ : ndarray of shape (n_features,), int64
        ``len(vocabularies_[j]) + 1`` per column.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import CategoryEncoder
    >>> enc = CategoryEncoder().fit(np.array([["red"], ["blue"], ["red"]], dtype=object))
    >>> enc.transform(np.array([["blue"], ["red"], ["green"], [None]], dtype=object)).ravel()
    array([1, 2, 0, 0])
    >>> enc.cardinalities_
    array([3])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("vocabularies_", "cardinalities_")
    _count_attrs: ClassVar[tuple[str, ...]] = ("cardinalities_",)

    vocabularies_: list[np.ndarray]
    cardinalities_: np.ndarray

    def __init__(self, min_frequency: int = 1) -> None:
        self.min_frequency = min_frequency

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = []
        return tags

    def _validate_params(self) -> None:
        m = self.min_frequency
        if not is_int(m) or m < 1:
            raise ConfigError(f"min_frequency must be an int >= 1. Got {m!r} instead.")

    def _text_matrix(self, X: Any, *, reset: bool) -> np.ndarray:
        X = as_text(X)
        if not reset:
            self._check_fitted()
            shape = getattr(X, "shape", None)
            if shape is not None and len(shape) == 2 and shape[1] != self.n_features_in_:
                raise SchemaError(
                    f"X has {shape[1]} features, but CategoryEncoder is expecting "
                    f"{self.n_features_in_} features as input (it was fitted on that many)."
                )
        arr = validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
        out = np.empty(arr.shape, dtype=object)
        for j in range(arr.shape[1]):
            out[:, j] = [_text(v) for v in arr[:, j]]
        return out

    def fit(self, X: Any, y: Any = None) -> CategoryEncoder:
        """Learn the vocabulary of each column from its non-missing training values."""
        self._validate_params()
        arr = self._text_matrix(X, reset=True)
        vocabs = []
        for j in range(arr.shape[1]):
            values = [v for v in arr[:, j] if v is not None]
            uniq, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
            vocab = [str(v) for v, c in zip(uniq, counts, strict=True) if c >= self.min_frequency]
            vocabs.append(np.asarray(sorted(vocab), dtype=object))
        self.vocabularies_ = vocabs
        self.cardinalities_ = np.asarray([len(v) + 1 for v in vocabs], dtype=np.int64)
        self._after_load()
        return self

    def transform(self, X: Any) -> np.ndarray:
        """int64 codes: ``i + 1`` for vocabulary entry ``i``, 0 for unknown or missing."""
        arr = self._text_matrix(X, reset=False)
        codes = np.zeros(arr.shape, dtype=np.int64)
        for j, lookup in enumerate(self._lookup):
            codes[:, j] = [lookup.get(v, 0) if v is not None else 0 for v in arr[:, j]]
        return codes

    # -- JSON state ---------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Parameters and vocabularies as plain JSON values (lists of strings)."""
        state = super().get_state()
        state["fitted"]["vocabularies_"] = [[str(v) for v in vocab] for vocab in self.vocabularies_]
        return state

    @classmethod
    def _restore(cls, state: Any) -> CategoryEncoder:
        check_keys(state, "state", {"params", "fitted"})
        fitted = check_keys(
            state["fitted"], "fitted", {"n_features_in_", *cls._fitted_attrs}, {"feature_names_in_"}
        )
        vocabs = fitted["vocabularies_"]
        n = fitted["n_features_in_"]
        if not isinstance(vocabs, list) or not is_int(n) or len(vocabs) != n:
            raise SchemaError(
                f"fitted.vocabularies_ must be a list of n_features_in_ ({n!r}) lists of "
                f"strings. Found {found(vocabs)}.",
                field="vocabularies_",
            )
        for j, vocab in enumerate(vocabs):
            if (
                not isinstance(vocab, list)
                or not all(isinstance(v, str) for v in vocab)
                or vocab != sorted(set(vocab))
            ):
                raise SchemaError(
                    f"fitted.vocabularies_[{j}] must be a sorted list of distinct strings "
                    f"(as fit writes it). Found {found(vocab)}.",
                    field="vocabularies_",
                )
        # n_features_in_, names and cardinalities_ are checked by the base class
        est = super()._restore(
            {
                "params": state["params"],
                "fitted": {k: v for k, v in fitted.items() if k != "vocabularies_"},
            }
        )
        if not isinstance(est, CategoryEncoder):  # pragma: no cover - _restore builds cls
            raise TypeError(type(est).__name__)
        est.vocabularies_ = [np.asarray(v, dtype=object) for v in vocabs]
        expected = np.asarray([len(v) + 1 for v in vocabs], dtype=np.int64)
        bad = np.flatnonzero(est.cardinalities_ != expected)
        if bad.size:
            j = int(bad[0])
            raise SchemaError(
                f"fitted.cardinalities_[{j}] must be len(vocabularies_[{j}]) + 1 "
                f"({int(expected[j])}), as fit computes it. Found {int(est.cardinalities_[j])}.",
                field="cardinalities_",
            )
        est._after_load()
        return est

    def _state_attrs(self) -> tuple[str, ...]:
        return ("cardinalities_",)  # vocabularies_ are lists of strings, read by _restore

    def _after_load(self) -> None:
        if hasattr(self, "vocabularies_"):
            self._lookup = [
                {str(v): i + 1 for i, v in enumerate(voc)} for voc in self.vocabularies_
            ]
