"""A hostile recipe.json is refused as strictly as fit refuses bad input (issue 19).

Named cases first (wrong shapes, NaN caps, NaN or zero scales, unknown / missing /
mistyped / out-of-range parameters, bad or tampered .npy files, truncated or deeply
nested JSON), then a hypothesis property: any mutation of a valid recipe either loads
and transforms to finite values, or raises a DatafuelError subclass, never another type.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from json_paths import json_paths

import datafuel
from datafuel.clean import DropSparseRows, KNNImputer, ScrubInfinite, SimpleImputer, Winsorizer
from datafuel.errors import ConfigError, DatafuelError, InputDataError, NonFiniteError, SchemaError
from datafuel.scale import MinMaxScaler, StandardScaler

STEPS = {  # index in the recipe's steps -> class, as fitted below
    "ScrubInfinite": 0,
    "DropSparseRows": 1,
    "KNNImputer": 2,
    "SimpleImputer": 3,
    "Winsorizer": 4,
    "StandardScaler": 5,
    "MinMaxScaler": 6,
}
NPY = "recipe.step2.fit_X.npy"


def train_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 3)) * [3.0, 10.0, 50.0] + [0.0, 100.0, -20.0]
    X[rng.random(X.shape) < 0.1] = np.nan
    X[5] = np.nan  # a sparse row for DropSparseRows
    return X, rng.normal(size=60)


def fitted_recipe() -> datafuel.Recipe:
    X, y = train_data()
    return datafuel.Recipe(
        [
            ScrubInfinite(),
            DropSparseRows(0.5),
            KNNImputer(n_neighbors=3),
            SimpleImputer(),
            Winsorizer(0.05, 0.95),
            StandardScaler(),
            MinMaxScaler(),
        ],
        target_steps=[Winsorizer()],
    ).fit(X, y)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a valid recipe.json and its donor file (never modified)."""
    d = tmp_path_factory.mktemp("valid")
    fitted_recipe().save(d / "recipe.json", extra={"columns": {"a": {"kind": "float"}}})
    return d


def copy_of(saved: Path, dest: Path) -> Path:
    """A fresh copy of the valid recipe in ``dest``; returns its recipe.json."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in saved.iterdir():
        shutil.copy(f, dest / f.name)
    return dest / "recipe.json"


def edit(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))


def fitted(state: dict[str, Any], cls: str) -> dict[str, Any]:
    return state["steps"][STEPS[cls]]["fitted"]  # type: ignore[no-any-return]


def params(state: dict[str, Any], cls: str) -> dict[str, Any]:
    return state["steps"][STEPS[cls]]["params"]  # type: ignore[no-any-return]


def set_value(cls: str, attr: str, j: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        fitted(state, cls)[attr]["data"][j] = value

    return change


def write_npy(path: Path, arr: np.ndarray) -> None:
    """Replace the donor file with ``arr`` and record its true SHA-256, dtype and shape."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    (path.parent / NPY).write_bytes(buf.getvalue())
    sha = hashlib.sha256(buf.getvalue()).hexdigest()

    def change(state: dict[str, Any]) -> None:
        fitted(state, "KNNImputer")["fit_X_"].update(
            sha256=sha, dtype=arr.dtype.str, shape=list(arr.shape)
        )

    edit(path, change)


def refused(path: Path, error: type[DatafuelError], *needles: str) -> DatafuelError:
    with pytest.raises(error) as info:
        datafuel.Recipe.load(path)
    message = str(info.value)
    for needle in (str(path.parent), *needles):
        assert needle in message, message
    return info.value


def test_the_valid_recipe_loads_and_saves_the_same_bytes(saved: Path, tmp_path: Path) -> None:
    recipe = datafuel.Recipe.load(saved / "recipe.json")
    again = tmp_path / "recipe.json"
    recipe.save(again, extra={"columns": {"a": {"kind": "float"}}})
    assert again.read_bytes() == (saved / "recipe.json").read_bytes()
    X, y = train_data(1)
    Xt, yt = recipe.transform(X, y)
    assert np.isfinite(Xt).all() and np.isfinite(yt).all()


# -- wrong shapes ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "attr", "data", "shape", "needle"),
    [
        ("Winsorizer", "lower_caps_", [0.0, 1.0], [2], "must have shape (3,)"),
        ("StandardScaler", "scale_", [1.0] * 4, [4], "must have shape (3,)"),
        ("MinMaxScaler", "min_", [0.0] * 3, [3, 1], "must have shape (3,)"),
        ("SimpleImputer", "statistics_", [1.0, 2.0], [3], "holds 2 values"),
        ("KNNImputer", "col_means_", [[1.0], [2.0], [3.0]], [3], "must be one of 3 numbers"),
    ],
)
def test_wrong_shape_arrays_are_refused(
    saved: Path, tmp_path: Path, cls: str, attr: str, data: Any, shape: list[int], needle: str
) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: fitted(s, cls)[attr].update(data=data, shape=shape))
    refused(path, SchemaError, f"steps[{STEPS[cls]}] ({cls})", f"fitted.{attr}", needle)


def test_wrong_feature_count_across_steps_is_refused(saved: Path, tmp_path: Path) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: s.update(n_features_in=4))
    refused(path, SchemaError, "steps[0] (ScrubInfinite)", "n_features_in_ must be 4")
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: s["target_steps"][0]["fitted"].update(n_features_in_=3))
    refused(path, SchemaError, "target_steps[0] (Winsorizer)", "shape (3,)")


@pytest.mark.parametrize(
    ("arr", "error", "needle"),
    [
        (np.zeros((5, 2)), SchemaError, "shape (n, 3)"),  # wrong column count
        (np.zeros(15), SchemaError, "shape (n, 3)"),  # 1-D
        (np.zeros((0, 3)), SchemaError, "shape (n, 3)"),  # no donor
        (np.zeros((5, 3), dtype=np.int64), SchemaError, "dtype"),
        (np.full((5, 3), np.inf), NonFiniteError, "fit_X_[0, 0]"),
        (np.c_[np.zeros((5, 2)), np.full(5, np.nan)], SchemaError, "column 2"),
        (np.array([[None] * 3] * 5, dtype=object), InputDataError, "cannot load"),  # pickle
    ],
)
def test_donor_arrays_with_a_matching_fingerprint_are_still_checked(
    saved: Path, tmp_path: Path, arr: np.ndarray, error: type[DatafuelError], needle: str
) -> None:
    path = copy_of(saved, tmp_path)
    write_npy(path, arr)
    refused(path, error, "steps[2] (KNNImputer)", needle)


# -- NaN caps, NaN or zero scales ---------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("attr", ["lower_caps_", "upper_caps_"])
def test_non_finite_caps_are_refused(saved: Path, tmp_path: Path, attr: str, value: float) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, set_value("Winsorizer", attr, 1, value))
    refused(path, NonFiniteError, "steps[4] (Winsorizer)", f"fitted.{attr}[1] must be finite")


def test_crossed_caps_are_refused(saved: Path, tmp_path: Path) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, set_value("Winsorizer", "lower_caps_", 0, 1e9))
    refused(path, SchemaError, "lower_caps_[0] must be <= upper_caps_")


@pytest.mark.parametrize(
    ("cls", "attr", "value", "error", "needle"),
    [
        ("StandardScaler", "scale_", float("nan"), NonFiniteError, "scale_[1] must be finite"),
        ("StandardScaler", "scale_", 0.0, SchemaError, "scale_[1] must be sqrt(var_)"),
        ("StandardScaler", "scale_", -2.0, SchemaError, "scale_[1] must be sqrt(var_)"),
        ("StandardScaler", "mean_", float("nan"), NonFiniteError, "mean_[1] must be finite"),
        ("StandardScaler", "var_", -1.0, SchemaError, "var_[1] must be m2_ / n_samples_seen_"),
        ("StandardScaler", "n_samples_seen_", 0, SchemaError, "at least 1"),
        ("MinMaxScaler", "scale_", 0.0, SchemaError, "scale_[1] must be the feature range"),
        ("MinMaxScaler", "scale_", float("inf"), NonFiniteError, "scale_[1] must be finite"),
        ("MinMaxScaler", "min_", float("nan"), NonFiniteError, "min_[1] must be finite"),
        ("MinMaxScaler", "data_max_", -1e9, SchemaError, "data_min_[1] must be <= data_max_"),
        ("SimpleImputer", "statistics_", float("nan"), NonFiniteError, "statistics_[1]"),
        ("SimpleImputer", "statistics_", 7.0, SchemaError, "sum_ / n_samples_seen_"),
        ("KNNImputer", "col_means_", float("inf"), NonFiniteError, "col_means_[1]"),
    ],
)
def test_nan_or_zero_scales_and_statistics_are_refused(
    saved: Path,
    tmp_path: Path,
    cls: str,
    attr: str,
    value: float,
    error: type[DatafuelError],
    needle: str,
) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, set_value(cls, attr, 1, value))
    refused(path, error, f"steps[{STEPS[cls]}] ({cls})", needle)


def test_a_constant_column_keeps_scale_one_as_fit_gives_it(tmp_path: Path) -> None:
    X = np.c_[np.full(20, 3.0), np.arange(20.0)]
    recipe = datafuel.Recipe([StandardScaler(), MinMaxScaler()]).fit(X)
    assert recipe.steps[0].scale_[0] == 1.0 and recipe.steps[1].data_range_[0] == 0.0
    recipe.save(tmp_path / "recipe.json")
    loaded = datafuel.Recipe.load(tmp_path / "recipe.json")
    np.testing.assert_array_equal(loaded.transform(X), recipe.transform(X))


# -- parameters ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "change", "error", "needle"),
    [
        ("KNNImputer", lambda p: p.update(k=3), SchemaError, "unknown key 'k'"),
        ("Winsorizer", lambda p: p.pop("upper"), SchemaError, "missing key 'upper'"),
        ("KNNImputer", lambda p: p.update(n_neighbors="3"), ConfigError, "n_neighbors"),
        ("KNNImputer", lambda p: p.update(n_neighbors=3.0), ConfigError, "n_neighbors"),
        ("KNNImputer", lambda p: p.update(weights=None), ConfigError, "weights"),
        ("KNNImputer", lambda p: p.update(device=["cpu"]), ConfigError, "device"),
        ("KNNImputer", lambda p: p.update(block_size=65536, donor_block=2**20), ConfigError, "x"),
        ("SimpleImputer", lambda p: p.update(strategy="mode"), ConfigError, "strategy"),
        ("SimpleImputer", lambda p: p.update(strategy="median"), SchemaError, "'sum_'"),
        ("Winsorizer", lambda p: p.update(lower=float("nan")), ConfigError, "lower"),
        ("Winsorizer", lambda p: p.update(lower=0.99, upper=0.01), ConfigError, "lower must be"),
        ("DropSparseRows", lambda p: p.update(max_missing_ratio=True), ConfigError, "max_missing"),
        ("StandardScaler", lambda p: p.update(with_std=1), ConfigError, "with_std must be a bool"),
        ("MinMaxScaler", lambda p: p.update(feature_range=[0, 10**400]), ConfigError, "range"),
        ("MinMaxScaler", lambda p: p.update(feature_range={"0": 1}), ConfigError, "range"),
        ("MinMaxScaler", lambda p: p.update(clip="yes"), ConfigError, "clip must be a bool"),
    ],
)
def test_unknown_missing_or_mistyped_parameters_are_refused(
    saved: Path,
    tmp_path: Path,
    cls: str,
    change: Callable[[dict[str, Any]], Any],
    error: type[DatafuelError],
    needle: str,
) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: change(params(s, cls)))
    refused(path, error, f"steps[{STEPS[cls]}] ({cls})", needle)


@pytest.mark.parametrize("k", [-3, 0, 10**12, True])
def test_out_of_range_n_neighbors_is_refused_on_load_as_by_fit(
    saved: Path, tmp_path: Path, k: Any
) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: params(s, "KNNImputer").update(n_neighbors=k))
    err = refused(path, ConfigError, "steps[2] (KNNImputer)", "params: n_neighbors")
    with pytest.raises(ConfigError) as by_fit:
        KNNImputer(n_neighbors=k).fit(train_data()[0])
    assert str(by_fit.value) in str(err)  # one rule, one message


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda s: s.update(surprise=1), "unknown key 'surprise'"),
        (lambda s: s.pop("fit_report"), "missing key 'fit_report'"),
        (lambda s: s.update(n_features_in="3"), "n_features_in must be"),
        (lambda s: s.update(n_train_rows=0), "n_train_rows must be"),
        (lambda s: s.update(feature_names=["a"]), "feature_names must be"),
        (lambda s: s.update(steps={}), "steps must be a list"),
        (lambda s: s["steps"].__setitem__(0, "ScrubInfinite"), "class must be one of"),
        (lambda s: s["steps"][0].update({"class": "Pickle"}), "class must be one of"),
        (lambda s: s["steps"][0].pop("fitted"), "missing key 'fitted'"),
        (lambda s: s["steps"][3].update(fitted=[]), "fitted must be an object"),
        (lambda s: s["steps"][3]["fitted"].update(extra_=[]), "unknown key 'extra_'"),
        (lambda s: s["steps"][3]["fitted"]["sum_"].update(dtype="|O"), "dtype must be"),
        (lambda s: s["steps"][3]["fitted"]["sum_"].update(data="1,2,3"), "data must be a list"),
        (lambda s: s["steps"][3]["fitted"]["n_samples_seen_"]["data"].__setitem__(0, 1.5), "ints"),
        (lambda s: s["steps"][3]["fitted"]["sum_"]["data"].__setitem__(0, True), "numbers"),
        (lambda s: s["fit_report"].pop(), "fit_report must be a list of 8"),
        (lambda s: s["fit_report"][0].update(step=[{}]), "fit_report[0]"),
    ],
)
def test_malformed_structure_is_a_schema_error(
    saved: Path, tmp_path: Path, change: Callable[[dict[str, Any]], Any], needle: str
) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, change)
    refused(path, SchemaError, needle)


# -- .npy references ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["../recipe.step2.fit_X.npy", "/etc/passwd", "sub/x.npy", "recipe.json", 7, None]
)
def test_npy_names_must_be_plain_files_beside_the_recipe(
    saved: Path, tmp_path: Path, name: Any
) -> None:
    path = copy_of(saved, tmp_path / "r")
    edit(path, lambda s: fitted(s, "KNNImputer")["fit_X_"].update(npy=name))
    refused(path, InputDataError, "steps[2] (KNNImputer)", "not a plain name")


def test_npy_links_out_of_the_directory_and_odd_files_are_refused(
    saved: Path, tmp_path: Path
) -> None:
    path = copy_of(saved, tmp_path / "r")
    outside = tmp_path / "outside.npy"
    shutil.copy(path.parent / NPY, outside)
    (path.parent / NPY).unlink()
    (path.parent / NPY).symlink_to(outside)  # same bytes, so the SHA-256 would match
    refused(path, InputDataError, "outside the recipe's directory")
    (path.parent / NPY).unlink()
    refused(path, InputDataError, "is missing")
    (path.parent / NPY).mkdir()
    refused(path, InputDataError, "not a regular file")
    (path.parent / NPY).rmdir()
    os.mkfifo(path.parent / NPY)  # reading it would block forever
    refused(path, InputDataError, "not a regular file")
    (path.parent / NPY).unlink()
    # a link inside the directory to a file inside it is fine
    shutil.copy(outside, path.parent / "donors.npy")
    (path.parent / NPY).symlink_to("donors.npy")
    datafuel.Recipe.load(path)


def test_tampered_npy_fails_its_fingerprint(saved: Path, tmp_path: Path) -> None:
    path = copy_of(saved, tmp_path)
    raw = bytearray((path.parent / NPY).read_bytes())
    raw[-1] ^= 1
    (path.parent / NPY).write_bytes(bytes(raw))
    refused(path, InputDataError, "steps[2] (KNNImputer)", "SHA-256")
    (path.parent / NPY).write_bytes(bytes(raw[:-8]))  # truncated
    refused(path, InputDataError, "SHA-256")
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: fitted(s, "KNNImputer")["fit_X_"].update(sha256="0" * 63))
    refused(path, SchemaError, "sha256 must be 64")
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: fitted(s, "KNNImputer")["fit_X_"].update(shape=[2, 3]))
    refused(path, InputDataError, "the recipe says shape [2, 3]")
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: fitted(s, "KNNImputer").update(fit_X_={"data": [], "dtype": "<f8"}))
    refused(path, SchemaError, "must be a reference to a .npy file")


# -- unreadable JSON ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "cannot read recipe"),
        ('{"format": "datafuel-recipe", "version": 1, "steps": [', "cannot read recipe"),
        ("[" * 100_000 + "]" * 100_000, "cannot read recipe"),
        ('{"format": "datafuel-recipe", "version": true}', "recipe version"),
        ("[]", "not a datafuel recipe"),
    ],
)
def test_truncated_or_deep_json_is_an_input_data_error(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "recipe.json"
    path.write_text(text)
    refused(path, InputDataError, needle)
    path.write_bytes(b"\xff\xfe{")
    refused(path, InputDataError, "cannot read recipe")


def test_deep_nesting_that_json_accepts_is_refused_before_checking(
    saved: Path, tmp_path: Path
) -> None:
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: s.update(extra=json.loads("[" * 900 + "]" * 900)))
    refused(path, InputDataError, "more than 64 levels")
    path = copy_of(saved, tmp_path)
    edit(path, lambda s: params(s, "KNNImputer").update(weights=json.loads("[" * 60 + "]" * 60)))
    refused(path, ConfigError, "weights")


# -- property: mutations raise DatafuelError or load and transform to finite values -----


def _valid_state() -> dict[str, Any]:
    d = Path(tempfile.mkdtemp())
    try:
        fitted_recipe().save(d / "recipe.json", extra={"columns": {"a": {"kind": "float"}}})
        return json.loads((d / "recipe.json").read_text())  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(d)


PATHS = [p for p in json_paths(_valid_state()) if p]
ODD = st.sampled_from(
    [
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        0,
        -3,
        10**12,
        10**400,
        1e308,
        -1e308,
        1e-300,
        True,
        None,
        "",
        "x",
        "../x.npy",
        "/etc/passwd",
        "median",
        "distance",
        "cpu",
        "<f4",
        "<i8",
        [],
        {},
        [1.0],
        [[1.0, 2.0, 3.0]],
        ["a", "b", "c"],
        {"npy": NPY},
        {"dtype": "<f8", "shape": [3], "data": [0.0, 1.0, 2.0]},
    ]
)
VALUE = st.one_of(ODD, st.floats(), st.integers(), st.text(max_size=5))


def _get(obj: Any, path: tuple[Any, ...]) -> tuple[Any, Any] | None:
    """The container holding ``path`` and the last key, if the path still exists."""
    for key in path[:-1]:
        try:
            obj = obj[key]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(obj, dict) and path[-1] in obj:
        return obj, path[-1]
    if isinstance(obj, list) and isinstance(path[-1], int) and path[-1] < len(obj):
        return obj, path[-1]
    return None


@st.composite
def mutation(draw: st.DrawFn) -> tuple[str, tuple[Any, ...], Any]:
    kind = draw(st.sampled_from(["delete", "replace", "replace", "wrap", "resize", "add_key"]))
    return kind, draw(st.sampled_from(PATHS)), draw(VALUE)


def _apply(state: dict[str, Any], kind: str, path: tuple[Any, ...], value: Any) -> None:
    found = _get(state, path)
    if found is None:
        return
    parent, key = found
    if kind == "delete":
        del parent[key]
    elif kind == "replace":
        parent[key] = value
    elif kind == "wrap":
        parent[key] = [parent[key]] if isinstance(value, (int, float)) else {"v": parent[key]}
    elif kind == "resize":
        if isinstance(parent[key], list):
            parent[key] = parent[key][:-1] if parent[key] and value else [*parent[key], 1.0]
    elif kind == "add_key" and isinstance(parent[key], dict):
        parent[key]["surplus_"] = value


FILE_DAMAGE = st.sampled_from(["none", "none", "none", "truncate", "deep", "npy_flip", "npy_cut"])


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mutations=st.lists(mutation(), min_size=1, max_size=3),
    damage=FILE_DAMAGE,
    cut=st.floats(0.0, 1.0),
)
def test_mutated_recipes_raise_only_datafuel_errors(
    saved: Path,
    mutations: list[tuple[str, tuple[Any, ...], Any]],
    damage: str,
    cut: float,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = copy_of(saved, Path(tmp))
        state = json.loads(path.read_text())
        for kind, where, value in copy.deepcopy(mutations):
            _apply(state, kind, where, value)
        text = json.dumps(state)  # NaN and Infinity become JSON's NaN / Infinity tokens
        if damage == "truncate":
            text = text[: int(cut * len(text))]
        elif damage == "deep":
            text = text[:-1] + ', "extra": ' + "[" * 5000 + "]" * 5000 + "}"
        path.write_text(text)
        npy = path.parent / NPY
        if damage == "npy_flip":
            raw = bytearray(npy.read_bytes())
            raw[int(cut * (len(raw) - 1))] ^= 0x20
            npy.write_bytes(bytes(raw))
        elif damage == "npy_cut":
            npy.write_bytes(npy.read_bytes()[: int(cut * npy.stat().st_size)])
        try:
            recipe = datafuel.Recipe.load(path)
        except DatafuelError as exc:
            event(f"refused: {type(exc).__name__}")
            return
        event("loaded")
        X, y = train_data(2)
        Xt, yt = recipe.transform(X, y)
        assert Xt.shape[1] == 3 and Xt.shape[0] == yt.shape[0] <= X.shape[0]
        assert np.isfinite(Xt).all(), (mutations, Xt)
        assert np.isfinite(yt).all()
