"""The checkpoint: a JSON state file replaced atomically, and the drift report.

Order of a page commit (see :mod:`datafuel.ingest._ingest`): the Parquet part is
durable (temp file, fsync, rename, directory fsync), then the drift events are
appended and fsynced, then ``_state.json`` is atomically replaced to record the page,
the next request and the drift report's length. A kill at any instant leaves either
the old state (the part and drift lines beyond it are discarded on resume) or the new
one — never a gap or a duplicate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datafuel._fs import atomic_write_json, fsync_dir
from datafuel.errors import IngestError

__all__ = ["DRIFT_FILE", "STATE_FILE", "STATE_FORMAT", "Checkpoint", "DriftLog", "fsync_dir"]

STATE_FILE = "_state.json"
DRIFT_FILE = "_drift.jsonl"
STATE_FORMAT = "datafuel.ingest.state"
STATE_VERSION = 1


class Checkpoint:
    """``DIR/_state.json``: load it, replace it atomically.

    Examples
    --------
    >>> import tempfile
    >>> ck = Checkpoint(tempfile.mkdtemp())
    >>> ck.load() is None
    True
    >>> ck.save({"pages": 1}); ck.load()["pages"]
    1
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.fsync = fsync

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` when there is none yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IngestError(
                f"cannot read the ingest checkpoint {self.path}: {exc}", path=self.path
            ) from exc
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise IngestError(
                f"the ingest checkpoint {self.path} is not valid JSON ({exc}); it was not written "
                "by datafuel or was edited by hand",
                path=self.path,
            ) from exc
        if not isinstance(state, dict) or state.get("format", STATE_FORMAT) != STATE_FORMAT:
            raise IngestError(f"{self.path} is not a datafuel ingest checkpoint", path=self.path)
        version = state.get("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise IngestError(
                f"{self.path} has checkpoint version {version!r}; this datafuel reads version {STATE_VERSION}",
                path=self.path,
            )
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` to a temp file, fsync it, and rename it over the state file."""
        payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **state}
        atomic_write_json(self.path, payload, fsync=self.fsync, sort_keys=False)


class DriftLog:
    """``DIR/_drift.jsonl``: one JSON object per drift event, appended per page."""

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(directory) / DRIFT_FILE
        self.fsync = fsync

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self, size: int) -> None:
        """Drop lines written after the last committed state (a kill between part and state)."""
        if self.size() > size:
            with open(self.path, "r+b") as f:
                f.truncate(size)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())

    def append(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Append events durably; return the file's new size."""
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in events)
        if lines:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(lines)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
        return self.size()

    def read(self) -> list[dict[str, Any]]:
        """Every drift event recorded so far."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
