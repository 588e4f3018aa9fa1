"""A chain of clean/scale steps, fitted on the train split only, saved as JSON.

A :class:`Recipe` is what ``datafuel build table`` fits and writes to
``recipe.json``: the steps, their parameters and everything they learned. Small
fitted values are stored in the JSON itself; large arrays (the KNN donor rows) go in
``.npy`` files beside it, loaded with ``allow_pickle=False`` and checked against the
SHA-256 recorded in the JSON. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_bytes, dump_json
from datafuel._transformer import (
    DatafuelTransformer,
    arrow_to_frame,
    check_keys,
    found,
    is_int,
)
from datafuel.clean import DropSparseRows, KNNImputer, ScrubInfinite, SimpleImputer, Winsorizer
from datafuel.errors import (
    ConfigError,
    InputDataError,
    LeakageError,
    NotFittedError,
    SchemaError,
)
from datafuel.scale import MinMaxScaler, StandardScaler
from datafuel.split import split_tag

__all__ = ["RECIPE_FORMAT", "Recipe"]

RECIPE_FORMAT = "datafuel-recipe"
_VERSION = 1
_STEP_CLASSES: dict[str, type[DatafuelTransformer]] = {
    cls.__name__: cls
    for cls in (
        DropSparseRows,
        KNNImputer,
        MinMaxScaler,
        ScrubInfinite,
        SimpleImputer,
        StandardScaler,
        Winsorizer,
    )
}
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _as_matrix(X: Any, what: str) -> tuple[np.ndarray, list[str] | None]:
    """float64 2-D copy of ``X`` and its column names (None for plain arrays)."""
    X = arrow_to_frame(X)
    names = None
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):
        names = [str(c) for c in X.columns]
        for c in X.columns:
            if X[c].dtype.kind not in "biuf":
                raise InputDataError(
                    f"{what}: column {str(c)!r} has dtype {X[c].dtype}, not a number.", field=str(c)
                )
        arr = np.array(X.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64, copy=True)
    else:
        try:
            arr = np.array(X, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"{what}: data is not numeric: {exc}") from exc
    if arr.ndim != 2:
        raise SchemaError(f"{what}: expected a 2-D table or array. Got shape {arr.shape}.")
    return arr, names


def _dump(obj: Any) -> bytes:
    try:
        return dump_json(obj)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the recipe cannot be saved as JSON: {exc}") from exc


def _refuse_held_out(X: Any, y: Any) -> None:
    """Refuse ``X`` or ``y`` tagged as the val or test split by :func:`datafuel.split`."""
    for data, what in ((X, "X"), (y, "y")):
        tag = split_tag(data)
        if tag is not None and tag != "train":
            raise LeakageError(
                f"refusing to fit the recipe on {what} tagged as the {tag!r} split: "
                "statistics must come from the train split only.",
                split=tag,
            )


def _train_matrix(X: Any) -> tuple[np.ndarray, list[str] | None]:
    """The train rows as a float matrix (infinities as NaN) with their column names.

    Refuses zero rows and a column without any value.
    """
    arr, names = _as_matrix(X, "fit")
    if arr.shape[0] == 0:
        raise InputDataError("cannot fit a recipe on zero rows (the train split is empty).")
    arr[np.isinf(arr)] = np.nan
    empty = np.isnan(arr).all(axis=0)
    if empty.any():
        j = int(np.flatnonzero(empty)[0])
        col = names[j] if names else f"#{j}"
        raise InputDataError(
            f"column {col!r} has no value in the {arr.shape[0]} training rows; "
            "nothing can be learned from it (drop it).",
            field=col,
        )
    return arr, names


def _fit_step(
    step: DatafuelTransformer,
    arr: np.ndarray,
    yv: np.ndarray | None,
    on_progress: Callable[[str, int, int | None], None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Fit one feature step on ``arr``: the rows (and targets) it passes on, its report entry."""
    entry: dict[str, Any] = {"step": type(step).__name__, "rows_in": int(arr.shape[0])}
    if isinstance(step, DropSparseRows):
        keep = step.fit(arr).keep_mask(arr)
        arr = arr[keep]
        yv = None if yv is None else yv[keep]
        entry["rows_dropped"] = int((~keep).sum())
        if arr.shape[0] == 0:
            raise InputDataError(
                f"every training row has more than {step.max_missing_ratio:.0%} missing "
                "values; nothing is left to fit on (raise --max-missing)."
            )
        return arr, yv, entry
    before = arr
    if isinstance(step, KNNImputer) and on_progress is not None:
        arr = step.fit_transform(arr, on_rows=lambda d, t: on_progress("impute (KNN)", d, t))
    else:
        arr = step.fit_transform(arr)
    if isinstance(step, (SimpleImputer, KNNImputer)):
        entry["values_imputed"] = int(np.isnan(before).sum())
    elif isinstance(step, Winsorizer):
        entry["values_clipped"] = int(
            (before < step.lower_caps_).sum() + (before > step.upper_caps_).sum()
        )
    return arr, yv, entry


class Recipe:
    """Clean and scale steps chained, fitted on train only, applied unchanged to anything.

    Parameters
    ----------
    steps : sequence of datafuel transformers
        Applied in order. :class:`~datafuel.clean.DropSparseRows` drops rows (the
        matching target rows go too).
    target_steps : sequence of datafuel transformers, optional
        Applied to the target column (e.g. a :class:`~datafuel.clean.Winsorizer`
        that caps an absurd price), fitted on the train targets.

    Attributes
    ----------
    feature_names_ : list of str or None
        Column names seen by ``fit`` (``None`` for plain arrays).
    fit_report_ : list of dict
        Per step, what fitting did to the train rows (rows dropped, values imputed or
        clipped): for logs, not used by ``transform``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> import datafuel
    >>> from datafuel.clean import KNNImputer, Winsorizer
    >>> from datafuel.scale import StandardScaler
    >>> X = np.array([[1.0, 2.0], [np.nan, 3.0], [7.0, 6.0], [2.0, 2.5]])
    >>> r = datafuel.Recipe([KNNImputer(n_neighbors=2), Winsorizer(0.0, 1.0), StandardScaler()]).fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "recipe.json")
    >>> fingerprint = r.save(path)
    >>> np.allclose(datafuel.Recipe.load(path).transform(X), r.transform(X))
    True
    """

    def __init__(
        self,
        steps: Sequence[DatafuelTransformer],
        *,
        target_steps: Sequence[DatafuelTransformer] = (),
    ) -> None:
        self.steps = list(steps)
        self.target_steps = list(target_steps)

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.steps)
        return f"Recipe([{inner}])"

    # -- fit / transform ---------------------------------------------------------
    def _check_steps(self) -> None:
        for step in (*self.steps, *self.target_steps):
            if type(step).__name__ not in _STEP_CLASSES or not isinstance(
                step, _STEP_CLASSES[type(step).__name__]
            ):
                raise ConfigError(
                    f"recipe steps must be datafuel clean/scale transformers "
                    f"({', '.join(sorted(_STEP_CLASSES))}). Got {type(step).__name__}."
                )

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        on_progress: Callable[[str, int, int | None], None] | None = None,
    ) -> Recipe:
        """Fit every step, in order, on the train rows ``X`` (and target ``y``).

        ``on_progress(stage, done, total)``, when given, hears the long steps as they
        run: a KNN imputation reports its receivers (rows with a missing value) as
        stage ``"impute (KNN)"``.

        Raises
        ------
        LeakageError
            ``X`` is a part tagged ``val`` or ``test`` by :func:`datafuel.split`.
        InputDataError
            A column has no value at all, or a target value is missing.
        """
        self._check_steps()
        _refuse_held_out(X, y)
        arr, names = _train_matrix(X)
        yv = self._target(y, arr.shape[0])
        self.feature_names_ = names
        self.n_features_in_ = arr.shape[1]
        report: list[dict[str, Any]] = []
        for step in self.steps:
            arr, yv, entry = _fit_step(step, arr, yv, on_progress)
            report.append(entry)
        if yv is not None:
            report += self._fit_target_steps(yv)
        elif self.target_steps:
            raise ConfigError("the recipe has target_steps, so fit needs y (the train targets).")
        self.fit_report_ = report
        self.n_train_rows_ = int(arr.shape[0])
        return self

    def _fit_target_steps(self, yv: np.ndarray) -> list[dict[str, Any]]:
        """Fit the target steps in order on the train targets; their report entries."""
        report = []
        for step in self.target_steps:
            ycol = yv[:, None]
            entry = {"step": type(step).__name__, "target": True, "rows_in": len(yv)}
            out = step.fit_transform(ycol)
            if isinstance(step, Winsorizer):
                entry["values_clipped"] = int((out != ycol).sum())
                entry["min_before"], entry["max_before"] = float(ycol.min()), float(ycol.max())
            yv = out[:, 0]
            report.append(entry)
        return report

    @staticmethod
    def _target(y: Any, n: int) -> np.ndarray | None:
        if y is None:
            return None
        y = arrow_to_frame(y)
        try:
            yv = np.asarray(
                y.to_numpy(zero_copy_only=False)
                if hasattr(y, "to_numpy") and not hasattr(y, "iloc")
                else y,
                dtype=np.float64,
            ).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InputDataError(f"the target is not numeric: {exc}") from exc
        if len(yv) != n:
            raise SchemaError(f"y has {len(yv)} rows but X has {n}.")
        bad = np.flatnonzero(~np.isfinite(yv))
        if bad.size:
            raise InputDataError(
                f"the target is missing or not finite in {bad.size} row(s), first at row "
                f"{int(bad[0])}; drop those rows or fix the target.",
                row=int(bad[0]),
            )
        return yv

    def _check_fitted(self) -> None:
        if not hasattr(self, "fit_report_"):
            raise NotFittedError(
                "This Recipe is not fitted yet: call fit() on the train split first."
            )

    def transform(self, X: Any, y: Any = None) -> Any:
        """Apply the fitted steps to ``X`` (any split); returns ``X`` or ``(X, y)``.

        Rows dropped by :class:`~datafuel.clean.DropSparseRows` are dropped from ``y``
        too (:meth:`keep_mask` tells which). A table must have every fitted column
        (others are ignored).
        """
        arr, yv, _ = self.transform_rows(X, y)
        return arr if yv is None else (arr, yv)

    def keep_mask(self, X: Any) -> np.ndarray:
        """Boolean mask of the rows of ``X`` that :meth:`transform` keeps."""
        return self.transform_rows(X, None)[2]

    def transform_rows(
        self, X: Any, y: Any = None
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Like :meth:`transform`, also returning the mask of input rows kept: ``(X, y, keep)``."""
        self._check_fitted()
        X = arrow_to_frame(X)
        if self.feature_names_ is not None and hasattr(X, "columns"):
            have = [str(c) for c in X.columns]
            missing = [c for c in self.feature_names_ if c not in have]
            if missing:
                raise SchemaError(
                    f"column {missing[0]!r} was fitted but is not in the data to transform.",
                    field=missing[0],
                )
            X = X[self.feature_names_]
        arr, _ = _as_matrix(X, "transform")
        if arr.shape[1] != self.n_features_in_:
            raise SchemaError(
                f"X has {arr.shape[1]} features, but the recipe was fitted on {self.n_features_in_}."
            )
        arr[np.isinf(arr)] = np.nan
        yv = None if y is None else self._target(y, arr.shape[0])
        rows = np.arange(arr.shape[0])
        for step in self.steps:
            if isinstance(step, DropSparseRows):
                keep = step.keep_mask(arr)
                arr, rows = arr[keep], rows[keep]
                yv = None if yv is None else yv[keep]
            else:
                arr = step.transform(arr)
        if yv is not None:
            for step in self.target_steps:
                yv = step.transform(yv[:, None])[:, 0]
        mask = np.zeros(len(X), dtype=bool)
        mask[rows] = True
        return arr, yv, mask

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """``fit`` then ``transform`` on the same (train) rows."""
        return self.fit(X, y).transform(X, y)

    # -- persistence ---------------------------------------------------------------
    def _state(self, arrays: dict[str, np.ndarray], stem: str) -> dict[str, Any]:
        def steps_state(steps: list[DatafuelTransformer], group: str) -> list[dict[str, Any]]:
            out = []
            for i, step in enumerate(steps):
                st = step.get_state()
                for attr in step._array_attrs:
                    if attr in st["fitted"]:
                        arr = np.ascontiguousarray(st["fitted"][attr])
                        name = f"{stem}.{group}{i}.{attr.rstrip('_')}.npy"
                        arrays[name] = arr
                        st["fitted"][attr] = {
                            "npy": name,
                            "dtype": arr.dtype.str,
                            "shape": list(arr.shape),
                        }
                out.append({"class": type(step).__name__, **st})
            return out

        self._check_fitted()
        return {
            "format": RECIPE_FORMAT,
            "version": _VERSION,
            "feature_names": self.feature_names_,
            "n_features_in": self.n_features_in_,
            "n_train_rows": self.n_train_rows_,
            "steps": steps_state(self.steps, "step"),
            "target_steps": steps_state(self.target_steps, "target"),
            "fit_report": self.fit_report_,
        }

    def save(self, path: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> str:
        """Write the fitted recipe to ``path`` (JSON) plus ``.npy`` files beside it.

        ``extra`` (JSON-able) is stored under the ``"extra"`` key, e.g. how the input
        columns were prepared. Returns the recipe's fingerprint (SHA-256 of the JSON).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        state = self._state(arrays, path.stem)
        digests = {}
        for name, arr in arrays.items():
            target = path.parent / name
            tmp = target.with_name(f".{name}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr, allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
            digests[name] = hashlib.sha256(target.read_bytes()).hexdigest()
        for group in ("steps", "target_steps"):
            for st in state[group]:
                for value in st["fitted"].values():
                    if isinstance(value, dict) and "npy" in value:
                        value["sha256"] = digests[value["npy"]]
        if extra is not None:
            state["extra"] = dict(extra)
        data = _dump(state)
        atomic_write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 of the recipe's JSON form (what ``save`` writes, without ``extra``)."""
        arrays: dict[str, np.ndarray] = {}
        state = self._state(arrays, "recipe")
        for group in ("steps", "target_steps"):
            for st in state[group]:
                for value in st["fitted"].values():
                    if isinstance(value, dict) and "npy" in value:
                        value["sha256"] = hashlib.sha256(arrays[value["npy"]].tobytes()).hexdigest()
        return hashlib.sha256(_dump(state)).hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read a recipe written by :meth:`save`, checked as strictly as ``fit`` checks its input.

        Every step's parameters go through the checks its ``fit`` runs; every fitted
        array must have its declared dtype and shape and values ``fit`` could have
        produced; array files must be plain names beside the recipe, match their
        SHA-256, dtype and shape. Errors name the file, the step (index and class),
        the key, what was expected and what was found.

        Raises
        ------
        InputDataError
            The file cannot be read or parsed (or is nested absurdly deep), is not a
            recipe of this version, or an array file is missing, not a regular file
            beside it, or fails its SHA-256, dtype or shape.
        SchemaError
            An unknown, missing or mistyped key, or an array of the wrong shape.
        ConfigError
            A step parameter its ``fit`` would refuse.
        NonFiniteError
            NaN or an infinity where ``fit`` only gives finite values (caps, means,
            scales).
        """
        path = Path(path)
        state = _read_state(path)
        try:
            return cls._from_state(path, state)
        except RecursionError as exc:  # pragma: no cover - the depth bound comes first
            raise InputDataError(
                f"recipe {str(path)!r} is nested too deeply to check.", path=path
            ) from exc

    @classmethod
    def _from_state(cls, path: Path, state: dict[str, Any]) -> Recipe:
        where = f"recipe {str(path)!r}: "
        try:
            check_keys(state, "recipe", _TOP_KEYS, {"extra"})
        except SchemaError as exc:
            raise SchemaError(where + exc.message, path=path, field=exc.field) from exc
        n = state["n_features_in"]
        if not is_int(n) or not 0 <= n <= 2**31:
            raise SchemaError(
                f"{where}n_features_in must be a non-negative int. Found {found(n)}.",
                path=path,
                field="n_features_in",
            )
        names = state["feature_names"]
        if names is not None and (
            not isinstance(names, list)
            or len(names) != n
            or not all(isinstance(v, str) for v in names)
        ):
            raise SchemaError(
                f"{where}feature_names must be null or a list of {n} strings (n_features_in). "
                f"Found {found(names)}.",
                path=path,
                field="feature_names",
            )
        rows = state["n_train_rows"]
        if not is_int(rows) or rows < 1:
            raise SchemaError(
                f"{where}n_train_rows must be a positive int. Found {found(rows)}.",
                path=path,
                field="n_train_rows",
            )
        steps = cls._build_steps(path, state["steps"], "steps", n)
        target_steps = cls._build_steps(path, state["target_steps"], "target_steps", 1)
        report = _check_report(path, state["fit_report"], [*steps, *target_steps])
        recipe = cls(steps, target_steps=target_steps)
        recipe.feature_names_ = None if names is None else list(names)
        recipe.n_features_in_ = n
        recipe.n_train_rows_ = rows
        recipe.fit_report_ = report
        return recipe

    @classmethod
    def _build_steps(
        cls, path: Path, entries: Any, group: str, n_features: int
    ) -> list[DatafuelTransformer]:
        """The steps of ``group``, each rebuilt and checked by its own class."""
        if not isinstance(entries, list):
            raise SchemaError(
                f"recipe {str(path)!r}: {group} must be a list of steps. Found {found(entries)}.",
                path=path,
                field=group,
            )
        steps = []
        for i, st in enumerate(entries):
            where = f"recipe {str(path)!r}, {group}[{i}]"
            name = st.get("class") if isinstance(st, dict) else None
            klass = _STEP_CLASSES.get(name) if isinstance(name, str) else None
            if klass is None:
                raise SchemaError(
                    f"{where}: class must be one of {sorted(_STEP_CLASSES)}. "
                    f"Found {found(name if isinstance(st, dict) else st)}.",
                    path=path,
                    field=f"{group}[{i}].class",
                )
            where = f"{where} ({name}): "
            try:
                check_keys(st, "step", {"class", "params", "fitted"})
            except SchemaError as exc:
                raise SchemaError(where + exc.message, path=path, field=exc.field) from exc
            fitted = st["fitted"]
            if isinstance(fitted, dict):
                fitted = dict(fitted)
                for attr in klass._array_attrs:
                    if attr in fitted:
                        fitted[attr] = _load_array(path, fitted[attr], f"{where}fitted.{attr}")
            step = klass.from_state(
                {"params": st["params"], "fitted": fitted}, where=where, path=path
            )
            if step.n_features_in_ != n_features:
                raise SchemaError(
                    f"{where}fitted.n_features_in_ must be {n_features} "
                    f"({'the recipe' + chr(39) + 's n_features_in' if group == 'steps' else 'one target column'}). "
                    f"Found {step.n_features_in_}.",
                    path=path,
                    field="n_features_in_",
                )
            steps.append(step)
        return steps


_TOP_KEYS = frozenset(
    {
        "format",
        "version",
        "feature_names",
        "n_features_in",
        "n_train_rows",
        "steps",
        "target_steps",
        "fit_report",
    }
)
_NPY_KEYS = frozenset({"npy", "dtype", "shape", "sha256"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: how deep a recipe's JSON may nest (save writes 6 levels, plus what ``extra`` holds)
MAX_DEPTH = 64


def _depth_exceeds(obj: Any, limit: int) -> bool:
    """Whether ``obj`` nests lists/objects more than ``limit`` deep (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > limit:
                return True
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, (list, dict)))
    return False


def _read_state(path: Path) -> dict[str, Any]:
    """The recipe's JSON object, its format and version checked."""
    try:
        state = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"cannot read recipe {str(path)!r}: {exc}", path=path) from exc
    except RecursionError as exc:
        raise InputDataError(
            f"cannot read recipe {str(path)!r}: JSON nested too deeply (at most "
            f"{MAX_DEPTH} levels).",
            path=path,
        ) from exc
    if not isinstance(state, dict) or state.get("format") != RECIPE_FORMAT:
        raise InputDataError(f"{str(path)!r} is not a datafuel recipe.", path=path)
    if state.get("version") != _VERSION or isinstance(state.get("version"), bool):
        raise InputDataError(
            f"{str(path)!r} has recipe version {found(state.get('version'))}; this datafuel "
            f"reads version {_VERSION}.",
            path=path,
        )
    if _depth_exceeds(state, MAX_DEPTH):
        raise InputDataError(
            f"recipe {str(path)!r} nests JSON more than {MAX_DEPTH} levels deep; a recipe "
            "never does.",
            path=path,
        )
    return state


_REPORT_VALUE = (str, int, float, bool, type(None))


def _check_report(
    path: Path, report: Any, steps: list[DatafuelTransformer]
) -> list[dict[str, Any]]:
    """``fit_report``: one object of plain values per step, naming that step's class."""
    where = f"recipe {str(path)!r}: fit_report"
    if not isinstance(report, list) or len(report) != len(steps):
        raise SchemaError(
            f"{where} must be a list of {len(steps)} objects, one per step and target step. "
            f"Found {found(report)}.",
            path=path,
            field="fit_report",
        )
    for i, (entry, step) in enumerate(zip(report, steps, strict=True)):
        if (
            not isinstance(entry, dict)
            or not all(isinstance(v, _REPORT_VALUE) for v in entry.values())
            or entry.get("step") != type(step).__name__
        ):
            raise SchemaError(
                f"{where}[{i}] must be an object of plain values with step "
                f"{type(step).__name__!r}. Found {found(entry)}.",
                path=path,
                field=f"fit_report[{i}]",
            )
    return [dict(e) for e in report]


def _load_array(path: Path, ref: Any, where: str) -> np.ndarray:
    """The array a step references: a regular file beside the recipe, matching its SHA-256."""
    try:
        check_keys(ref, "", _NPY_KEYS)
    except SchemaError as exc:
        raise SchemaError(
            f"{where} must be a reference to a .npy file beside the recipe "
            f"({exc.message.lstrip()})",
            path=path,
            field=where,
        ) from exc
    name, sha, dtype, shape = ref["npy"], ref["sha256"], ref["dtype"], ref["shape"]
    if (
        not isinstance(name, str)
        or not _PLAIN_NAME.match(name)
        or ".." in name
        or not name.endswith(".npy")
    ):
        raise InputDataError(
            f"{where}.npy points to array file {found(name)}, which is not a plain name "
            "beside the recipe ending in .npy; refusing it.",
            path=path,
        )
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise SchemaError(
            f"{where}.sha256 must be 64 lowercase hex digits. Found {found(sha)}.",
            path=path,
            field=where,
        )
    if not isinstance(dtype, str) or not isinstance(shape, list):
        raise SchemaError(
            f"{where}: dtype must be a string and shape a list. Found {found(dtype)} and "
            f"{found(shape)}.",
            path=path,
            field=where,
        )
    file = path.parent / name
    raw = _read_beside(file, where)
    if hashlib.sha256(raw).hexdigest() != sha:
        raise InputDataError(
            f"{where}: array file {str(file)!r} does not match the SHA-256 in the recipe "
            "(changed or corrupt).",
            path=file,
        )
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputDataError(
            f"{where}: cannot load array file {str(file)!r}: {exc}", path=file
        ) from exc
    if not isinstance(arr, np.ndarray) or list(arr.shape) != shape or arr.dtype.str != dtype:
        got = (
            f"shape {arr.shape} / dtype {arr.dtype.str}"
            if isinstance(arr, np.ndarray)
            else "an archive, not one array"
        )
        raise InputDataError(
            f"{where}: array file {str(file)!r} has {got}; the recipe says shape {shape} / "
            f"dtype {dtype}.",
            path=file,
        )
    return arr


def _read_beside(file: Path, where: str) -> bytes:
    """The bytes of ``file``: a regular file in the recipe's directory (no link out of it)."""
    try:
        real = file.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop before 3.13
        raise InputDataError(
            f"{where}: array file {str(file)!r} is missing: {exc}", path=file
        ) from exc
    if real.parent != file.parent.resolve():
        raise InputDataError(
            f"{where}: array file {str(file)!r} is a link to {str(real)!r}, outside the "
            "recipe's directory; refusing it.",
            path=file,
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise InputDataError(
            f"{where}: array file {str(file)!r} cannot be opened: {exc}", path=file
        ) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputDataError(
                f"{where}: array file {str(file)!r} is not a regular file; refusing it.",
                path=file,
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise InputDataError(
            f"{where}: cannot read array file {str(file)!r}: {exc}", path=file
        ) from exc
    finally:
        os.close(fd)
