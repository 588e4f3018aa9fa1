"""The table build's column steps: category codes, missing indicators, date expansion.

Off by default (``datafuel build table`` then writes what it always wrote). When on,
:class:`ColumnSteps` decides which columns they take while the table is read, is
fitted on the train split beside the numeric recipe, and is saved as plain JSON in
``recipe.json`` (under ``extra["column_steps"]``) so that :func:`datafuel.build.apply`
repeats it unchanged on production data. In each unit, the rows become:

* ``x``: the numeric features, then the ``<date>_<part>`` features of each expanded
  date column (these two go through the recipe: impute, winsorize, scale), then the
  one-hot columns, then one 0/1 ``missingindicator_<feature>`` column per recipe
  input feature that had a missing value in train;
* ``cat`` (int64, one per ``codes`` column): category codes, 0 for unknown or missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from datafuel._transformer import DatafuelTransformer, check_keys, found
from datafuel.errors import ConfigError, InputDataError, SchemaError
from datafuel.loaders import Field, fixed

__all__ = ["CATEGORICAL_MODES", "CODES_FIELD", "STATE_KEY", "ColumnSteps"]

CATEGORICAL_MODES = ("onehot", "codes")
#: name of the int64 field holding the category codes
CODES_FIELD = "cat"
#: key of the column steps in ``recipe.json``'s ``extra``
STATE_KEY = "column_steps"
_VERSION = 1
_STATE_KEYS = frozenset(
    {
        "version",
        "categorical",
        "missing_indicators",
        "expand_dates",
        "date_columns",
        "date_features",
        "code_columns",
        "date_expander",
        "category_encoder",
        "missing_indicator",
    }
)


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def _str_list(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SchemaError(f"{key} must be a list of strings. Found {found(value)}.", field=key)
    return list(value)


@dataclass
class ColumnSteps:
    """Which columns the column steps take, and (once fitted) what they learned.

    Parameters
    ----------
    categorical : "onehot", "codes" or a mapping of column to mode
        How text columns are encoded; in a mapping, key ``"*"`` sets the default
        (``"onehot"`` otherwise).
    missing_indicators : bool
        Append a 0/1 indicator per recipe input feature missing somewhere in train.
    expand_dates : bool
        Turn timestamp/date columns into year, month, day, day of week and elapsed
        days, instead of refusing them.
    """

    categorical: str | Mapping[str, str] = "onehot"
    missing_indicators: bool = False
    expand_dates: bool = False
    dates: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    date_features: list[str] = field(default_factory=list)
    expander: Any = None
    encoder: Any = None
    indicator: Any = None

    def __post_init__(self) -> None:
        spec = self.categorical
        modes = {"*": spec} if isinstance(spec, str) else dict(spec)
        for col, mode in modes.items():
            if mode not in CATEGORICAL_MODES:
                where = "" if col == "*" else f"{col}="
                raise ConfigError(
                    f"--categorical must be onehot or codes, or COL=onehot|codes. Got "
                    f"{where}{mode!r}."
                )
        self._default = modes.pop("*", "onehot")
        self._per_column = modes

    @property
    def active(self) -> bool:
        """Whether any step is on (off: the build writes what it always wrote)."""
        return (
            self._default != "onehot"
            or any(m != "onehot" for m in self._per_column.values())
            or self.missing_indicators
            or self.expand_dates
        )

    def options(self) -> dict[str, Any]:
        """The options as plain values (what ``recipe.json`` records)."""
        return {
            "categorical": {"*": self._default, **self._per_column},
            "missing_indicators": self.missing_indicators,
            "expand_dates": self.expand_dates,
        }

    # -- reading: which columns go where ------------------------------------------
    def date_columns(self, table: pa.Table, exclude: Sequence[str]) -> list[str]:
        """The timestamp/date feature columns to expand (none unless ``expand_dates``)."""
        from datafuel.clean._datetime import is_datetime_type

        if not self.expand_dates:
            return []
        self.dates = [
            c
            for c in table.column_names
            if c not in exclude and is_datetime_type(table.column(c).type)
        ]
        return list(self.dates)

    def category_limit(self, max_categories: int) -> int:
        """The distinct-value limit ``prepare_columns`` applies (none once codes are allowed)."""
        if self._default == "codes" or "codes" in self._per_column.values():
            return 2**62  # sort_text applies the limit to the one-hot columns only
        return max_categories

    def sort_text(self, table: pa.Table, text: list[str], max_categories: int) -> list[str]:
        """Split the text features into one-hot (returned) and codes (kept here)."""
        unknown = [c for c in self._per_column if c not in text]
        if unknown:
            raise ConfigError(
                f"--categorical {unknown[0]}=...: {unknown[0]!r} is not a text feature column "
                f"(text features: {text}).",
                field=unknown[0],
            )
        self.codes = [c for c in text if self._per_column.get(c, self._default) == "codes"]
        onehot = [c for c in text if c not in self.codes]
        for name in onehot:
            n_distinct = len(table.column(name).unique())
            if n_distinct > max_categories:
                raise InputDataError(
                    f"column {name!r} is text with {n_distinct} distinct values, more than "
                    f"--max-categories {max_categories}; drop it (--drop {name}), encode it as "
                    f"codes for an embedding (--categorical {name}=codes) or encode it yourself.",
                    field=name,
                )
        return onehot

    # -- fitting on train ------------------------------------------------------------
    def fit(self, train: pa.Table, numeric: Sequence[str]) -> ColumnSteps:
        """Fit the date expander, the category encoder and the indicators on train rows."""
        from datafuel.clean import CategoryEncoder, DateExpander, MissingIndicator

        if self.dates:
            self.expander = DateExpander().fit(train.select(self.dates))
            self.date_features = [str(n) for n in self.expander.get_feature_names_out()]
            clash = sorted(set(self.date_features) & set(train.column_names))
            if clash:
                raise InputDataError(
                    f"--expand-dates would add feature {clash[0]!r}, but the table already has "
                    "a column of that name; rename or drop one of them.",
                    field=clash[0],
                )
        if self.codes:
            self.encoder = CategoryEncoder().fit(train.select(self.codes))
        if self.missing_indicators:
            self.indicator = MissingIndicator().fit(self.numeric_input(train, numeric))
        return self

    # -- per unit ----------------------------------------------------------------------
    def numeric_input(self, part: pa.Table, numeric: Sequence[str]) -> pa.Table:
        """What the numeric recipe reads: the numeric columns, then the expanded dates."""
        table = part.select(list(numeric))
        if self.expander is None:
            return table
        expanded = self.expander.transform(part.select(self.dates))
        for j, name in enumerate(self.date_features):
            table = table.append_column(name, pa.array(expanded[:, j], type=pa.float64()))
        return table

    def unit_parts(
        self, recipe_input: pa.Table, kept: pa.Table
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The indicator block appended to ``x`` and the extra fields, for the kept rows."""
        if self.indicator is None:
            block = np.empty((kept.num_rows, 0), np.float32)
        else:
            block = self.indicator.transform(recipe_input).astype(np.float32)
        fields = {}
        if self.encoder is not None:
            fields[CODES_FIELD] = self.encoder.transform(kept.select(self.codes))
        return block, fields

    # -- what the build records ----------------------------------------------------------
    def columns(self, numeric: Sequence[str], onehot: Sequence[str]) -> list[str]:
        """The names of the ``x`` columns, in order."""
        names = [*numeric, *self.date_features, *onehot]
        if self.indicator is not None:
            names += [str(n) for n in self.indicator.get_feature_names_out()]
        return names

    def fields(self) -> dict[str, Field]:
        """The shard fields besides ``x`` and ``y``."""
        return {CODES_FIELD: fixed("int64", (len(self.codes),))} if self.codes else {}

    def metadata(self) -> dict[str, Any]:
        """Manifest metadata: each codes column's cardinality, to size embedding tables."""
        if self.encoder is None:
            return {}
        cards = [int(c) for c in self.encoder.cardinalities_]
        return {
            "categorical": {
                "field": CODES_FIELD,
                "columns": list(self.codes),
                "cardinalities": cards,
                "unknown_code": 0,
            }
        }

    def summary(self) -> dict[str, Any]:
        """For the build summary: what the steps took and learned."""
        indicators = [] if self.indicator is None else self.indicator.get_feature_names_out()
        cards = [] if self.encoder is None else self.encoder.cardinalities_
        return {
            "date_columns": list(self.dates),
            "cardinalities": {c: int(n) for c, n in zip(self.codes, cards, strict=True)},
            "missing_indicators": [str(n) for n in indicators],
        }

    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs, as plain JSON values."""

        def st(est: Any) -> Any:
            return None if est is None else est.get_state()

        return {
            "version": _VERSION,
            **self.options(),
            "date_columns": list(self.dates),
            "date_features": list(self.date_features),
            "code_columns": list(self.codes),
            "date_expander": st(self.expander),
            "category_encoder": st(self.encoder),
            "missing_indicator": st(self.indicator),
        }

    @classmethod
    def from_state(cls, state: Any, n_recipe_features: int) -> ColumnSteps:
        """Rebuild fitted steps from :meth:`state`, checked as strictly as a recipe step."""
        from datafuel.clean import CategoryEncoder, DateExpander, MissingIndicator

        key = f"extra.{STATE_KEY}"
        _check_header(state, key)
        spec = state["categorical"]
        steps = cls(spec, state["missing_indicators"], state["expand_dates"])
        steps.dates = _str_list(state["date_columns"], f"{key}.date_columns")
        steps.date_features = _str_list(state["date_features"], f"{key}.date_features")
        steps.codes = _str_list(state["code_columns"], f"{key}.code_columns")
        expect: dict[str, tuple[type[DatafuelTransformer], int, bool]] = {
            "date_expander": (DateExpander, len(steps.dates), bool(steps.dates)),
            "category_encoder": (CategoryEncoder, len(steps.codes), bool(steps.codes)),
            "missing_indicator": (MissingIndicator, n_recipe_features, steps.missing_indicators),
        }
        fitted = {}
        for name, (klass, n, present) in expect.items():
            value = state[name]
            if (value is None) == present:
                raise SchemaError(
                    f"{key}.{name} must be {'a fitted state' if present else 'null'} here. "
                    f"Found {found(value)}.",
                    field=f"{key}.{name}",
                )
            if value is None:
                continue
            est = klass.from_state(value, where=f"{key}.{name}: ")
            if est.n_features_in_ != n:
                raise SchemaError(
                    f"{key}.{name} was fitted on {est.n_features_in_} column(s); {n} expected.",
                    field=f"{key}.{name}",
                )
            fitted[name] = est
        steps.expander = fitted.get("date_expander")
        steps.encoder = fitted.get("category_encoder")
        steps.indicator = fitted.get("missing_indicator")
        _check_date_features(steps, key)
        return steps


def _check_header(state: Any, key: str) -> None:
    check_keys(state, key, _STATE_KEYS)
    if state["version"] != _VERSION or isinstance(state["version"], bool):
        raise SchemaError(
            f"{key}.version must be {_VERSION}. Found {found(state['version'])}.",
            field=f"{key}.version",
        )
    for flag in ("missing_indicators", "expand_dates"):
        if not isinstance(state[flag], bool):
            raise SchemaError(
                f"{key}.{flag} must be a bool. Found {found(state[flag])}.",
                field=f"{key}.{flag}",
            )
    spec = state["categorical"]
    if not isinstance(spec, dict) or not all(isinstance(v, str) for v in spec.values()):
        raise SchemaError(
            f"{key}.categorical must be an object of modes. Found {found(spec)}.",
            field=f"{key}.categorical",
        )


def _check_date_features(steps: ColumnSteps, key: str) -> None:
    if steps.expander is None and steps.date_features:
        raise SchemaError(
            f"{key}.date_features must be empty without date columns. Found {steps.date_features}.",
            field=f"{key}.date_features",
        )
    if (
        steps.expander is not None
        and [str(n) for n in steps.expander.get_feature_names_out(steps.dates)]
        != steps.date_features
    ):
        raise SchemaError(
            f"{key}.date_features must be the expander's feature names "
            f"({[str(n) for n in steps.expander.get_feature_names_out(steps.dates)]}). "
            f"Found {steps.date_features}.",
            field=f"{key}.date_features",
        )
