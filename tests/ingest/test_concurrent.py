"""Concurrent page/offset fetching: page order, exactly once across kills, end of data, 429s."""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hostile_server import HostileServer, Reply, Seen, json_reply
from ingest_server import FakeAPI, listings
from kill_helpers import kill_at_random_moments
from test_kill import expected_row

from datafuel.errors import ConfigError, HTTPError, PaginationError, RetryExhaustedError
from datafuel.ingest import RateLimiter, ingest, read_ingested
from datafuel.ingest._throttle import Throttle


@pytest.fixture(autouse=True)
def _listen_backlog(monkeypatch: pytest.MonkeyPatch) -> None:
    """http.server listens with a backlog of 5; 8 workers connecting at once (FakeAPI closes
    each connection) would have SYNs dropped and retried a second later: timing noise."""
    monkeypatch.setattr(ThreadingHTTPServer, "request_queue_size", 128)


class TimedAPI(FakeAPI):
    """FakeAPI that records (arrival time, page, fault) of every request."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.arrivals: list[tuple[float, int, str | None]] = []

    def _pick_fault(self, page: int) -> str | None:
        fault = super()._pick_fault(page)
        with self._lock:
            self.arrivals.append((time.monotonic(), page, fault))
        return fault


def ids(out: Path) -> list[int]:
    return read_ingested(out).column("id").to_pylist()


@pytest.mark.parametrize("style", ["page", "offset"])
@pytest.mark.parametrize("seed", [0, 1])
def test_pages_arriving_out_of_order_are_committed_in_page_order(
    tmp_path: Path, style: str, seed: int
) -> None:
    rng = random.Random(seed)
    waits = {p: rng.uniform(0, 0.03) for p in range(40)}

    def jitter(api: FakeAPI, page: int) -> None:
        time.sleep(waits.get(page, 0.0))  # later pages often answer first

    commits: list[int] = []
    with FakeAPI(listings(345), page_size=10, style=style, hook=jitter) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            paginate=style,
            records_path="data.items",
            page_size=10,
            concurrency=8,
            on_progress=lambda p: commits.append(p.page),
        )
    assert ids(tmp_path / "o") == list(range(345))
    assert r.records == 345 and r.pages == 35 and r.status == "done"
    assert r.stop_reason == "empty page"  # the short last page, then the empty one
    assert commits == sorted(commits) and len(set(commits)) == len(commits)
    firsts = [int(p.name[5:13]) for p in sorted((tmp_path / "o").glob("part-*.parquet"))]
    assert firsts == sorted(set(firsts)) and firsts[0] == 0


def test_concurrency_overlaps_requests(tmp_path: Path) -> None:
    with TimedAPI(listings(400), page_size=10, style="page", latency=0.05) as api:
        t0 = time.perf_counter()
        ingest(api.url, tmp_path / "o", records_path="data.items", concurrency=8, fsync=False)
        elapsed = time.perf_counter() - t0
    assert ids(tmp_path / "o") == list(range(400))
    assert elapsed < 41 * 0.05 / 2  # sequentially it would take >= 2.05 s


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_six_sigkills_during_a_concurrency_8_run_then_rerun_gives_exact_ground_truth(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    truth = listings(1200, drift_at=600)
    out = tmp_path / "out"
    with FakeAPI(
        truth,
        page_size=3,  # 400 pages of >= 20 ms each, 8 in flight: the six kills land mid-run
        style="page",
        latency=0.020,
        fault_rate=0.04,
        seed=seed,
        fault_kinds=("503", "429:0", "drop", "truncate", "badjson"),
    ) as api:
        cmd = [
            sys.executable,
            "-m",
            "datafuel",
            "ingest",
            api.url,
            "--out",
            str(out),
            "--paginate",
            "page",
            "--records-path",
            "data.items",
            "--concurrency",
            "8",
            "--max-attempts",
            "12",
            "--retry-base",
            "0.005",
            "--timeout",
            "5",
        ]
        state_file = out / "_state.json"
        kills = kill_at_random_moments(cmd, state_file, rng, attempts=6, max_delay=0.12)
        final = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
        assert kills == 6, f"only {kills} of the 6 kills interrupted a run"

    table = read_ingested(out)
    assert table.to_pylist() == [expected_row(r) for r in truth]  # no duplicate, no gap
    state = json.loads(state_file.read_text())
    assert state["status"] == "done" and state["records"] == 1200
    firsts = sorted(int(p.name[5:13]) for p in out.glob("part-*.parquet"))
    assert firsts[0] == 0 and firsts == sorted(set(firsts)) and firsts[-1] <= 399
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("n", "extra", "reason"),
    [
        (50, {}, "empty page"),  # 5 full pages, page 5 is empty
        (47, {}, "empty page"),  # a short page 4 ends only with the empty page 5 after it
        (50, {"total_field": "total"}, "total count 50 reached"),
        (47, {"total_field": "total"}, "total count 47 reached"),
    ],
)
def test_end_of_data_stops_new_requests_and_discards_pages_in_flight(
    tmp_path: Path, n: int, extra: dict[str, Any], reason: str
) -> None:
    with FakeAPI(listings(n), page_size=10, style="page", latency=0.01) as api:
        r = ingest(api.url, tmp_path / "o", records_path="data.items", concurrency=8, **extra)
        pages_asked = sorted({int(s.params["page"]) for s in api.served})
        time.sleep(0.05)  # the discarded requests in flight are answered
        served = len(api.served)
        again = ingest(api.url, tmp_path / "o", records_path="data.items", concurrency=8, **extra)
        assert again.already_done and len(api.served) == served  # a finished run asks nothing
    assert ids(tmp_path / "o") == list(range(n)) and r.stop_reason == reason
    assert r.pages == 5 and r.status == "done"
    # never more than the window ahead of the end; with a total count not one page past it
    assert max(pages_asked) <= 6 + 2 * 8
    if "total_field" in extra and n == 50:
        assert max(pages_asked) == 5


def test_404_past_the_end_is_the_end_but_not_on_the_first_page(tmp_path: Path) -> None:
    faults = {p: ["404"] * 3 for p in range(5, 40)}
    with FakeAPI(listings(50), page_size=10, style="offset", faults=faults) as api:
        r = ingest(
            api.url, tmp_path / "o", paginate="offset", records_path="data.items", page_size=10
        )
    assert ids(tmp_path / "o") == list(range(50))
    assert r.stop_reason == "HTTP 404 past the end" and r.status == "done"
    with FakeAPI(listings(50), page_size=10, style="page", faults={0: ["404"]}) as api:
        with pytest.raises(HTTPError, match="page 0 .*HTTP 404"):
            ingest(api.url, tmp_path / "p", records_path="data.items")


def test_204_no_content_is_an_empty_page(tmp_path: Path) -> None:
    def route(server: HostileServer, seen: Seen) -> Reply:
        page = int(seen.query.get("page", "1"))
        if page > 3:
            return Reply(204, {})
        return json_reply([{"id": 10 * page + i} for i in range(5)])

    for concurrency in (1, 4):
        with HostileServer(route) as srv:
            r = ingest(srv.url(), tmp_path / f"o{concurrency}", concurrency=concurrency)
        assert r.records == 15 and r.status == "done" and r.stop_reason == "empty page"
        assert ids(tmp_path / f"o{concurrency}") == [10 + i for i in range(5)] + [
            20 + i for i in range(5)
        ] + [30 + i for i in range(5)]


def test_a_failing_page_commits_the_pages_before_it_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    faults = {7: ["500"] * 3}
    with FakeAPI(listings(200), page_size=10, style="page", faults=faults) as api:
        with pytest.raises(RetryExhaustedError, match="page 7"):
            ingest(
                api.url,
                tmp_path / "o",
                records_path="data.items",
                concurrency=8,
                max_attempts=3,
                retry_base=0.001,
            )
        assert ids(tmp_path / "o") == list(range(70))  # pages 8+ fetched ahead: discarded
        r = ingest(api.url, tmp_path / "o", records_path="data.items", concurrency=8)
    assert r.resumed and ids(tmp_path / "o") == list(range(200))


def test_a_429_pauses_every_worker_for_its_retry_after(tmp_path: Path) -> None:
    with TimedAPI(
        listings(600), page_size=10, style="page", latency=0.01, faults={12: ["429:0.4"]}
    ) as api:
        ingest(api.url, tmp_path / "o", records_path="data.items", concurrency=8, fsync=False)
        arrivals = list(api.arrivals)
    assert ids(tmp_path / "o") == list(range(600))
    t429 = next(t for t, _page, fault in arrivals if fault == "429:0.4")
    told = t429 + 0.01  # the 429 is answered after the latency
    # requests already sent finish; no new one starts until the Retry-After has passed
    quiet = [t for t, _p, _f in arrivals if told + 0.1 < t < told + 0.3]
    assert quiet == [], f"{len(quiet)} requests during another worker's Retry-After"
    assert any(t >= told + 0.35 for t, _p, _f in arrivals)


def test_a_429_storm_halves_the_window_and_loses_nothing(tmp_path: Path) -> None:
    with FakeAPI(
        listings(500),
        page_size=10,
        style="page",
        fault_rate=0.3,
        fault_kinds=("429:0.01", "429", "503:0.01"),
        seed=3,
    ) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            records_path="data.items",
            concurrency=8,
            max_attempts=30,
            retry_base=0.002,
            fsync=False,
        )
        faults = len(api.faults_served)
    assert faults > 10 and r.retries == faults
    assert ids(tmp_path / "o") == list(range(500))


def test_throttle_aimd_window() -> None:
    t = [0.0]
    th = Throttle(8, clock=lambda: t[0])
    th.throttled(0.0)
    th.throttled(0.0)  # the same episode: one cut
    assert th.window == 4.0 and th.cuts == 1
    t[0] = 1.0
    th.throttled(0.0)
    assert th.window == 2.0
    for _ in range(3):
        th.succeeded()
    assert 3.0 < th.window < 3.5  # about one more slot per window of successes
    for _ in range(200):
        th.succeeded()
    assert th.window == 8.0  # never past the ceiling
    for _ in range(20):
        t[0] += 1.0
        th.throttled(0.0)
    assert th.window == 1.0  # never below one


def test_throttle_limits_slots_and_stops_waiters() -> None:
    th = Throttle(2)
    th.enter()
    th.enter()
    got: list[str] = []

    def third() -> None:
        try:
            th.enter()
            got.append("entered")
        except Exception as exc:
            got.append(type(exc).__name__)

    worker = threading.Thread(target=third)
    worker.start()
    time.sleep(0.1)
    assert got == []  # the window is full
    th.leave()
    worker.join(2)
    assert got == ["entered"]
    waiter = threading.Thread(target=third)
    waiter.start()
    th.stop()
    waiter.join(2)
    assert got == ["entered", "Stopped"]


def test_rate_is_shared_by_all_workers(tmp_path: Path) -> None:
    with FakeAPI(listings(200), page_size=10, style="page") as api:
        t0 = time.perf_counter()
        r = ingest(
            api.url,
            tmp_path / "o",
            records_path="data.items",
            concurrency=8,
            rate_limiter=RateLimiter(40.0),
            fsync=False,
        )
        elapsed = time.perf_counter() - t0
        served = len(api.served)
    assert r.records == 200
    assert elapsed >= (served - 1) / 40.0 * 0.95  # 8 workers, still 40 requests/s in all


def test_cursor_and_link_stay_sequential_and_bad_concurrency_is_refused(
    tmp_path: Path,
) -> None:
    with TimedAPI(listings(30), page_size=10, style="cursor", latency=0.01) as api:
        ingest(
            api.url,
            tmp_path / "c",
            paginate="cursor:next",
            records_path="data.items",
            concurrency=8,
        )
        assert len(api.served) == 3  # one at a time: no request past the end
    for bad in (0, 65, 2.5):
        with pytest.raises(ConfigError, match="concurrency"):
            ingest("http://127.0.0.1:9/x", tmp_path / "bad", concurrency=bad)  # type: ignore[arg-type]


def test_cli_concurrency_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datafuel.cli import main

    with FakeAPI(listings(95), page_size=10, style="offset") as api:
        argv = ["ingest", api.url, "--out", str(tmp_path / "o"), "--paginate", "offset"]
        argv += ["--records-path", "data.items", "--page-size", "10", "--concurrency", "6"]
        code = main([*argv, "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["records"] == 95
    assert ids(tmp_path / "o") == list(range(95))
    assert "sequential by nature" in " ".join(_help(capsys).split())


def _help(capsys: pytest.CaptureFixture[str]) -> str:
    from datafuel.cli import main

    with contextlib.suppress(SystemExit):
        main(["ingest", "--help"])
    return capsys.readouterr().out


def test_a_short_page_in_the_middle_loses_nothing(tmp_path: Path) -> None:
    # an API whose pages vary in size: page 2 holds 4 records, the later pages 10 again;
    # ending at the first short page would drop every record after it without a word
    sizes = [10, 10, 4, 10, 10, 6]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]

    def route(server: HostileServer, seen: Seen) -> Reply:
        page = int(seen.query.get("page", "1")) - 1
        if page >= len(sizes):
            return json_reply([])
        return json_reply([{"id": starts[page] + i} for i in range(sizes[page])])

    for concurrency in (1, 8):
        with HostileServer(route) as srv:
            r = ingest(srv.url(), tmp_path / f"o{concurrency}", concurrency=concurrency)
        assert ids(tmp_path / f"o{concurrency}") == list(range(sum(sizes)))
        assert r.status == "done" and r.stop_reason == "empty page"


def test_offsets_planned_past_a_short_page_are_refused_not_skipped(tmp_path: Path) -> None:
    # offset pagination: page 2 answers 4 of 10, page 3 more: the records [24, 30) were
    # never asked for; a concurrent run says so (and names the page) instead of losing them
    def route(server: HostileServer, seen: Seen) -> Reply:
        offset = int(seen.query.get("offset", "0"))
        n = 4 if offset == 20 else (10 if offset < 60 else 0)
        return json_reply([{"id": offset + i} for i in range(n)])

    with HostileServer(route) as srv:
        with pytest.raises(PaginationError, match=r"page 2 .*--concurrency 1"):
            ingest(srv.url(), tmp_path / "o", paginate="offset", page_size=10, concurrency=8)
