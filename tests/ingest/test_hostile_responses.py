"""Hostile responses: deep JSON, a gzip bomb, a trickle, redirect loops; and the lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hostile_server import HostileServer, Reply, Seen, gzip_bomb, json_reply, trickle
from ingest_server import FakeAPI, listings

from datafuel.errors import ConfigError, HTTPError, IngestError, LockedError, RetryExhaustedError
from datafuel.ingest import ingest, read_ingested
from datafuel.ingest._limits import ResponseLimits

CURSOR = {"paginate": "cursor:next", "records_path": "data.items"}
HERE = Path(__file__).parent


def test_json_nested_10000_deep_names_the_page(tmp_path: Path) -> None:
    deep = b'{"data": {"items": [{"x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}]}}"
    with HostileServer(lambda s, r: Reply(200, {}, deep)) as srv:
        with pytest.raises(IngestError, match=r"page 0 .*nested deeper than --max-depth 200"):
            ingest(srv.url(), tmp_path / "o", **CURSOR)
        assert len(srv.seen) == 1  # not retried


def test_nesting_below_the_limit_passes_and_the_limit_is_an_option(tmp_path: Path) -> None:
    rec = {"id": 1, "x": json.loads("[" * 50 + "]" * 50), "s": "[[[[[[" * 100}
    with HostileServer(
        lambda s, r: json_reply({"data": {"items": [rec] if not r.query else []}})
    ) as srv:
        ingest(srv.url(), tmp_path / "o", **CURSOR)
        with pytest.raises(IngestError, match="--max-depth 20"):
            ingest(srv.url(), tmp_path / "p", max_depth=20, **CURSOR)
    assert read_ingested(tmp_path / "o").num_rows == 1
    with pytest.raises(ConfigError, match="max_depth"):
        ResponseLimits(max_depth=10_000)


def test_gzip_bomb_is_cut_off_while_streaming_in_bounded_memory(tmp_path: Path) -> None:
    bomb = gzip_bomb(1 << 30)  # 1 MB on the wire, 1 GiB inflated
    assert len(bomb) < 2 << 20
    with HostileServer(lambda s, r: Reply(200, {"Content-Encoding": "gzip"}, bomb)) as srv:
        script = textwrap.dedent(
            f"""
            import resource, sys, time
            from datafuel.errors import IngestError
            from datafuel.ingest import ingest
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            t0 = time.monotonic()
            try:
                ingest({srv.url()!r}, {str(tmp_path / "o")!r}, records_path="data.items",
                       max_response_bytes=16 << 20)
            except IngestError as exc:
                print("ERROR", exc)
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print("GROWTH_KB", after - before, "SECONDS", time.monotonic() - t0)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
    assert proc.returncode == 0, proc.stderr
    assert "ERROR page 0" in proc.stdout and "--max-response-bytes 16777216" in proc.stdout
    growth_kb, seconds = proc.stdout.split("GROWTH_KB")[1].split("SECONDS")
    assert int(growth_kb) < 300 * 1024  # ru_maxrss is in KiB on Linux
    assert float(seconds) < 20


def test_declared_length_over_the_limit_is_refused_before_reading(tmp_path: Path) -> None:
    with HostileServer(lambda s, r: Reply(200, {}, b" " * 5000)) as srv:
        with pytest.raises(IngestError, match="announces a 5000-byte body"):
            ingest(srv.url(), tmp_path / "o", max_response_bytes=4096, **CURSOR)


def test_trickling_server_is_cut_off_by_the_request_deadline(tmp_path: Path) -> None:
    body = json.dumps({"data": {"items": []}}).encode()

    def route(s: HostileServer, r: Seen) -> Reply:
        return Reply(200, {"Content-Length": str(len(body))}, trickle(body, 0.2))

    with HostileServer(route) as srv:
        t0 = time.monotonic()
        with pytest.raises(RetryExhaustedError, match="--request-deadline of 1 s") as info:
            ingest(
                srv.url(),
                tmp_path / "o",
                request_deadline=1.0,
                max_attempts=2,
                retry_base=0,
                timeout=30,
                **CURSOR,
            )
        elapsed = time.monotonic() - t0
    assert elapsed < 6  # two attempts of about 1 s, not 30 s of read timeout, nor forever
    assert info.value.page == 0


def test_redirect_loop_is_a_datafuel_error(tmp_path: Path) -> None:
    def route(s: HostileServer, r: Seen) -> Reply:
        return Reply(302, {"Location": "/b" if r.path == "/a" else "/a"})

    with HostileServer(route) as srv:
        with pytest.raises(HTTPError, match="redirect loop"):
            ingest(srv.url("/a"), tmp_path / "o", **CURSOR)


def test_endless_redirects_are_a_datafuel_error(tmp_path: Path) -> None:
    def route(s: HostileServer, r: Seen) -> Reply:
        return Reply(307, {"Location": f"/r{len(s.seen)}"})

    with HostileServer(route) as srv:
        with pytest.raises(HTTPError, match="more than 20 redirects"):
            ingest(srv.url("/r"), tmp_path / "o", **CURSOR)
        assert len(srv.seen) == 21


def test_redirect_to_a_page_on_the_same_origin_is_followed(tmp_path: Path) -> None:
    def route(s: HostileServer, r: Seen) -> Reply:
        if r.path == "/old":
            return Reply(301, {"Location": "/new?x=1"})
        return json_reply({"data": {"items": [{"id": 1}]}})

    with HostileServer(route) as srv:
        r = ingest(srv.url("/old"), tmp_path / "o", headers={"X-K": "v"}, **CURSOR)
        assert all(s.headers.get("X-K") == "v" for s in srv.seen)
    assert r.records == 1 and r.requests == 2


def _ingest_cmd(url: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "datafuel",
        "ingest",
        url,
        "--out",
        str(out),
        *(["--paginate", "cursor:next", "--records-path", "data.items", "--no-fsync"]),
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_second_ingest_into_the_same_dir_is_locked_out_until_the_first_is_killed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o"
    with FakeAPI(listings(200), page_size=5, latency=0.1) as api:
        proc = subprocess.Popen(
            _ingest_cmd(api.url, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while not (out / "_state.json").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(LockedError, match=f"in use by process {proc.pid}"):
                ingest(api.url, out, **CURSOR)
            assert proc.poll() is None
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        r = ingest(api.url, out, fsync=False, **CURSOR)
    assert r.status == "done" and r.records == 200
    assert read_ingested(out).column("id").to_pylist() == list(range(200))
