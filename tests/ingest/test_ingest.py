from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ingest_server import FakeAPI, FakeClock, all_bytes_under, listings

from datafuel.errors import ConfigError, IngestError, RetryExhaustedError, SchemaError
from datafuel.ingest import IngestProgress, RateLimiter, RetryPolicy, ingest, read_ingested

CURSOR = {"paginate": "cursor:next", "records_path": "data.items"}


def test_exhausted_retries_keep_the_checkpoint_and_a_rerun_continues(tmp_path: Path) -> None:
    out = tmp_path / "o"
    clock = FakeClock()
    with FakeAPI(listings(60), page_size=10, faults={3: ["503"] * 4}) as api:
        with pytest.raises(RetryExhaustedError):
            ingest(api.url, out, retry=RetryPolicy(max_attempts=4, sleep=clock.sleep), **CURSOR)
        state = json.loads((out / "_state.json").read_text())
        assert (state["status"], state["pages"], state["records"], state["retries"]) == (
            "running",
            3,
            30,
            3,
        )
        assert read_ingested(out).column("id").to_pylist() == list(range(30))
        r = ingest(api.url, out, retry=RetryPolicy(max_attempts=4, sleep=clock.sleep), **CURSOR)
    assert r.resumed and r.new_pages == 3 and r.records == 60 and r.retries == 3
    assert read_ingested(out).column("id").to_pylist() == list(range(60))


def test_finished_run_is_a_no_op(tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(listings(25), page_size=10) as api:
        ingest(api.url, out, **CURSOR)
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        n = len(api.served)
        r = ingest(api.url, out, **CURSOR)
        assert len(api.served) == n
    assert r.already_done and r.status == "done" and r.records == 25 and r.new_records == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.parametrize(
    "change",
    [
        {"paginate": "page"},
        {"records_path": "data"},
        {"primary_key": "id"},
        {"page_size": 5},
        {"url": "other"},
    ],
)
def test_different_arguments_into_the_same_dir_are_refused(
    tmp_path: Path, change: dict[str, object]
) -> None:
    out = tmp_path / "o"
    with FakeAPI(listings(25), page_size=10) as api:
        ingest(api.url, out, max_pages=1, **CURSOR)
        kwargs: dict[str, object] = {**CURSOR, **change}
        url = api.url + "?x=1" if kwargs.pop("url", None) else api.url
        with pytest.raises(ConfigError, match="different source"):
            ingest(url, out, **kwargs)  # type: ignore[arg-type]


def test_directory_with_foreign_parts_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "part-00000000.parquet").write_bytes(b"PAR1")
    with pytest.raises(ConfigError, match="no checkpoint"):
        ingest("http://127.0.0.1:9/items", out, **CURSOR)


def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "_state.json").write_text("{not json")
    with pytest.raises(IngestError, match="_state.json is not valid JSON"):
        ingest("http://127.0.0.1:9/items", out, **CURSOR)


def test_kill_between_part_and_state_is_repaired_on_resume(tmp_path: Path) -> None:
    """Simulate the worst instant: page 3's part and drift lines are durable, its state is not."""
    out = tmp_path / "o"
    recs = listings(60, drift_at=35)
    snapshots: dict[int, bytes] = {}

    def snap(p: IngestProgress) -> None:
        snapshots[p.page] = (out / "_state.json").read_bytes()

    with FakeAPI(recs, page_size=10) as api:
        ingest(api.url, out, on_progress=snap, max_pages=4, prefetch=False, **CURSOR)
        assert (out / "part-00000003.parquet").exists()
        drift_before = (out / "_drift.jsonl").read_bytes()
        assert drift_before  # page 3 logged drift
        (out / "_state.json").write_bytes(snapshots[2])  # the state of page 3 "never landed"
        (out / ".part-00000004.parquet.tmp").write_bytes(b"half a part")
        (out / "._state.json.k3x9q_2a.tmp").write_bytes(b'{"half a st')  # killed mid-replace
        r = ingest(api.url, out, **CURSOR)
    assert r.records == 60
    assert not list(out.glob(".*.tmp"))
    assert read_ingested(out).column("id").to_pylist() == list(range(60))
    drift = (out / "_drift.jsonl").read_text().splitlines()
    assert len(drift) == len(set(drift)) == r.drift_events  # no drift line twice


def test_primary_key_drops_records_repeated_by_shifting_pages(tmp_path: Path) -> None:
    inserted: list[int] = []

    def shift(api: FakeAPI, page: int) -> None:
        # a new record lands at the head of the listing while we page through it
        if page in (2, 4) and page not in inserted:
            inserted.append(page)
            api.records.insert(0, {"id": 1000 + page, "price": 1.0})

    out = tmp_path / "o"
    with FakeAPI(listings(50), page_size=10, style="page", hook=shift) as api:
        # one page at a time: pages planned ahead of a listing that shifts under them
        # would end at a short page that the shift later fills (see ingest's concurrency)
        r = ingest(
            api.url,
            out,
            paginate="page",
            records_path="data.items",
            primary_key="id",
            concurrency=1,
        )
    got = read_ingested(out).column("id").to_pylist()
    assert r.duplicates == 2
    assert len(got) == len(set(got)) == 50 and set(got) == set(range(50))

    # without --primary-key the shifted records do show up twice (what the key is for)
    inserted.clear()
    with FakeAPI(listings(50), page_size=10, style="page", hook=shift) as api:
        ingest(
            api.url, tmp_path / "nokey", paginate="page", records_path="data.items", concurrency=1
        )
    got = read_ingested(tmp_path / "nokey").column("id").to_pylist()
    assert len(got) == 52 and len(set(got)) == 50


def test_primary_key_dedup_survives_a_resume(tmp_path: Path) -> None:
    recs = listings(30)
    recs[25] = dict(recs[5])  # the API repeats record 5 on page 2
    out = tmp_path / "o"
    with FakeAPI(recs, page_size=10) as api:
        ingest(api.url, out, max_pages=2, primary_key="id", **CURSOR)
        r = ingest(api.url, out, primary_key="id", **CURSOR)
    assert r.duplicates == 1
    assert read_ingested(out).column("id").to_pylist() == [*range(25), *range(26, 30)]


def test_missing_primary_key_names_page_and_record(tmp_path: Path) -> None:
    recs = listings(20)
    del recs[13]["id"]
    with FakeAPI(recs, page_size=10) as api:
        with pytest.raises(SchemaError, match=r"page 1 .*record 3 has no primary key 'id'") as info:
            ingest(api.url, tmp_path / "o", primary_key="id", **CURSOR)
    assert (info.value.page, info.value.row, info.value.field) == (1, 3, "id")


def test_header_secret_is_sent_but_never_written_or_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-T0KEN-4f9a"
    out = tmp_path / "o"
    clock = FakeClock()
    caplog.set_level(logging.DEBUG)
    with FakeAPI(
        listings(40, drift_at=20),
        page_size=10,
        faults={1: ["503", "429:0"], 2: ["drop"], 3: ["401"]},
    ) as api:
        with pytest.raises(IngestError) as info:
            ingest(
                api.url,
                out,
                headers={"Authorization": f"Bearer {secret}", "X-Api-Key": secret},
                retry=RetryPolicy(sleep=clock.sleep),
                **CURSOR,
            )
        ingest(
            api.url,
            out,
            headers={"Authorization": f"Bearer {secret}", "X-Api-Key": secret},
            retry=RetryPolicy(sleep=clock.sleep),
            **CURSOR,
        )
        sent = [s.headers.get("Authorization") for s in api.served]
    assert sent and all(h == f"Bearer {secret}" for h in sent)
    assert "retry" in caplog.text and "drift" in caplog.text  # the logs did say things
    assert secret not in caplog.text and secret not in str(info.value)
    assert secret.encode() not in all_bytes_under(out)
    for part in out.glob("*.parquet"):
        assert secret.encode() not in repr(pq.read_metadata(part).metadata).encode()
    state = json.loads((out / "_state.json").read_text())
    assert state["header_names"] == ["Authorization", "X-Api-Key"]


def test_rate_limit_with_an_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock.now, sleep=clock.sleep)
    waits = [limiter.acquire() for _ in range(9)]
    assert waits == [0.0] + [0.25] * 8 and clock.t == pytest.approx(1_000_002.0)
    clock.t += 10  # idle time does not bank a burst beyond one request
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.25, 0.25]

    clock2 = FakeClock()
    with FakeAPI(listings(30), page_size=5, faults={2: ["503"]}) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            rate_limiter=RateLimiter(10.0, clock=clock2.now, sleep=clock2.sleep),
            retry=RetryPolicy(sleep=clock2.sleep, base=0.0),
            prefetch=False,
            **CURSOR,
        )
    # 7 requests (6 pages + 1 retry), every attempt spaced 0.1 s apart on the fake clock
    assert r.requests == 7 and len(api.served) == 7
    rate_waits = [s for s in clock2.sleeps if s > 0]
    assert rate_waits == pytest.approx([0.1] * 6)
    assert clock2.t - 1_000_000.0 == pytest.approx(0.6)


def test_real_rate_limit_spaces_requests(tmp_path: Path) -> None:
    import time

    with FakeAPI(listings(12), page_size=3) as api:
        t0 = time.perf_counter()
        ingest(api.url, tmp_path / "o", rate=20.0, **CURSOR)
        elapsed = time.perf_counter() - t0
        assert len(api.served) == 4
    assert elapsed >= 3 / 20.0 - 0.01


def test_prefetch_off_and_on_give_identical_output(tmp_path: Path) -> None:
    recs = listings(77, drift_at=40)
    with FakeAPI(recs, page_size=10) as api:
        ingest(api.url, tmp_path / "a", prefetch=True, **CURSOR)
        ingest(api.url, tmp_path / "b", prefetch=False, fsync=False, **CURSOR)
    assert read_ingested(tmp_path / "a").equals(read_ingested(tmp_path / "b"))
    shutil.rmtree(tmp_path / "b")


def test_group_commit_writes_pages_that_arrived_during_a_slow_commit_together(
    tmp_path: Path,
) -> None:
    import time

    recs = listings(120, drift_at=60)
    commits: list[tuple[int, int]] = []

    def slow_first_commit(p: IngestProgress) -> None:
        commits.append((p.page, p.pages))
        if len(commits) == 1:
            time.sleep(0.3)  # pages keep arriving meanwhile (bounded by the queue)

    with FakeAPI(recs, page_size=5) as api:
        r = ingest(api.url, tmp_path / "g", on_progress=slow_first_commit, **CURSOR)
        ingest(api.url, tmp_path / "s", prefetch=False, **CURSOR)
    parts = sorted((tmp_path / "g").glob("part-*.parquet"))
    assert r.pages == 24 and len(commits) < 24 and len(parts) == len(commits)
    ranges = [pq.read_metadata(p).metadata[b"datafuel.ingest.pages"].decode() for p in parts]
    assert any(a != b for a, b in (x.split("-") for x in ranges))  # some part spans pages
    assert read_ingested(tmp_path / "g").equals(read_ingested(tmp_path / "s"))
    assert json.loads((tmp_path / "g" / "_state.json").read_text())["records"] == 120
