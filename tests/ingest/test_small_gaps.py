"""Defaults that protect a run: page size limit, depth, read timeouts, URL secrets when concurrent."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hostile_server import HostileServer, Reply, Seen
from ingest_server import FakeAPI, all_bytes_under, listings

from datafuel.errors import DatafuelError, IngestError, RetryExhaustedError
from datafuel.ingest import ingest, read_ingested
from datafuel.ingest._limits import DEFAULT_MAX_BYTES, ResponseLimits

SECRET = "s3cr3t-Zq81"


def test_default_max_page_bytes_is_64_mib_and_a_larger_page_is_refused_unread(
    tmp_path: Path,
) -> None:
    assert DEFAULT_MAX_BYTES == 64 * 1024 * 1024
    sent: list[int] = []

    def huge() -> Iterator[bytes]:
        for _ in range(80):  # 80 MiB if it were all read
            sent.append(1)
            yield b" " * (1 << 20)

    def route(server: HostileServer, seen: Seen) -> Reply:
        return Reply(200, {"Content-Length": str(80 << 20)}, huge())

    with HostileServer(route) as srv:
        with pytest.raises(IngestError, match=r"page 0 .*announces a 83886080-byte body"):
            ingest(srv.url(), tmp_path / "o", concurrency=1)
    assert len(sent) < 80  # refused from the headers, not after reading it all


def test_max_page_bytes_cli_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datafuel.cli import main

    with HostileServer(lambda s, r: Reply(200, {}, b"[" + b" " * 5000 + b"]")) as srv:
        code = main(["ingest", srv.url(), "--out", str(tmp_path / "o"), "--max-page-bytes", "4096"])
    assert code != 0 and "announces a 5002-byte body" in capsys.readouterr().err


def test_deep_nesting_is_a_datafuel_error_not_a_recursion_error() -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(DatafuelError, match="nested deeper than --max-depth 200"):
        ResponseLimits().parse(body, where="page 3", page=3)


def test_read_timeouts_are_on_by_default(tmp_path: Path) -> None:
    def stall(server: HostileServer, seen: Seen) -> Reply:
        def body() -> Iterator[bytes]:
            yield b"["
            time.sleep(3)  # longer than the timeout given below; the default is 30 s
            yield b"]"

        return Reply(200, {"Content-Length": "2"}, body())

    with HostileServer(stall) as srv:
        t0 = time.monotonic()
        with pytest.raises(RetryExhaustedError, match="timed out"):
            ingest(srv.url(), tmp_path / "o", timeout=0.3, max_attempts=2, retry_base=0)
    assert time.monotonic() - t0 < 2.5
    import inspect

    assert inspect.signature(ingest).parameters["timeout"].default == 30.0  # on by default


@pytest.mark.parametrize("name", ["api_key", "token", "key", "client_secret", "password"])
def test_url_secrets_never_reach_state_parts_drift_or_logs_when_concurrent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "o"
    faults = {3: ["503"], 6: ["500"] * 3}
    with FakeAPI(listings(120, drift_at=60), page_size=10, style="page", faults=faults) as api:
        url = f"{api.url}?{name}={SECRET}&region=eu"
        with pytest.raises(RetryExhaustedError) as info:
            ingest(url, out, records_path="data.items", concurrency=8, max_attempts=3, retry_base=0)
        assert SECRET not in str(info.value) and f"{name}=***" in str(info.value)
        state = (out / "_state.json").read_text()
        assert f"{name}=***" in state or f'"{name}", "***"' in state
        with pytest.raises(DatafuelError):  # a rerun without the secret is a different source
            ingest(api.url, out, records_path="data.items", concurrency=8)
        r = ingest(url, out, records_path="data.items", concurrency=8)  # given it again
        sent = [s.params for s in api.served]
    assert r.resumed and read_ingested(out).column("id").to_pylist() == list(range(120))
    assert all(p.get(name) == SECRET for p in sent)
    assert SECRET not in caplog.text
    assert SECRET.encode() not in all_bytes_under(out)
    for part in out.glob("*.parquet"):
        assert SECRET.encode() not in repr(pq.read_metadata(part).metadata).encode()
