"""A checkpoint is validated before anything acts on it; a bad one never deletes committed data."""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_server import FakeAPI, listings
from json_paths import json_paths, json_values

from datafuel.errors import DatafuelError, IngestError
from datafuel.ingest import ingest, read_ingested

CURSOR = {"paginate": "cursor:next", "records_path": "data.items"}


def committed(tmp_path: Path, api: FakeAPI, name: str = "o") -> Path:
    """3 pages of 3 records committed (9 rows), the listing not finished."""
    out = tmp_path / name
    ingest(api.url, out, max_pages=3, prefetch=False, fsync=False, **CURSOR)
    return out


def parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.parquet"))}


def edit(out: Path, change: Any) -> None:
    state = json.loads((out / "_state.json").read_text())
    change(state)
    (out / "_state.json").write_text(json.dumps(state))


def test_negative_pages_no_longer_deletes_a_committed_part(tmp_path: Path) -> None:
    """The regression: pages -1 made the rerun delete a part; read_ingested gave 6 of 9 rows."""
    with FakeAPI(listings(30), page_size=3) as api:
        out = committed(tmp_path, api)
        before = parts(out)
        assert read_ingested(out).num_rows == 9 and len(before) == 3
        edit(out, lambda s: s.update(pages=-1))
        with pytest.raises(IngestError, match=r"_state\.json: key 'pages'") as info:
            ingest(api.url, out, **CURSOR)
    assert info.value.field == "pages"
    assert parts(out) == before
    assert read_ingested(out).num_rows == 9


def _pop(key: str) -> Any:
    return lambda s: s.pop(key)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda s: s.update(pages=1), "last_part"),  # lower: parts 1, 2 would have gone
        (lambda s: s.update(pages="3"), "pages"),
        (lambda s: s.update(pages=10**30), "pages"),
        (lambda s: s.update(records=-5), "records"),
        (lambda s: s.update(records=8), "records"),
        (lambda s: s.update(parts=2), "parts"),
        (lambda s: s.update(last_part="part-00000001.parquet"), "last_part"),
        (lambda s: s.update(status="finished"), "status"),
        (lambda s: s.update(next=[1, 2]), "next"),
        (lambda s: s["next"].update(index=-1), "next.index"),
        (lambda s: s["next"].update(url="file:///etc/passwd"), "next.url"),
        (lambda s: s["next"].update(params={"a": 1}), "next.params"),
        (lambda s: s["schema"].update(columns=["id"]), "schema.columns"),
        (lambda s: s["schema"]["columns"].update(id="decimal"), "schema.columns"),
        (lambda s: s.update(paginator=None), "paginator"),
        (lambda s: s.update(drift_bytes=10**6), "drift_bytes"),
        (lambda s: s.update(last_page_hash=7), "last_page_hash"),
        (lambda s: s["config"].update(page_size=0), "config.page_size"),
        (_pop("pages"), "pages"),
        (_pop("schema"), "schema"),
        (_pop("next"), "next"),
        (_pop("last_part"), "last_part"),
    ],
)
def test_an_invalid_state_names_the_key_and_deletes_nothing(
    tmp_path: Path, change: Any, key: str
) -> None:
    with FakeAPI(listings(30), page_size=3) as api:
        out = committed(tmp_path, api)
        before = parts(out)
        edit(out, change)
        with pytest.raises(IngestError, match=r"_state\.json") as info:
            ingest(api.url, out, **CURSOR)
    assert info.value.field == key, str(info.value)
    assert parts(out) == before


def test_a_missing_committed_part_is_an_error_not_a_silent_gap(tmp_path: Path) -> None:
    with FakeAPI(listings(30), page_size=3) as api:
        out = committed(tmp_path, api)
        (out / "part-00000001.parquet").unlink()
        with pytest.raises(IngestError, match="'parts'"):
            ingest(api.url, out, **CURSOR)
        (out / "part-00000002.parquet").unlink()
        with pytest.raises(IngestError, match="'last_part'"):
            ingest(api.url, out, **CURSOR)


def test_uncommitted_parts_are_still_discarded_when_the_state_is_valid(tmp_path: Path) -> None:
    with FakeAPI(listings(30), page_size=3) as api:
        out = committed(tmp_path, api)
        shutil.copy(out / "part-00000002.parquet", out / "part-00000003.parquet")  # never committed
        r = ingest(api.url, out, **CURSOR)
    assert r.records == 30
    assert read_ingested(out).column("id").to_pylist() == list(range(30))


# property: random mutations of a valid _state.json -------------------------------------
JSON_VALUES = json_values("part-00000001.parquet", "http://127.0.0.1:9/x", "done", "***", nan=False)


@st.composite
def mutations(draw: st.DrawFn, state: dict[str, Any]) -> dict[str, Any]:
    state = copy.deepcopy(state)
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(state)[1:]  # not the root
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = state
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        kind = draw(st.sampled_from(["delete", "replace", "wrap", "number"]))
        if kind == "delete":
            del parent[last]
        elif kind == "replace":
            parent[last] = draw(JSON_VALUES)
        elif kind == "wrap":
            parent[last] = draw(st.sampled_from([[parent[last]], {"v": parent[last]}]))
        else:
            parent[last] = draw(st.sampled_from([-1, 0, 1, 2, 3, 4, 10**6, 2**63, -(2**63)]))
    return state


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("golden")
    with FakeAPI(listings(15), page_size=3, lifetime=600, max_requests=100_000) as api:
        out = committed(base, api)
        yield api, out, json.loads((out / "_state.json").read_text())


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_mutated_state_resumes_or_raises_a_datafuel_error_and_loses_no_row(
    golden: Any, tmp_path: Path, data: st.DataObject
) -> None:
    api, src, state = golden
    mutated = data.draw(mutations(state))
    out = tmp_path / f"m{data.draw(st.integers(0, 10**9))}"
    shutil.copytree(src, out)
    (out / "_state.json").write_text(json.dumps(mutated))
    before = parts(out)
    with contextlib.suppress(DatafuelError):  # any other exception type fails the test
        ingest(api.url, out, max_attempts=1, timeout=5, fsync=False, **CURSOR)
    after = parts(out)
    assert all(after.get(name) == blob for name, blob in before.items())  # committed parts stay
    shutil.rmtree(out)
