"""Reusable pieces for the ingest tests: the local API server, ground truth, fake clocks.

The server itself is :class:`datafuel.demo.FakeAPI` (a threaded
``http.server`` on 127.0.0.1 that injects 429/5xx, dropped connections, truncated and
malformed bodies, slow responses; it stops by itself after ``lifetime`` seconds and
answers 410 after ``max_requests``). It lives in the package because ``datafuel demo``
and ``benchmarks/bench_ingest.py`` start it too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from datafuel.demo import FakeAPI, ServedRequest, decode_cursor, encode_cursor

__all__ = [
    "FakeAPI",
    "FakeClock",
    "ServedRequest",
    "all_bytes_under",
    "decode_cursor",
    "encode_cursor",
    "listings",
]


class FakeClock:
    """A clock whose ``sleep`` only advances time and records the request."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def listings(n: int, *, drift_at: int | None = None) -> list[dict[str, Any]]:
    """House listings with nested location, a list, nulls and missing fields.

    From record ``drift_at`` on, ``bedrooms`` is a float and a ``garage`` field appears.
    """
    out = []
    for i in range(n):
        rec: dict[str, Any] = {
            "id": i,
            "price": 100_000.0 + 1234.5 * i,
            "sqft": 800 + (i * 37) % 2000,
            "bedrooms": 1 + i % 5,
            "location": {"lat": 47.0 + i / 1000, "lon": -122.0 - i / 1000},
            "tags": ["view"] if i % 3 == 0 else [],
        }
        if i % 7 == 3:
            rec["sqft"] = None
        if i % 11 == 5:
            del rec["location"]
        if drift_at is not None and i >= drift_at:
            rec["bedrooms"] = rec["bedrooms"] + 0.5
            rec["garage"] = i % 2
        out.append(rec)
    return out


def all_bytes_under(*roots: os.PathLike[str] | str) -> bytes:
    """Concatenated bytes of every file under ``roots`` (to grep for secrets)."""
    chunks = []
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                chunks.append(Path(dirpath, name).read_bytes())
    return b"\n".join(chunks)
