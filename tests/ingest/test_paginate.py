from __future__ import annotations

from pathlib import Path

import pytest
from ingest_server import FakeAPI, FakeClock, encode_cursor, listings

from datafuel.errors import ConfigError, PaginationError
from datafuel.ingest import (
    CursorPaginator,
    PageRequest,
    PageResponse,
    RetryPolicy,
    ingest,
    make_paginator,
    parse_link_header,
    read_ingested,
)

STYLES = [("page", "page"), ("offset", "offset"), ("cursor", "cursor:next"), ("link", "link")]


def ids(out: Path) -> list[int]:
    return read_ingested(out).column("id").to_pylist()


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize(("style", "spec"), STYLES)
@pytest.mark.parametrize("n", [0, 1, 10, 47])
def test_every_paginator_reads_every_record_once(
    tmp_path: Path, style: str, spec: str, n: int, concurrency: int
) -> None:
    with FakeAPI(listings(n), page_size=10, style=style) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            paginate=spec,
            records_path="data.items",
            page_size=10,
            concurrency=concurrency,
        )
        served = list(api.served)
    assert r.status == "done" and r.records == n
    assert r.pages == -(-n // 10)
    if n:
        assert ids(tmp_path / "o") == list(range(n))
    else:
        assert not list((tmp_path / "o").glob("*.parquet"))
    # page/offset end on an empty page; cursor/link end when the next pointer is missing
    if concurrency == 1 or style in ("cursor", "link"):
        assert len(served) in (r.pages, r.pages + 1)
    else:  # plus at most the requests in flight past the end, which are discarded
        assert r.pages <= len(served) <= r.pages + 1 + concurrency
    assert all(s.params.get("limit", s.params.get("page_size")) == "10" for s in served[:1])


def test_page_paginator_parameters(tmp_path: Path) -> None:
    with FakeAPI(listings(25), page_size=10, style="page") as api:
        ingest(
            api.url + "?sort=price",
            tmp_path / "o",
            paginate="page",
            records_path="data.items",
            page_size=10,
            concurrency=1,
        )
        params = [s.params for s in api.served]
    assert [p["page"] for p in params] == ["1", "2", "3", "4"]
    assert all(p["sort"] == "price" and p["page_size"] == "10" for p in params)


def test_bare_list_body_and_link_with_relative_urls(tmp_path: Path) -> None:
    with FakeAPI(listings(23), page_size=5, style="link", records_path=None) as api:
        r = ingest(api.url, tmp_path / "o", paginate="link", page_size=5)
        offsets = [s.params.get("offset") for s in api.served]
    assert r.stop_reason == "no rel=next link"
    assert offsets == [None, "5", "10", "15", "20"]
    assert ids(tmp_path / "o") == list(range(23))


def test_cursor_in_a_nested_field(tmp_path: Path) -> None:
    with FakeAPI(listings(12), page_size=5, style="cursor", cursor_field="meta.next_cursor") as api:
        r = ingest(
            api.url, tmp_path / "o", paginate="cursor:meta.next_cursor", records_path="data.items"
        )
    assert r.records == 12 and r.pages == 3
    assert r.stop_reason == "no cursor in field 'meta.next_cursor'"


def test_cursor_that_is_a_url_is_followed() -> None:
    p = CursorPaginator(field="next")
    req = PageRequest("http://a/items", (("limit", "5"),), 0)
    resp = PageResponse(
        body={"next": "http://b/items?after=9"}, headers={}, url="http://a/items", records=[{}]
    )
    nxt = p.next(req, resp)
    assert nxt == PageRequest("http://b/items?after=9", (), 1)
    with pytest.raises(PaginationError):
        p.next(req, PageResponse(body={"next": {"x": 1}}, headers={}, url="", records=[{}]))


def test_max_pages_stops_and_a_larger_limit_continues(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(listings(50), page_size=10) as api:
        r1 = ingest(api.url, out, paginate="cursor:next", records_path="data.items", max_pages=2)
        r2 = ingest(api.url, out, paginate="cursor:next", records_path="data.items", max_pages=2)
        n_after_two = len(api.served)
        r3 = ingest(api.url, out, paginate="cursor:next", records_path="data.items")
    assert (r1.status, r1.pages, r1.records, r1.stop_reason) == ("stopped", 2, 20, "max pages (2)")
    assert r2.already_done and n_after_two == 2  # same command again: nothing fetched
    assert r3.status == "done" and r3.records == 50 and r3.new_pages == 3
    assert ids(out) == list(range(50))


def test_repeated_cursor_is_a_loop_error(tmp_path: Path) -> None:
    with FakeAPI(listings(100), page_size=10, repeat_cursor_at=3) as api:
        with pytest.raises(PaginationError) as info:
            ingest(api.url, tmp_path / "o", paginate="cursor:next", records_path="data.items")
        served = len(api.served)
    assert "loops" in str(info.value) and info.value.page == 3
    assert served == 4  # no infinite loop
    assert ids(tmp_path / "o") == list(range(30))  # pages before the loop are kept


def test_repeated_link_is_a_loop_error() -> None:
    from datafuel.ingest import LinkPaginator

    p = LinkPaginator()
    head = {"link": '</items?offset=10>; rel="next"'}
    req = PageRequest("http://h/items", (), 0)
    assert p.next(req, PageResponse({}, head, "http://h/items", [{}])) == PageRequest(
        "http://h/items?offset=10", (), 1
    )
    with pytest.raises(PaginationError, match="loops"):
        p.next(
            PageRequest("http://h/items?offset=10", (), 1),
            PageResponse({}, head, "http://h/items?offset=10", [{}]),
        )


def test_api_that_ignores_the_page_parameter_is_detected(tmp_path: Path) -> None:
    with FakeAPI(listings(100), page_size=10, style="page", ignore_paging=True) as api:
        with pytest.raises(PaginationError, match="same records") as info:
            ingest(
                api.url, tmp_path / "o", paginate="page", records_path="data.items", concurrency=1
            )
        assert len(api.served) == 2
    assert info.value.page == 1
    # concurrently: found in page order too, and the pages before it stay committed
    with FakeAPI(listings(100), page_size=10, style="page", ignore_paging=True) as api:
        with pytest.raises(PaginationError, match="same records") as info:
            ingest(api.url, tmp_path / "c", paginate="page", records_path="data.items")
    assert info.value.page == 1 and read_ingested(tmp_path / "c").num_rows == 10


def test_records_path_errors_name_the_page(tmp_path: Path) -> None:
    with FakeAPI(listings(10), page_size=5) as api:
        with pytest.raises(PaginationError, match=r"page 0 .*records path 'data.rows' not found"):
            ingest(api.url, tmp_path / "a", paginate="cursor:next", records_path="data.rows")
        with pytest.raises(PaginationError, match="pass records_path"):
            ingest(api.url, tmp_path / "b", paginate="cursor:next")
        with pytest.raises(PaginationError, match="holds a dict"):
            ingest(api.url, tmp_path / "c", paginate="cursor:next", records_path="data")


def test_loop_detection_survives_a_rerun(tmp_path: Path) -> None:
    p = CursorPaginator(field="next")
    req = PageRequest("http://a/items", (), 0)
    p.next(req, PageResponse({"next": encode_cursor(10)}, {}, "", [{}]))
    restored = CursorPaginator(field="next")
    restored.load_state_dict(p.state_dict())
    with pytest.raises(PaginationError):
        restored.next(req, PageResponse({"next": encode_cursor(10)}, {}, "", [{}]))


def test_parse_link_header_forms() -> None:
    assert parse_link_header('<http://x/?p=2>; rel="next"') == {"next": "http://x/?p=2"}
    assert parse_link_header("<http://x/?p=2>;rel=next") == {"next": "http://x/?p=2"}
    assert parse_link_header('<a>; rel="prev next"') == {"prev": "a", "next": "a"}
    assert parse_link_header('<http://x/?a=1,2>; title="x, y"; rel="next", <z>; rel=last') == {
        "next": "http://x/?a=1,2",
        "last": "z",
    }
    assert parse_link_header("garbage") == {}


@pytest.mark.parametrize("spec", ["pages", "cursor:", "cursor", "", "link:next"])
def test_bad_paginate_spec(spec: str) -> None:
    with pytest.raises(ConfigError, match="--paginate"):
        make_paginator(spec)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "ftp://x/items"},
        {"url": "not a url"},
        {"max_pages": 0},
        {"page_size": -1},
        {"rate": 0.0},
    ],
)
def test_bad_arguments_are_config_errors(tmp_path: Path, kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"url": "http://127.0.0.1:9/items", **kwargs}
    url = args.pop("url")
    with pytest.raises(ConfigError):
        ingest(
            url, tmp_path / "o", retry=RetryPolicy(max_attempts=1, sleep=FakeClock().sleep), **args
        )  # type: ignore[arg-type]
