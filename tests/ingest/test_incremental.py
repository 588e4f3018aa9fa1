"""``--incremental FIELD``: a second run asks only for newer records and appends them."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hostile_server import HostileServer, Reply, Seen, json_reply
from kill_helpers import kill_at_random_moments

from datafuel.errors import SchemaError
from datafuel.ingest import ingest, read_ingested


class SinceAPI:
    """Page pagination over ``records``, filtered by ``?since=`` (inclusive, as many APIs)."""

    def __init__(self, records: list[dict[str, Any]], page_size: int = 10) -> None:
        self.records = records
        self.page_size = page_size

    def __call__(self, server: HostileServer, seen: Seen) -> Reply:
        since = seen.query.get("since")
        rows = [r for r in self.records if since is None or r["updated"] >= since]
        page = int(seen.query.get("page", "1"))
        return json_reply(rows[(page - 1) * self.page_size : page * self.page_size])


def rec(i: int, day: int, **extra: Any) -> dict[str, Any]:
    return {"id": i, "updated": f"2026-01-{day:02d}", **extra}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_second_run_fetches_only_newer_records_and_appends_them(
    tmp_path: Path, concurrency: int
) -> None:
    out = tmp_path / "o"
    api = SinceAPI([rec(i, 1 + i // 10) for i in range(35)])  # updated 01..04
    kw: dict[str, Any] = {"primary_key": "id", "incremental": "updated", "since_param": "since"}
    with HostileServer(api) as srv:
        first = ingest(srv.url(), out, concurrency=concurrency, **kw)
        assert first.records == 35
        state = json.loads((out / "_state.json").read_text())
        assert state["incremental"]["high"] == "2026-01-04"
        served = len(srv.seen)
        # new and updated records arrive; one of day 04 is re-sent (since is inclusive)
        api.records += [rec(100 + i, 5, garage=1) for i in range(12)]
        second = ingest(srv.url(), out, concurrency=concurrency, **kw)
        asked = srv.seen[served:]
        third = ingest(srv.url(), out, concurrency=concurrency, **kw)  # nothing newer
    assert third.new_records == 0 and third.duplicates == second.duplicates + 12
    assert all(s.query.get("since") == "2026-01-04" for s in asked)  # only newer ones asked
    assert second.new_records == 12 and second.duplicates == 5  # day 04's 5 re-sent: dropped
    ids = read_ingested(out).column("id").to_pylist()
    assert ids == list(range(35)) + [100 + i for i in range(12)]
    state = json.loads((out / "_state.json").read_text())
    runs = state["incremental"]["runs"]
    assert [r["since"] for r in runs] == [None, "2026-01-04", "2026-01-05"]
    assert state["incremental"]["high"] == "2026-01-05" and state["status"] == "done"
    # the part's run, from the state and from its own metadata
    new_parts = [
        p for p in sorted(out.glob("part-*.parquet")) if int(p.name[5:13]) >= runs[1]["first_page"]
    ]
    assert new_parts and all(
        pq.read_metadata(p).metadata[b"datafuel.ingest.run"] == b"1" for p in new_parts
    )
    drift = [json.loads(line) for line in (out / "_drift.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "new_field" and e["field"] == "garage" for e in drift)
    assert read_ingested(out).num_rows == 47


def test_incremental_field_of_mixed_types_is_refused(tmp_path: Path) -> None:
    api = SinceAPI([{"id": 1, "updated": 5}, {"id": 2, "updated": "x"}])
    with HostileServer(api) as srv:
        with pytest.raises(SchemaError, match="--incremental field 'updated'"):
            ingest(srv.url(), tmp_path / "o", incremental="updated", concurrency=1)


class _SlowSinceAPI(SinceAPI):
    """:class:`SinceAPI` with a delay per page, so that a kill lands mid-run."""

    def __call__(self, server: HostileServer, seen: Seen) -> Reply:
        time.sleep(0.01)
        return super().__call__(server, seen)


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", [1, 4])
def test_sigkill_during_an_incremental_run_then_rerun_loses_and_repeats_nothing(
    tmp_path: Path, concurrency: int
) -> None:
    rng = random.Random(concurrency)
    out = tmp_path / "o"
    api = _SlowSinceAPI([rec(i, 1 + i // 10) for i in range(35)], page_size=3)
    kw: dict[str, Any] = {"primary_key": "id", "incremental": "updated", "since_param": "since"}
    with HostileServer(api) as srv:
        ingest(srv.url(), out, concurrency=concurrency, **kw)  # the first, finished run
        api.records += [rec(100 + i, 5 + i // 20) for i in range(90)]  # days 05..09
        cmd = [
            sys.executable, "-m", "datafuel", "ingest", srv.url(), "--out", str(out),
            "--primary-key", "id", "--incremental", "updated", "--since-param", "since",
            "--concurrency", str(concurrency),
        ]  # fmt: skip
        state = out / "_state.json"
        kills = kill_at_random_moments(cmd, state, rng, attempts=3, max_delay=0.1)
        final = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
    assert kills >= 1, "the kills all came too late to interrupt anything"
    ids = read_ingested(out).column("id").to_pylist()
    assert ids == list(range(35)) + [100 + i for i in range(90)]  # no duplicate, no gap
    st = json.loads(state.read_text())
    assert st["status"] == "done" and st["incremental"]["high"] == "2026-01-09"
    assert not list(out.glob(".*.tmp"))
