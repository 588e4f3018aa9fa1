"""Shared test data for the engine tests: deterministic units of every field kind."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path
from typing import Any

import numpy as np

from datafuel.errors import InputDataError
from datafuel.loaders import bytes_field, fixed, ragged

FIELDS = {
    "x": fixed("float32", (3,)),
    "y": fixed("int64"),
    "jpeg": bytes_field(),
    "tokens": ragged("uint16"),
}


def unit_rows(shared: Any, payload: tuple[int, int]) -> dict[str, Any]:
    """Rows of one unit: a pure function of ``(seed, n)`` (and ``shared``, an offset)."""
    seed, n = payload
    rng = np.random.default_rng([seed, 7])
    return {
        "x": rng.normal(size=(n, 3)).astype(np.float32),
        "y": rng.integers(-(2**40), 2**40, size=n) + int(shared or 0),
        "jpeg": [rng.bytes(int(k)) for k in rng.integers(0, 60, size=n)],
        "tokens": [
            rng.integers(0, 65535, size=int(k), dtype=np.uint16)
            for k in rng.integers(0, 50, size=n)
        ],
    }


def bad_unit(shared: Any, payload: tuple[int, int]) -> dict[str, Any]:
    """Like unit_rows, but unit ``shared`` raises the error a bad record gives."""
    if payload[0] == shared:
        raise InputDataError(
            f"records.jsonl:{payload[0]}: not valid JSON.", path="records.jsonl", row=payload[0]
        )
    return unit_rows(None, payload)


def nan_unit(shared: Any, payload: tuple[int, int]) -> dict[str, Any]:
    """Like unit_rows, with a NaN in row ``shared`` of unit 2."""
    rows = unit_rows(None, payload)
    if payload[0] == 2:
        rows["x"][shared, 1] = np.nan
    return rows


class CrashOnce:
    """A unit function whose worker process dies the first time it sees unit ``unit``.

    The marker file records that the crash happened, so Ray's retry runs normally.
    """

    def __init__(self, marker: str, unit: int) -> None:
        self.marker = marker
        self.unit = unit

    def __call__(self, shared: Any, payload: tuple[int, int]) -> dict[str, Any]:
        if payload[0] == self.unit and not os.path.exists(self.marker):
            Path(self.marker).write_text("crashed once\n")
            os._exit(1)  # a killed worker: no exception, the process is gone
        return unit_rows(shared, payload)


def square_plus(shared: int, x: int) -> int:
    return x * x + shared


def payloads(sizes: list[int]) -> list[tuple[int, int]]:
    return [(i, n) for i, n in enumerate(sizes)]


def same_tree(a: Path, b: Path) -> list[str]:
    """Relative paths of files that differ (or exist on one side only); [] when identical."""
    diffs: list[str] = []
    names_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    names_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    diffs += sorted(set(names_a) ^ set(names_b))
    for name in sorted(set(names_a) & set(names_b)):
        if not filecmp.cmp(a / name, b / name, shallow=False):
            diffs.append(name)
    return diffs
