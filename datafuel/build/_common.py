"""What every build shares: the engine it runs on, progress, the split record, the summary."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from datafuel._fs import atomic_write_json
from datafuel._lock import LOCK_NAME
from datafuel.engine import Engine, get_engine
from datafuel.errors import ConfigError

__all__ = [
    "SUMMARY_KEYS",
    "Progress",
    "Timer",
    "clear_split",
    "engine_for",
    "make_summary",
    "prepare_out",
    "report",
    "write_split_record",
]

#: ``on_progress(stage, n, total)``: ``n`` more records of ``stage`` are done (of ``total``,
#: when known). Stages are short names such as ``"validate"``, ``"write train"``.
Progress = Callable[[str, int, "int | None"], None]

#: Keys of the summary every build returns (kind-specific keys come beside them).
SUMMARY_KEYS = ("counts", "engine", "fitted", "kind", "out", "seconds", "skipped")

SPLIT_RECORD = "split.json"

#: Files and folders a build of each kind writes at the top of ``out`` (beside the lock).
_OWN: dict[str, tuple[str, ...]] = {
    "table": ("recipe.json", "split.json", "dedup.json"),
    "images": ("split.json", "skipped.json", "dedup.json"),
    "text": ("tokenizer.json", ".build-text.json", "split.json", "dedup.json"),
    "resample": ("resample_report.json", "resample_report.txt", ".resample-work"),
}
#: A file only one kind writes: its presence says which build ``out`` holds.
_MARKS = {
    "recipe.json": "table",
    "tokenizer.json": "text",
    ".build-text.json": "text",
    "skipped.json": "images",
    "resample_report.json": "resample",
    ".resample-work": "resample",
}
_SPLITS = ("train", "val", "test")
_SHARD_FILE = re.compile(r"^(manifest\.json|shard-\d{5,}\.[A-Za-z0-9_][A-Za-z0-9_-]*\.(bin|idx))$")
_RECIPE_FILE = re.compile(r"^recipe\.[A-Za-z0-9_.-]+\.npy$")
_TEMP_FILE = re.compile(r"^\.[A-Za-z0-9_.-]+\.tmp$")  # atomic_write_json's temp files


def _kind_of_manifest(path: Path) -> str | None:
    """The kind of build that wrote the shard set whose manifest is ``path``, if it says."""
    try:
        prov = json.loads(path.read_text()).get("provenance", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(prov, dict):
        return None
    if prov.get("source") == "images":
        return "images"
    if prov.get("stage") == "text":
        return "text"
    if prov.get("stage") == "synthetic":
        return "resample"
    if "recipe_fingerprint" in prov:
        return "table"
    return None


def _shard_dir_files(d: Path) -> tuple[list[Path], list[Path]]:
    """A split folder's files a shard writer writes, and any others."""
    own: list[Path] = []
    other: list[Path] = []
    for p in sorted(d.iterdir()):
        fits = _SHARD_FILE.match(p.name) or _TEMP_FILE.match(p.name)
        (own if fits and p.is_file() and not p.is_symlink() else other).append(p)
    return own, other


def _survey_split(d: Path, kinds: set[str], own: list[Path], other: list[Path]) -> None:
    """A ``train``/``val``/``test`` folder: a shard writer's files are datafuel's."""
    files, others = _shard_dir_files(d)
    own.extend(files)
    other.extend(others)
    kind = _kind_of_manifest(d / "manifest.json") if (d / "manifest.json") in files else None
    if kind:
        kinds.add(kind)
    if not others:
        own.append(d)  # the folder itself, once emptied


def _kind_of_split_record(out: Path) -> str | None:
    """The kind whose ``split.json`` this is, by its ``unit`` (when nothing else says)."""
    try:
        unit = json.loads((out / SPLIT_RECORD).read_text()).get("unit")
    except (OSError, ValueError, AttributeError):
        return None
    return {"image files": "images", "document": "text"}.get(str(unit))


def _survey(out: Path) -> tuple[set[str], list[Path], list[Path]]:
    """What ``out`` holds: the build kinds found, datafuel's entries, everything else."""
    kinds: set[str] = set()
    own: list[Path] = []
    other: list[Path] = []
    every_own = {name for names in _OWN.values() for name in names}
    for p in sorted(out.iterdir()):
        name = p.name
        if name == LOCK_NAME:
            continue
        kinds.update([_MARKS[name]] if name in _MARKS else [])
        if name in every_own or _RECIPE_FILE.match(name) or _TEMP_FILE.match(name):
            own.append(p)
        elif name in _SPLITS and p.is_dir() and not p.is_symlink():
            _survey_split(p, kinds, own, other)
        elif _SHARD_FILE.match(name) and p.is_file():  # resample writes its set in out itself
            own.append(p)
            if name == "manifest.json":
                kinds.add(_kind_of_manifest(p) or "resample")
        else:
            other.append(p)
    if not kinds and (out / SPLIT_RECORD).is_file():
        kind = _kind_of_split_record(out)
        kinds.update([kind] if kind else [])
    return kinds, own, other


def _names(out: Path, paths: list[Path], limit: int = 8) -> str:
    shown = [p.relative_to(out).as_posix() + ("/" if p.is_dir() else "") for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(shown) + more


def prepare_out(out: str | os.PathLike[str], kind: str, *, overwrite: bool = False) -> None:
    """Refuse to write a ``kind`` build over another kind of build; with ``overwrite``, clear it.

    A rerun of the same kind finds its own files and resumes (or rewrites the same
    bytes), so it is let through. Another kind's build in ``out`` (``recipe.json``
    and a table manifest, say, where images are to go) raises
    :class:`~datafuel.errors.ConfigError` naming the directory and what is there.
    ``overwrite=True`` removes every file a datafuel build wrote there (shard sets,
    recipe files, tokenizer, split and skip records, state and report files) before
    the build, and refuses, removing nothing, when ``out`` also holds files datafuel
    did not write (they are named). Call it with the build lock held.
    """
    root = Path(out)
    if not root.is_dir():
        return
    kinds, own, other = _survey(root)
    if not overwrite:
        foreign = sorted(kinds - {kind})
        if foreign:
            what = " and ".join(f"{'an' if k[0] in 'aeiou' else 'a'} {k}" for k in foreign)
            raise ConfigError(
                f"out {root} already holds {what} build ({_names(root, own)}); writing a "
                f"{kind} build there would mix the two. Use another --out, or --overwrite "
                "(overwrite=True) to remove that build first.",
                path=root,
            )
        return
    if not own:
        return
    if other:
        raise ConfigError(
            f"--overwrite: out {root} also holds files datafuel did not write "
            f"({_names(root, other)}); nothing was removed. Move them, or use another --out.",
            path=root,
        )
    for p in sorted(own, key=lambda q: len(q.parts), reverse=True):  # files before folders
        if p.is_dir() and not p.is_symlink():
            if p.name == ".resample-work":
                shutil.rmtree(p)
            else:
                p.rmdir()
        else:
            p.unlink()


def clear_split(out: str | os.PathLike[str], name: str) -> None:
    """Remove an earlier build's shard set ``out/name`` that this build leaves empty.

    A rerun with that split's fraction at 0 (or with no rows for it) must not leave the
    old rows readable beside the new split: they were split and fitted another way.
    The manifest goes first (the set stops being readable at once), then the shard
    writer's files; anything else in the folder is left, and so is the folder then.
    """
    d = Path(out) / name
    if not d.is_dir() or d.is_symlink():
        return
    own, other = _shard_dir_files(d)
    for p in sorted(own, key=lambda q: q.name != "manifest.json"):
        p.unlink()
    if not other:
        d.rmdir()


@contextmanager
def engine_for(engine: str | Engine | None) -> Iterator[Engine]:
    """The engine a build runs on: ``None``/``"local"``/``"ray"`` or one given.

    An engine the build made is closed when it ends; one the caller gave stays open
    (the caller may run several builds on one Ray connection).
    """
    made = not isinstance(engine, Engine)
    runner = get_engine(engine)
    try:
        yield runner
    finally:
        if made:
            runner.close()


def report(on_progress: Progress | None, stage: str, total: int | None) -> Callable[[int], None]:
    """A ``rows -> None`` callback reporting ``stage`` to ``on_progress`` (or doing nothing)."""
    if on_progress is None:
        return lambda n: None
    on_progress(stage, 0, total)
    return lambda n: on_progress(stage, n, total)


def write_split_record(out: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """``out/split.json``, written atomically (every build writes one)."""
    atomic_write_json(Path(out) / SPLIT_RECORD, dict(record))


class Timer:
    """Named wall-clock laps for a build's ``seconds``."""

    def __init__(self) -> None:
        self._t0 = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now

    def seconds(self) -> dict[str, float]:
        return {**self.laps, "total": round(time.perf_counter() - self._t0, 3)}


def make_summary(
    kind: str,
    out: str | os.PathLike[str],
    *,
    counts: Mapping[str, int],
    fitted: Mapping[str, Any],
    skipped: int,
    engine: Engine,
    seconds: Mapping[str, float],
    **extra: Any,
) -> dict[str, Any]:
    """The summary every build returns: :data:`SUMMARY_KEYS` plus the kind's own keys.

    ``counts`` are records written per shard set; ``fitted`` names what was fitted on
    train (file name -> fingerprint); ``skipped`` counts input records left out.
    """
    return {
        "kind": kind,
        "out": str(out),
        "counts": dict(counts),
        "fitted": dict(fitted),
        "skipped": int(skipped),
        "engine": engine.name,
        "seconds": dict(seconds),
        **extra,
    }
