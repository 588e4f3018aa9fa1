"""What every build does with duplicates: resolve ``dedup``, align the split, write the report.

``dedup="exact"`` (the default of every build) and ``"near"`` find clusters of
copies; each cluster then goes to the split its representative (the first member in
input order) was given by the build's own split rule, so no cluster straddles
train/val/test, and a record without copies keeps its split: a build over data
without duplicates writes the bytes it wrote before this stage existed.
``dedup_keep="one"`` keeps only each cluster's representative.

``dedup.json`` (and a ``dedup`` entry in ``split.json``) is written when ``dedup``
was given explicitly, or when the default found copies; a default build of data
without duplicates adds nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._fs import atomic_write_json
from datafuel.dedup import Clusters, check_method
from datafuel.errors import ConfigError

__all__ = ["DEDUP_REPORT", "DedupOutcome", "check_keep", "resolve_dedup", "write_dedup_report"]

DEDUP_REPORT = "dedup.json"


def resolve_dedup(dedup: str | None, kind: str) -> tuple[str, bool]:
    """``(method, explicit)``: ``None`` is the default ``"exact"``, not explicitly asked."""
    if dedup is None:
        return "exact", False
    return check_method(dedup, kind), True


def check_keep(keep: str) -> str:
    if keep not in ("all", "one"):
        raise ConfigError(f"dedup_keep must be 'all' or 'one'. Got {keep!r} instead.")
    return keep


class DedupOutcome:
    """The clusters of one build and what they did to its split."""

    def __init__(
        self, clusters: Clusters, which_before: np.ndarray, which_after: np.ndarray, keep: str
    ):
        self.clusters = clusters
        self.keep = keep
        self.moved = int((which_before != which_after).sum())
        self.kept = clusters.representatives() if keep == "one" else np.ones(clusters.n, bool)
        self.which = which_after

    @property
    def found(self) -> bool:
        return bool((self.clusters.labels != np.arange(self.clusters.n)).any())

    @property
    def dropped(self) -> int:
        return int((~self.kept).sum())

    def split_entry(self) -> dict[str, Any]:
        j = self.clusters.to_json(examples=0)
        return {
            "method": self.clusters.method,
            "keep": self.keep,
            "clusters": j["clusters"],
            "duplicates": j["duplicates"],
            "moved": self.moved,
            "dropped": self.dropped,
            "rule": "each cluster goes to its first member's split",
            "report": DEDUP_REPORT,
        }


def write_dedup_report(
    out: str | os.PathLike[str],
    outcome: DedupOutcome,
    *,
    kind: str,
    unit: str,
    describe: Callable[[int], Any],
    split_names: tuple[str, ...] = ("train", "val", "test"),
) -> dict[str, Any]:
    """``out/dedup.json``: counts and sizes of the clusters, examples, what was dropped."""
    c = outcome.clusters
    body = c.to_json(describe=describe)
    dropped = np.flatnonzero(~outcome.kept)
    report = {
        "kind": kind,
        "unit": unit,
        **body,
        "keep": outcome.keep,
        "moved": outcome.moved,
        "dropped": {
            "count": int(dropped.size),
            "examples": [describe(int(x)) for x in dropped[:100]],
        },
        "example_splits": [
            sorted({split_names[int(outcome.which[int(x)])] for x in g}) for g in c.members()[:10]
        ],
    }
    atomic_write_json(Path(out) / DEDUP_REPORT, report)
    return report
