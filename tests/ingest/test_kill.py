"""SIGKILL the ingest process at random moments; the reruns must give the exact ground truth."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ingest_server import FakeAPI, listings
from kill_helpers import kill_at_random_moments

from datafuel.ingest import ingest, read_ingested

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")


def expected_row(rec: dict[str, Any]) -> dict[str, Any]:
    loc = rec.get("location") or {}
    return {
        "id": rec["id"],
        "price": rec["price"],
        "sqft": rec["sqft"],
        "bedrooms": float(rec["bedrooms"]),
        "location.lat": loc.get("lat"),
        "location.lon": loc.get("lon"),
        "tags": json.dumps(rec["tags"], separators=(",", ":")),
        "garage": rec.get("garage"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_sigkill_at_random_moments_then_rerun_gives_exact_ground_truth(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    truth = listings(240, drift_at=120)
    out = tmp_path / "out"
    with FakeAPI(
        truth,
        page_size=3,  # 80 pages of >= 10 ms each, so the kills land mid-run
        latency=0.010,
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
            "cursor:next",
            "--records-path",
            "data.items",
            "--max-attempts",
            "12",
            "--retry-base",
            "0.005",
            "--timeout",
            "5",
        ]
        state_file = out / "_state.json"
        kills = kill_at_random_moments(cmd, state_file, rng, attempts=4, max_delay=0.25)
        final = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert final.returncode == 0, final.stderr
        assert kills >= 2, "the kills all came too late to interrupt anything"
        served_before_reference = len(api.served)
        api.fault_rate = 0.0
        reference = ingest(
            api.url, tmp_path / "reference", paginate="cursor:next", records_path="data.items"
        )
        assert len(api.served) > served_before_reference

    table = read_ingested(out)
    assert table.to_pylist() == [
        expected_row(r) for r in truth
    ]  # no duplicate, no gap, same values
    assert table.equals(read_ingested(tmp_path / "reference"))
    state = json.loads((out / "_state.json").read_text())
    assert state["status"] == "done" and state["records"] == 240 == reference.records
    # parts are named by their first page; group commits may cover several pages each
    firsts = sorted(int(p.name[5:13]) for p in out.glob("part-*.parquet"))
    assert firsts[0] == 0 and firsts == sorted(set(firsts)) and firsts[-1] <= 79
    assert not list(out.glob(".*.tmp"))  # a temp file of a killed write is removed on rerun
