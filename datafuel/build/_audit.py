"""``build.audit``: exact and near duplicates *across* shard sets (any sets, built anywhere).

Each set's records are read back (text: the token rows decoded with the
``tokenizer.json`` beside the sets; images: the stored bytes; tables: the rows of
field ``x``), clustered together with :mod:`datafuel.dedup`, and every cluster with
members in two sets is a leak.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel.dedup import Clusters, image_clusters, image_keys, key_labels, text_clusters
from datafuel.errors import ConfigError, InputDataError, OutputError
from datafuel.loaders import ShardSet

__all__ = ["audit"]


class AuditError(InputDataError):
    """A shard set ``audit`` cannot compare: no text/image/feature field, mixed kinds, empty."""


def _sets(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The sets named, a build output standing for its non-empty train/val/test."""
    out: list[Path] = []
    for p in map(Path, paths):
        subs = [p / n for n in ("train", "val", "test") if (p / n / "manifest.json").is_file()]
        if subs and not (p / "manifest.json").is_file():
            out.extend(s for s in subs if len(ShardSet(s)) > 0)
        else:
            out.append(p)
    if len(out) < 2:
        raise ConfigError(f"audit needs two or more shard sets; got {[str(p) for p in out]}.")
    return out


def _kind(ds: ShardSet, path: Path) -> str:
    fields = ds.fields
    if "tokens" in fields:
        return "text"
    if "image" in fields:
        return "images"
    if "x" in fields:
        return "table"
    raise AuditError(
        f"{path}: no text ('tokens'), image ('image') or feature ('x') field to compare "
        f"(fields: {sorted(fields)}).",
        path=path,
    )


def _records(kind: str, ds: ShardSet, path: Path) -> list[Any]:
    if kind == "text":
        from datafuel.text import BPETokenizer

        tok_path = path.parent / "tokenizer.json"
        if not tok_path.is_file():
            raise AuditError(f"{path}: a token set needs {tok_path} to be read back.", path=path)
        tok = BPETokenizer.load(tok_path)
        return [tok.decode(ds[i]["tokens"], skip_eot=True) for i in range(len(ds))]
    if kind == "images":
        return [bytes(ds[i]["image"]) for i in range(len(ds))]
    return [np.ascontiguousarray(ds[i]["x"]).tobytes() for i in range(len(ds))]


def _clusters(kind: str, records: list[Any], method: str) -> Clusters:
    if kind == "text":
        return text_clusters(records, method)
    if kind == "images":
        pairs = [image_keys(r) for r in records]
        hashes = np.array([h for _, h in pairs], np.uint64)
        return image_clusters([k for k, _ in pairs], hashes, method)
    import hashlib

    digests = [hashlib.blake2b(r, digest_size=16).digest() for r in records]
    return Clusters(key_labels(np.array(digests, dtype="S16")), "exact")


def audit(  # noqa: C901 - one pass: read, cluster, pick the cross pairs
    sets: Sequence[str | os.PathLike[str]],
    *,
    method: str = "near",
    worst: int = 20,
    html: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Duplicates across shard sets: counts, the ``worst`` pairs, text excerpts.

    ``sets`` are shard set directories, or build outputs (their ``train``/``val``/
    ``test``). Returns ``{"kind", "sets", "cross_clusters", "cross_pairs", "pairs",
    "leaked"}``; ``leaked`` is true when any record has a copy in another set.
    Tables are compared exactly (on the stored features). ``html`` names a
    self-contained HTML page to write with the same pairs: images side by side as
    thumbnails, text with the shared run of words marked (see
    :mod:`datafuel.build._audit_html`).
    """
    if html is not None:
        html = Path(html)
        if not html.parent.is_dir():
            raise OutputError(
                f"HTML report {html}: the folder {html.parent} does not exist.", path=html.parent
            )
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ConfigError(f"worst must be an int >= 0. Got {worst!r} instead.")
    paths = _sets(sets)
    kinds, records, owner = [], [], []
    for k, p in enumerate(paths):
        ds = ShardSet(p)
        kind = _kind(ds, p)
        if len(ds) == 0:
            raise AuditError(f"{p}: the shard set is empty (0 rows).", path=p)
        kinds.append(kind)
        rec = _records(kind, ds, p)
        records.extend(rec)
        owner.extend([k] * len(rec))
    if len(set(kinds)) > 1:
        raise AuditError(
            "audit compares sets of one kind; got "
            + ", ".join(f"{p} ({k})" for p, k in zip(paths, kinds, strict=True))
            + ".",
        )
    kind, own = kinds[0], np.array(owner)
    start = np.r_[0, np.cumsum(np.bincount(own, minlength=len(paths)))]
    c = _clusters(kind, records, method if kind != "table" else "exact")
    pairs: list[tuple[int, int, float]] = []
    for g in c.members():  # exact-equal cross pairs: each foreign member with the first
        for x in g[1:]:
            if own[x] != own[g[0]] and records[x] == records[g[0]]:
                pairs.append((int(g[0]), int(x), 1.0))
    seen = {(a, b) for a, b, _ in pairs}
    for a, b, s in zip(*c.pairs, strict=True):
        if own[a] != own[b] and (int(a), int(b)) not in seen:
            pairs.append((int(a), int(b), float(s)))
    pairs.sort(key=lambda t: (-t[2], t[0], t[1]))
    cross = [g for g in c.members() if len(set(own[g].tolist())) > 1]

    def side(x: int) -> dict[str, Any]:
        d: dict[str, Any] = {"set": str(paths[own[x]]), "index": int(x - start[own[x]])}
        if kind == "text":
            d["excerpt"] = records[x][:200]
        return d

    result = {
        "kind": kind,
        "method": c.method,
        "sets": {str(p): int(start[k + 1] - start[k]) for k, p in enumerate(paths)},
        "cross_clusters": len(cross),
        "cross_records": int(sum(g.size for g in cross)),
        "cross_pairs": len(pairs),
        "pairs": [
            {"similarity": round(s, 4), "a": side(a), "b": side(b)} for a, b, s in pairs[:worst]
        ],
        "leaked": bool(cross),
    }
    if html is not None:
        from ._audit_html import write_audit_html

        opened: dict[int, ShardSet] = {}

        def payload(x: int) -> Any:
            if kind != "table":
                return records[x]
            k = int(own[x])
            ds = opened.setdefault(k, ShardSet(paths[k]))
            return ds[int(x - start[k])]["x"]

        write_audit_html(html, result, [(a, b) for a, b, _ in pairs[:worst]], payload)
    return result
