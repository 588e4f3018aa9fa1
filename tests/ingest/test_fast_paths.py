"""The columnar fast paths give what the record-by-record code gives.

The ingest loop flattens a page straight into columns (:func:`flatten_columns`), types
each column in one pass (:meth:`SchemaTracker.observe_columns`) and builds the part
from the lists (:meth:`SchemaTracker.table_from_columns`); HTML links are resolved
without re-parsing the page URL for plain ``/path`` references. Each is checked here
against the plain code it replaces, on hostile input: nested, ragged, mixed-type and
colliding records, ints around 2**53 and 2**63, and odd references.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any
from urllib.parse import urljoin

import pytest

from datafuel.errors import PaginationError, SchemaError
from datafuel.ingest import PageRequest, PageResponse, SchemaTracker, flatten_record
from datafuel.ingest._concurrent import READY_PAGES, ConcurrentFetcher
from datafuel.ingest._flatten import flatten_columns
from datafuel.ingest._html import _Base
from datafuel.ingest._ingest import _flatten_page
from datafuel.ingest._paginate import make_paginator
from datafuel.ingest._prefetch import FetchedPage, page_hash
from datafuel.ingest._schema import _page_types, column_type
from datafuel.ingest._throttle import Throttle

_SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**53,
    2**53 + 1,
    -(2**53) - 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**70,
    0.0,
    -0.5,
    1e300,
    float("inf"),
    "",
    "x",
    "17",
    "true",
    "é ✓",
]
_KEYS = ["a", "b", "c", "a.b", "d.e", "1", ""]


def _value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.2:
        return {rng.choice(_KEYS): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if roll < 0.3:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return rng.choice(_SCALARS)


def _records(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Ragged records: keys come and go, types change, objects nest and go empty."""
    return [{rng.choice(_KEYS): _value(rng, 0) for _ in range(rng.randint(0, 5))} for _ in range(n)]


def _flat_or_error(rec: dict[str, Any]) -> dict[str, Any] | str:
    try:
        return flatten_record(rec)
    except SchemaError as exc:
        return str(exc)


def _as_rows(columns: dict[str, list[Any]], n: int, rows: list[dict[str, Any]]) -> None:
    """The columns agree with the rows: same names in the same order, same values."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    assert list(columns) == list(names)
    for name, values in columns.items():
        assert len(values) == n
        for row, v in zip(rows, values, strict=True):
            got, want = v, row.get(name)
            assert type(got) is type(want) and (got == want or got != got), (name, got, want)


@pytest.mark.parametrize("seed", range(40))
def test_flatten_columns_equals_flatten_record_on_hostile_records(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(20):
        records = _records(rng, rng.randint(0, 12))
        flat = [_flat_or_error(r) for r in records]
        errors = [f for f in flat if isinstance(f, str)]
        if errors:
            with pytest.raises(SchemaError) as caught:
                flatten_columns(records)
            assert str(caught.value) == errors[0]  # the first collision, as one by one
            continue
        rows = [f for f in flat if isinstance(f, dict)]
        _as_rows(flatten_columns(records), len(records), rows)


def test_flatten_columns_pads_missing_names_and_keeps_first_appearance_order() -> None:
    records = [{"b": 1}, {}, {"a": {"x": None, "y": []}, "b": {}}, {"c": [1, {"z": 2}]}]
    assert flatten_columns(records) == {
        "b": [1, None, None, None],
        "a.x": [None, None, None, None],
        "a.y": [None, None, "[]", None],
        "c": [None, None, None, '[1,{"z":2}]'],
    }
    assert flatten_columns([]) == {}
    with pytest.raises(SchemaError, match="'a.b'"):
        flatten_columns([{"a.b": 1}, {"a.b": 1, "a": {"b": 2}}])


@pytest.mark.parametrize("seed", range(20))
def test_flatten_columns_on_records_of_one_size_with_different_keys(seed: int) -> None:
    """Mappings of one size are taken to share the first one's keys until a column shows a
    record without one of them: records of equal size but other keys, and absent parents."""
    rng = random.Random(seed)
    for _ in range(20):
        records: list[dict[str, Any]] = [
            {rng.choice("abc"): rng.choice(_SCALARS), rng.choice("xyz"): {rng.choice("pq"): 1}}
            for _ in range(rng.randint(1, 10))
        ]
        if rng.random() < 0.5:  # parents absent or scalar in some records
            records.append({"x": 1, "a": 2})
        flat = [_flat_or_error(r) for r in records]
        errors = [f for f in flat if isinstance(f, str)]
        if errors:
            with pytest.raises(SchemaError):
                flatten_columns(records)
            continue
        rows = [f for f in flat if isinstance(f, dict)]
        _as_rows(flatten_columns(records), len(records), rows)
    uniform = [{"a": 1, "b": {"c": 2}}, {"b": {"c": 3}, "a": 4}, {"a": 5, "d": {"c": 6}}]
    assert flatten_columns(uniform) == {
        "a": [1, 4, 5],
        "b.c": [2, 3, None],
        "d.c": [None, None, 6],
    }


def _typed_values(rng: random.Random) -> list[Any]:
    pools = [
        [1, 2, -3, None],
        [0.5, None, 2.0],
        [1, 0.5],
        [True, False, None],
        ["x", None],
        [2**53, -(2**53), 1.5],
        [2**53 + 1, 1.5],
        [1.5, 2**60],
        [2**63, 1],
        [-(2**63) - 1],
        [2**63 - 1, None],
        [True, 1],
        [1, "1"],
        [None],
        _SCALARS,
    ]
    pool = rng.choice(pools)
    return [rng.choice(pool) for _ in range(rng.randint(1, 8))]


@pytest.mark.parametrize("seed", range(40))
def test_column_type_equals_the_value_by_value_rules(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        values = _typed_values(rng)
        types, big = _page_types([{"k": v} for v in values])
        assert column_type(values) == (types["k"], "k" in big), values


@pytest.mark.parametrize("seed", range(30))
def test_observe_columns_and_table_from_columns_equal_the_row_path(seed: int) -> None:
    """Page after page of drifting records: the same schema, drift events, checkpoint
    state and Parquet table (a group of pages at once too) from columns as from rows."""
    rng = random.Random(seed)
    by_rows, by_cols = SchemaTracker(), SchemaTracker()
    group: list[tuple[dict[str, list[Any]], int]] = []
    group_rows: list[dict[str, Any]] = []
    for page in range(12):
        records = [
            r for r in _records(rng, rng.randint(0, 6)) if isinstance(_flat_or_error(r), dict)
        ]
        if rng.random() < 0.5:  # a column of ints, floats or mixed scalars beside them
            pool = rng.choice([[1, 2**53], [1, 2.5], [2**60], [2**64], [True], [None], ["s"]])
            for r in records:
                r["n"] = rng.choice(pool)
        rows = [flatten_record(r) for r in records]
        cols = flatten_columns(records)
        events = by_rows.observe(rows, page=page)
        assert by_cols.observe_columns(cols, len(records), page=page) == events
        assert by_cols.state_dict() == by_rows.state_dict()
        group.append((cols, len(records)))
        group_rows += rows
        if rng.random() < 0.4 or page == 11:
            assert by_cols.table_from_columns(group).equals(by_rows.to_table(group_rows))
            group, group_rows = [], []


def _fetched(records: list[dict[str, Any]], columns: dict[str, list[Any]] | None) -> FetchedPage:
    request = PageRequest("http://h/items", (("page", "1"),), 0)
    response = PageResponse(body=None, headers={}, url="http://h/items", records=records)
    return FetchedPage(request, response, None, None, {}, None, columns)


def test_dropped_duplicates_take_their_names_out_of_the_page() -> None:
    """A name only re-sent records had is not the page's: its drift is that of the kept rows."""
    records = [{"id": 1, "old": "x"}, {"id": 2, "n": None}, {"id": 3}]
    seen = {"1"}
    cols, n, dropped = _flatten_page(_fetched(records, flatten_columns(records)), "id", seen)
    assert (cols, n, dropped) == ({"id": [2, 3], "n": [None, None]}, 2, 1)
    assert seen == {"1", "2", "3"}
    t = SchemaTracker()
    t.observe([{"id": 0, "old": "y"}], page=0)
    events = t.observe_columns(cols, n, page=1)
    assert [(e.kind, e.field) for e in events] == [("new_field", "n"), ("missing_field", "old")]


def test_a_record_that_cannot_be_flattened_is_named() -> None:
    records = [{"id": 1}, {"id": 2, "a.b": 1, "a": {"b": 2}}]
    with pytest.raises(SchemaError, match=r"page 0 .*record 1: two fields flatten to .*'a.b'"):
        _flatten_page(_fetched(records, None), None, set())
    with pytest.raises(SchemaError, match=r"record 1 has no primary key 'key'"):
        _flatten_page(_fetched([{"key": 1}, {"x": 2}], None), "key", set())


@pytest.mark.parametrize(
    "base",
    [
        "http://h/list?page=3",
        "https://Ex.AMPLE.com:8443/a/b/c;p?q=1#f",
        "http://u:p@h:80/",
        "HTTP://H/x",
        "https://h",
        "ftp://h/x",
        "http:///x",
    ],
)
def test_link_resolution_equals_urljoin(base: str) -> None:
    rng = random.Random(base)
    alphabet = "/abc.;?#%:@!$&'()*+,=~_-AZ09 \t\\\n/..//é"
    refs = ["/", "/a", "/a/", "/a//b", "/./a", "/a/../b", "/a/.", "/a/..", "/.h", "/a?b#c"]
    refs += ["/a#b?c", "//h/x", "/a;b", "/item/3/0", "/a/b.c/d?x=../y#../z", "/?", "/#", "/a?#b"]
    refs += ["x", "", "?p=2", "#f", "../up", "http://o/x", "javascript:alert(1)"]
    refs += [
        "/" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(20000)
    ]
    b = _Base(base)
    for ref in refs:
        assert b.join(ref) == urljoin(base, ref), ref


def test_link_resolution_is_linear_on_a_long_reference() -> None:
    b = _Base("http://h/list")
    ref = "/" + "a" * 200_000 + ";"  # no match, found without backtracking
    t0 = time.perf_counter()
    assert b.join(ref) == urljoin("http://h/list", ref)
    assert time.perf_counter() - t0 < 1.0


class _Fetches:
    """A fake page source: page ``i`` holds one record; ``hold`` pages wait for ``release``."""

    def __init__(self, hold: int | None = None) -> None:
        self.asked: list[int] = []
        self.hold = hold
        self.release = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, request: PageRequest) -> PageResponse:
        with self.lock:
            self.asked.append(request.index)
        if request.index == self.hold:
            self.release.wait(10)
        return PageResponse(
            body=None, headers={}, url="u", records=[{"id": request.index}], size=10
        )


def _fetcher(fetches: _Fetches, window: int) -> ConcurrentFetcher:
    paginator = make_paginator("page")
    first = paginator.first("http://h/items", None)
    return ConcurrentFetcher(
        fetches, paginator, first, Throttle(4), max_pages=None, last_hash=None, window=window
    )


def _settle(fetches: _Fetches) -> int:
    """How many pages were asked for once the workers stop asking."""
    seen = -1
    while len(fetches.asked) != seen:
        seen = len(fetches.asked)
        time.sleep(0.5)
    return seen


def test_pages_waiting_for_the_writer_do_not_hold_back_fetching_beyond_the_window() -> None:
    """While the writer commits (takes nothing), pages that arrived in order go on being
    fetched past the window, up to READY_PAGES more; never further."""
    fetches = _Fetches()
    fetcher = _fetcher(fetches, window=4)
    try:
        assert _settle(fetches) == 4 + READY_PAGES
        pages, error, ended = fetcher.take(1000)
        assert [p.request.index for p in pages] == list(range(4 + READY_PAGES)) and error is None
        assert not ended and pages[0].columns == {"id": [0]}
    finally:
        fetcher.close(timeout=5)


def test_a_slow_page_holds_back_no_more_than_the_window_behind_it() -> None:
    fetches = _Fetches(hold=2)
    fetcher = _fetcher(fetches, window=4)
    try:
        _settle(fetches)
        assert max(fetches.asked) == 2 + 4 - 1  # pages 3..5 only: within the window of page 2
        fetches.release.set()
        assert _settle(fetches) == 4 + READY_PAGES
    finally:
        fetches.release.set()
        fetcher.close(timeout=5)


def test_flattened_pages_drop_their_records_unless_asked_to_keep_them() -> None:
    """Past the probe, a flattened page keeps its columns, count and fingerprint only; the
    writer's loop check still sees a page that repeats the one before it."""
    paginator = make_paginator("page")
    first = paginator.first("http://h/items", None)
    for keep in (False, True):
        fetcher = ConcurrentFetcher(
            _Fetches(),
            paginator,
            first,
            Throttle(4),
            max_pages=6,
            last_hash=None,
            keep_records=keep,
        )
        try:
            pages: list[FetchedPage] = []
            while len(pages) < 6:
                got, error, _ = fetcher.take(100)
                assert error is None
                pages += got
        finally:
            fetcher.close(timeout=5)
        assert [p.columns for p in pages] == [{"id": [i]} for i in range(6)]
        assert pages[0].response.records == [{"id": 0}]  # the probe keeps its own
        for p in pages[1:]:
            records = p.response.records
            assert len(records) == 1 and bool(records)
            assert (records == [{"id": p.request.index}]) is keep
            assert (p.response.body is None) and type(records).__name__ == (
                "list" if keep else "RecordCount"
            )
        assert pages[-1].last_hash == page_hash([{"id": 5}])  # the same fingerprint either way

    class _Same(_Fetches):  # an API that ignores ?page=: every page is page 0's
        def __call__(self, request: PageRequest) -> PageResponse:
            return PageResponse(body=None, headers={}, url="u", records=[{"id": 0}], size=10)

    fetcher = ConcurrentFetcher(
        _Same(), paginator, first, Throttle(4), max_pages=None, last_hash=None, keep_records=False
    )
    try:
        error = None
        for _ in range(50):
            _, error, ended = fetcher.take(100)
            if error is not None or ended:
                break
        assert isinstance(error, PaginationError) and "exactly the same records" in str(error)
    finally:
        fetcher.close(timeout=5)


def test_each_worker_thread_has_its_own_client_and_close_closes_them_all() -> None:
    from ingest_server import FakeAPI, listings

    from datafuel.ingest import RestSource

    with FakeAPI(listings(30), page_size=10, style="page") as api:
        source = RestSource(records_path="data.items")
        got: dict[int, list[Any]] = {}

        def fetch(page: int) -> None:
            request = PageRequest(api.url, (("page", str(page)),), page - 1)
            got[page] = [r["id"] for r in source.fetch(request).records]

        threads = [threading.Thread(target=fetch, args=(p,)) for p in (1, 2, 3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert got == {p: list(range((p - 1) * 10, p * 10)) for p in (1, 2, 3)}
        clients = list(source._clients)
        assert len(clients) == 4 and len({id(c) for c in clients}) == 4  # the main one + 3
        source.close()
        assert all(c.is_closed for c in clients)
        with pytest.raises(RuntimeError, match="closed"):
            source.fetch(PageRequest(api.url, (("page", "1"),), 0))


def test_robots_txt_read_beside_the_checkpoint_still_comes_first_and_still_refuses(
    tmp_path: Any,
) -> None:
    """robots.txt is read on a thread while the checkpoint opens: a 5xx (RFC 9309:
    disallow all) is still an error, and no page is asked for before robots.txt is in."""
    from hostile_server import HostileServer, Reply, Seen

    from datafuel.errors import IngestError
    from datafuel.ingest import ingest
    from datafuel.ingest._html import HtmlSpec

    status = {"robots": 503}

    def route(server: HostileServer, seen: Seen) -> Reply:
        if seen.path == "/robots.txt":
            time.sleep(0.1)  # slower than opening the checkpoint
            return Reply(status["robots"], {}, b"")
        return Reply(200, {}, b"<html><p>no listings</p></html>")

    spec = HtmlSpec("article", {"name": "h2::text"})
    with HostileServer(route) as srv:
        with pytest.raises(IngestError, match=r"robots.txt answered HTTP 503"):
            ingest(srv.url("/list"), tmp_path / "o", html=spec, rate=1000.0)
        assert [s.path for s in srv.seen] == ["/robots.txt"]
        status["robots"] = 404
        r = ingest(srv.url("/list"), tmp_path / "o", html=spec, rate=1000.0)
        assert [s.path for s in srv.seen][1:3] == ["/robots.txt", "/list"]
    assert r.status == "done" and r.records == 0
