"""HTML listings: CSS selectors to records, next links, layout drift, malformed pages, robots.txt."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_server import HostileServer, Reply, Seen
from kill_helpers import kill_at_random_moments

from datafuel.errors import ConfigError, IngestError

pytest.importorskip("selectolax", reason="HTML listings need selectolax (.ci/run installs it)")

from datafuel.ingest import ingest, read_ingested
from datafuel.ingest._html import HtmlSpec, parse_field

ROBOTS = b"User-agent: *\nDisallow: /private\n"


def page_html(page: int, *, layout: str = "listing", malformed: bool = False) -> bytes:
    items = "".join(
        f'<article class="{layout}"><h2>House <b>{page}-{i}</b></h2>'
        f'<span class="price">{1000 * page + i}</span><a href="/item/{page}/{i}">see</a>'
        + ("<div><p>unclosed" if malformed else "</article>")
        for i in range(3)
    )
    nxt = f'<a rel="next" href="?page={page + 1}">next</a>' if page < 4 else ""
    return f"<html><body>{items}{nxt}</body></html>".encode()


def route(server: HostileServer, seen: Seen) -> Reply:
    if seen.path == "/robots.txt":
        return Reply(200, {"Content-Type": "text/plain"}, ROBOTS)
    page = int(seen.query.get("page", "1"))
    body = page_html(page, layout="card" if page == 3 else "listing", malformed=page == 2)
    return Reply(200, {"Content-Type": "text/html"}, body)


SPEC = {
    "select": "article.listing",
    "fields": {"name": "h2::text", "price": ".price::text", "url": "a::attr(href)"},
    "next": "a[rel=next]::attr(href)",
}


def test_html_listing_round_trips_with_layout_drift_and_a_malformed_page(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with HostileServer(route) as srv:
        spec = HtmlSpec(SPEC["select"], SPEC["fields"], SPEC["next"])
        r = ingest(srv.url("/list"), out, html=spec, rate=1000.0)
        asked = [s.path for s in srv.seen]
        origin = srv.origin
    assert asked[0] == "/robots.txt" and r.status == "done" and r.stop_reason == "no next link"
    rows = read_ingested(out).to_pylist()
    pages = [1, 2, 4]  # page 3's layout changed: no records
    assert [row["name"] for row in rows] == [f"House {p}-{i}" for p in pages for i in range(3)]
    assert rows[0]["url"] == f"{origin}/item/1/0"  # relative URLs resolved
    assert rows[0]["price"] == "1000"
    drift = [json.loads(x) for x in (out / "_drift.jsonl").read_text().splitlines()]
    assert {"page": 2, "kind": "no_records", "field": "article.listing"} in drift
    # --on-empty fail stops at the page whose layout changed, pages before it kept
    with HostileServer(route) as srv:
        spec = HtmlSpec(SPEC["select"], SPEC["fields"], SPEC["next"], on_empty="fail")
        with pytest.raises(IngestError, match=r"page 2 .*matches nothing"):
            ingest(srv.url("/list"), tmp_path / "f", html=spec, rate=1000.0)
    assert read_ingested(tmp_path / "f").num_rows == 6


def test_robots_txt_is_obeyed_unless_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = HtmlSpec(SPEC["select"], SPEC["fields"], SPEC["next"])
    with HostileServer(route) as srv:
        with pytest.raises(IngestError, match=r"robots.txt disallows .*/private/list"):
            ingest(srv.url("/private/list"), tmp_path / "o", html=spec, rate=1000.0)
        assert [s.path for s in srv.seen] == ["/robots.txt"]  # the page itself never asked
        caplog.set_level(logging.WARNING)
        r = ingest(
            srv.url("/private/list"), tmp_path / "p", html=spec, rate=1000.0, ignore_robots=True
        )
    assert r.records == 9 and "--ignore-robots" in caplog.text


def test_html_cli_and_bad_selectors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datafuel.cli import main

    with HostileServer(route) as srv:
        argv = ["ingest", srv.url("/list"), "--out", str(tmp_path / "o"), "--html"]
        argv += ["--select", "article.listing", "--field", "name=h2::text"]
        argv += ["--field", "url=a::attr(href)", "--next", "a[rel=next]::attr(href)"]
        assert main([*argv, "--rate", "1000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 9
    with pytest.raises(ConfigError, match="--field"):
        parse_field("name")
    with pytest.raises(ConfigError, match="--on-empty"):
        HtmlSpec("a", {"x": "b"}, on_empty="maybe")
    with pytest.raises(ConfigError, match="attr"):
        HtmlSpec("a", {"x": "b::attr()"})


def test_numbered_html_pages_are_fetched_concurrently(tmp_path: Path) -> None:
    def numbered(server: HostileServer, seen: Seen) -> Reply:
        if seen.path == "/robots.txt":
            return Reply(404, {}, b"")  # no robots.txt: everything allowed
        page = int(seen.query.get("page", "1"))
        return Reply(200, {}, page_html(page) if page <= 6 else b"<html><p>no more</p></html>")

    spec = HtmlSpec(SPEC["select"], SPEC["fields"])  # no --next: --paginate page numbers them
    with HostileServer(numbered) as srv:
        r = ingest(srv.url("/list"), tmp_path / "o", html=spec, rate=1000.0, concurrency=4)
    names = read_ingested(tmp_path / "o").column("name").to_pylist()
    assert names == [f"House {p}-{i}" for p in range(1, 7) for i in range(3)]
    assert r.stop_reason == "empty page"


@pytest.mark.slow
@pytest.mark.parametrize("paginate", ["next", "page"])
def test_sigkill_during_an_html_listing_then_rerun_gives_every_item_once(
    tmp_path: Path, paginate: str
) -> None:
    pages = 40

    def listing(server: HostileServer, seen: Seen) -> Reply:
        if seen.path == "/robots.txt":
            return Reply(404, {}, b"")
        page = int(seen.query.get("page", "1"))
        time.sleep(0.01)  # so that the kills land mid-run
        if page > pages:
            return Reply(200, {}, b"<html><p>no more</p></html>")
        items = "".join(
            f'<article class="listing"><h2>House {page}-{i}</h2></article>' for i in range(3)
        )
        nxt = f'<a rel="next" href="?page={page + 1}">next</a>' if page < pages else ""
        return Reply(200, {"Content-Type": "text/html"}, f"<html>{items}{nxt}</html>".encode())

    rng = random.Random(7)
    out = tmp_path / "o"
    with HostileServer(listing) as srv:
        cmd = [sys.executable, "-m", "datafuel", "ingest", srv.url("/list"), "--out", str(out)]
        cmd += ["--html", "--select", "article.listing", "--field", "name=h2::text"]
        cmd += ["--rate", "1000"]
        if paginate == "next":
            cmd += ["--next", "a[rel=next]::attr(href)"]
        else:
            cmd += ["--paginate", "page", "--concurrency", "4"]
        state = out / "_state.json"
        kills = kill_at_random_moments(cmd, state, rng, attempts=3, max_delay=0.15)
        final = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
    assert kills >= 1, "the kills all came too late to interrupt anything"
    names = read_ingested(out).column("name").to_pylist()
    assert names == [f"House {p}-{i}" for p in range(1, pages + 1) for i in range(3)]
    assert json.loads(state.read_text())["status"] == "done"
    assert not list(out.glob(".*.tmp"))


def test_a_rerun_with_other_selectors_is_refused(tmp_path: Path) -> None:
    """Numbered pages (no --next) have the paginator 'page' either way: the selectors are
    what tells the two listings apart, and a rerun with others must not mix their parts."""

    def numbered(server: HostileServer, seen: Seen) -> Reply:
        if seen.path == "/robots.txt":
            return Reply(404, {}, b"")
        page = int(seen.query.get("page", "1"))
        return Reply(200, {}, page_html(page) if page <= 3 else b"<html><p>no more</p></html>")

    out = tmp_path / "o"
    spec = HtmlSpec(SPEC["select"], SPEC["fields"])
    with HostileServer(numbered) as srv:
        first = ingest(srv.url("/list"), out, html=spec, rate=1000.0)
        other = HtmlSpec("article.card", SPEC["fields"])
        with pytest.raises(ConfigError, match="differs in html"):
            ingest(srv.url("/list"), out, html=other, rate=1000.0)
        with pytest.raises(ConfigError, match="differs in html"):  # JSON records on HTML parts
            ingest(srv.url("/list"), out, rate=1000.0)
        again = ingest(
            srv.url("/list"), out, html=HtmlSpec(SPEC["select"], SPEC["fields"]), rate=1000.0
        )
    assert first.records == 9 and again.records == 9 == read_ingested(out).num_rows
