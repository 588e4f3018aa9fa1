from __future__ import annotations

import random
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from ingest_server import FakeAPI, FakeClock, listings

from datafuel.errors import ConfigError, HTTPError, RetryExhaustedError
from datafuel.ingest import RetryPolicy, ingest, parse_retry_after, read_ingested


class MaxRandom(random.Random):
    """Full jitter always picks the ceiling: exposes the exponential schedule."""

    def uniform(self, a: float, b: float) -> float:
        return b


def policy(clock: FakeClock, **kw: object) -> RetryPolicy:
    return RetryPolicy(sleep=clock.sleep, now=clock.now, **kw)  # type: ignore[arg-type]


def test_parse_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7", now=0.0) == 7.0
    assert parse_retry_after(" 0 ", now=0.0) == 0.0
    assert parse_retry_after("1.5", now=0.0) == 1.5
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 42, usegmt=True), now=now) == pytest.approx(42.0)
    assert parse_retry_after(formatdate(now - 100, usegmt=True), now=now) == 0.0
    for bad in (None, "", "-3", "soon", "nan", "inf"):
        assert parse_retry_after(bad, now=now) is None


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    p = RetryPolicy(base=0.5, cap=3.0, rng=MaxRandom())
    assert [p.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    jittered = RetryPolicy(base=0.5, cap=3.0, rng=random.Random(0))
    draws = [jittered.backoff(4) for _ in range(2000)]
    assert min(draws) >= 0.0 and max(draws) <= 3.0
    assert min(draws) < 0.1 and max(draws) > 2.9  # the whole [0, ceiling] range is used
    assert p.delay(1, "10") == 10.0
    assert RetryPolicy(retry_after_cap=4.0).delay(1, "3600") == 4.0
    assert p.delay(2, "garbage") == 1.0  # unparseable Retry-After -> backoff


@pytest.mark.parametrize(
    "bad", [{"max_attempts": 0}, {"max_attempts": 1.5}, {"base": -1.0}, {"cap": float("nan")}]
)
def test_policy_rejects_bad_parameters(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


def test_429_retry_after_seconds_is_honoured_and_capped(tmp_path: Path) -> None:
    clock = FakeClock()
    recs = listings(30)
    with FakeAPI(recs, page_size=10, faults={1: ["429:7", "429:3600"]}) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            paginate="cursor:next",
            records_path="data.items",
            retry=policy(clock, retry_after_cap=60.0, rng=MaxRandom()),
        )
    assert clock.sleeps == [7.0, 60.0]
    assert r.retries == 2 and r.records == 30
    assert read_ingested(tmp_path / "o").column("id").to_pylist() == list(range(30))


def test_429_retry_after_http_date(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeAPI(listings(20), page_size=10, faults={0: ["429:date:30"]}) as api:
        clock.t = time.time()
        ingest(
            api.url,
            tmp_path / "o",
            paginate="cursor:next",
            records_path="data.items",
            retry=policy(clock),
        )
    assert len(clock.sleeps) == 1
    assert 27.0 <= clock.sleeps[0] <= 31.0  # HTTP-dates have one-second resolution


def test_503_burst_backs_off_exponentially_without_sleeping(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeAPI(
        listings(30), page_size=10, faults={2: ["503", "503", "502", "500", "504"]}
    ) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            paginate="cursor:next",
            records_path="data.items",
            retry=policy(clock, max_attempts=6, base=0.25, cap=2.0, rng=MaxRandom()),
        )
        assert api.faults_served == ["503", "503", "502", "500", "504"]
    assert clock.sleeps == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert r.retries == 5 and r.records == 30


@pytest.mark.parametrize("fault", ["drop", "truncate", "badjson", "slow:0.6"])
def test_transport_faults_are_retried(tmp_path: Path, fault: str) -> None:
    clock = FakeClock()
    recs = listings(25)
    with FakeAPI(recs, page_size=10, faults={1: [fault, fault]}) as api:
        r = ingest(
            api.url,
            tmp_path / "o",
            paginate="cursor:next",
            records_path="data.items",
            retry=policy(clock),
            timeout=0.2,
        )
        assert api.faults_served == [fault, fault]
    assert r.retries == 2 and len(clock.sleeps) == 2
    assert read_ingested(tmp_path / "o").column("id").to_pylist() == list(range(25))


def test_malformed_json_exhausts_with_an_error_naming_the_page(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeAPI(listings(40), page_size=10, faults={2: ["badjson"] * 3}) as api:
        with pytest.raises(RetryExhaustedError) as info:
            ingest(
                api.url,
                tmp_path / "o",
                paginate="cursor:next",
                records_path="data.items",
                retry=policy(clock, max_attempts=3),
            )
    msg = str(info.value)
    assert info.value.page == 2
    assert "page 2" in msg and "not valid JSON" in msg and "3 time(s)" in msg
    assert "rerun" in msg and "2 page(s)" in msg
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("status", ["404", "401", "403", "400"])
def test_client_errors_other_than_429_are_not_retried(tmp_path: Path, status: str) -> None:
    clock = FakeClock()
    with FakeAPI(listings(30), page_size=10, faults={1: [status]}) as api:
        with pytest.raises(HTTPError) as info:
            ingest(
                api.url,
                tmp_path / "o",
                paginate="cursor:next",
                records_path="data.items",
                retry=policy(clock),
            )
        assert len(api.served) == 2  # page 0, then page 1 once: no retry
    assert info.value.page == 1 and info.value.status == int(status)
    assert f"HTTP {status}" in str(info.value)
    assert clock.sleeps == []
    # the committed page survives and a rerun continues after it
    assert read_ingested(tmp_path / "o").column("id").to_pylist() == list(range(10))
