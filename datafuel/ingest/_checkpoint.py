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
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datafuel._fs import atomic_write_json, fsync_dir
from datafuel.errors import IngestError

__all__ = [
    "DRIFT_FILE",
    "STATE_FILE",
    "STATE_FORMAT",
    "Checkpoint",
    "DriftLog",
    "fsync_dir",
    "validate_state",
]

STATE_FILE = "_state.json"
DRIFT_FILE = "_drift.jsonl"
STATE_FORMAT = "datafuel.ingest.state"
STATE_VERSION = 2
#: versions this datafuel resumes (1: before ``parts``/``last_part``; never deletes a part)
READ_VERSIONS = (1, 2)
#: no count in a checkpoint is larger (a "huge" value is tampering, not progress)
MAX_COUNT = 2**53
_STATUSES = ("running", "stopped", "done")
_TYPES = ("null", "bool", "int", "float", "string")
_PART_RE = re.compile(r"^part-(\d{8,})\.parquet$")
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class Checkpoint:
    """``DIR/_state.json``: load it, replace it atomically.

    Examples
    --------
    >>> import tempfile
    >>> ck = Checkpoint(tempfile.mkdtemp())
    >>> ck.load() is None
    True
    >>> ck.save({"pages": 1}); ck.path.exists()
    True
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
        if isinstance(version, bool) or version not in READ_VERSIONS:
            raise IngestError(
                f"{self.path} has checkpoint version {version!r}; this datafuel reads versions "
                f"{', '.join(map(str, READ_VERSIONS))}",
                path=self.path,
                field="version",
            )
        validate_state(state, self.path)
        return state

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` to a temp file, fsync it, and rename it over the state file."""
        payload = {"format": STATE_FORMAT, "version": STATE_VERSION, **state}
        atomic_write_json(self.path, payload, fsync=self.fsync, sort_keys=False)


def _bad(path: Path, key: str, what: str, value: Any) -> IngestError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return IngestError(
        f"{path}: key {key!r} must be {what}. Got {shown} instead. The checkpoint was edited or "
        "damaged; nothing was changed (no part deleted). Restore it, or move the directory "
        "aside and ingest again.",
        path=path,
        field=key,
    )


def _get(state: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> Any:
    if key not in state:
        raise IngestError(
            f"{path}: key {prefix + key!r} is missing. The checkpoint was edited or damaged; "
            "nothing was changed (no part deleted).",
            path=path,
            field=prefix + key,
        )
    return state[key]


def _count(state: Mapping[str, Any], key: str, path: Path) -> int:
    value = _get(state, key, path)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise _bad(path, key, f"an int in the range [0, {MAX_COUNT}]", value)
    return value


def _opt_str(state: Mapping[str, Any], key: str, path: Path, prefix: str = "") -> str | None:
    value = _get(state, key, path, prefix)
    if value is not None and not isinstance(value, str):
        raise _bad(path, prefix + key, "a string or null", value)
    return value


def _str_list(value: Any, key: str, path: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(path, key, "a list of strings", value)
    return value


def validate_state(state: Mapping[str, Any], path: Path) -> None:
    """Check every key of a loaded ``_state.json`` for presence, type and range.

    Raises :class:`~datafuel.errors.IngestError` naming ``path`` and the key. Nothing
    is acted on before this passes: a state that does not validate never deletes a
    part. (:func:`check_parts` then compares it with the files.)
    """
    _check_config(_get(state, "config", path), path)
    _str_list(_get(state, "header_names", path), "header_names", path)
    status = _get(state, "status", path)
    if status not in _STATUSES:
        raise _bad(path, "status", f"one of {', '.join(_STATUSES)}", status)
    _opt_str(state, "stop_reason", path)
    pages = _count(state, "pages", path)
    for key in ("records", "duplicates", "retries", "requests", "drift_events", "drift_bytes"):
        _count(state, key, path)
    _check_next(_get(state, "next", path), status, pages, path)
    digest = _get(state, "last_page_hash", path)
    if digest is not None and not (isinstance(digest, str) and _HASH_RE.match(digest)):
        raise _bad(path, "last_page_hash", "a sha256 hex digest or null", digest)
    _check_schema(_get(state, "schema", path), path)
    paginator = _get(state, "paginator", path)
    if not isinstance(paginator, dict):
        raise _bad(path, "paginator", "an object", paginator)
    _str_list(_get(paginator, "seen", path, "paginator."), "paginator.seen", path)
    if state.get("version", STATE_VERSION) >= 2:
        _check_part_keys(state, pages, path)


def _check_config(config: Any, path: Path) -> None:
    if not isinstance(config, dict):
        raise _bad(path, "config", "an object", config)
    if not isinstance(_get(config, "url", path, "config."), str):
        raise _bad(path, "config.url", "a string", config["url"])
    if not isinstance(_get(config, "paginate", path, "config."), str):
        raise _bad(path, "config.paginate", "a string", config["paginate"])
    _opt_str(config, "records_path", path, "config.")
    _opt_str(config, "primary_key", path, "config.")
    size = _get(config, "page_size", path, "config.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise _bad(path, "config.page_size", "a positive int or null", size)


def _check_part_keys(state: Mapping[str, Any], pages: int, path: Path) -> None:
    n = _count(state, "parts", path)
    last = _opt_str(state, "last_part", path)
    m = _PART_RE.match(last) if last is not None else None
    if (last is None) != (n == 0) or (last is not None and (m is None or int(m.group(1)) >= pages)):
        raise _bad(
            path,
            "last_part",
            f"null with parts 0, or a part-NNNNNNNN.parquet name below pages ({pages})",
            last,
        )


def _check_next(nxt: Any, status: str, pages: int, path: Path) -> None:
    if nxt is None:
        if status != "done":
            raise _bad(path, "next", f"a request object while status is {status!r}", nxt)
        return
    if not isinstance(nxt, dict):
        raise _bad(path, "next", "an object or null", nxt)
    url = _get(nxt, "url", path, "next.")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise _bad(path, "next.url", "an http:// or https:// URL", url)
    params = _get(nxt, "params", path, "next.")
    if not isinstance(params, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in params
    ):
        raise _bad(path, "next.params", "a list of [name, value] string pairs", params)
    index = _get(nxt, "index", path, "next.")
    if isinstance(index, bool) or not isinstance(index, int) or not pages <= index <= MAX_COUNT:
        raise _bad(path, "next.index", f"an int in the range [pages ({pages}), {MAX_COUNT}]", index)


def _check_schema(schema: Any, path: Path) -> None:
    if not isinstance(schema, dict):
        raise _bad(path, "schema", "an object", schema)
    columns = _get(schema, "columns", path, "schema.")
    if not isinstance(columns, dict) or not all(t in _TYPES for t in columns.values()):
        raise _bad(
            path, "schema.columns", f"an object mapping names to {'/'.join(_TYPES)}", columns
        )
    _str_list(_get(schema, "big_int", path, "schema."), "schema.big_int", path)
    _str_list(_get(schema, "absent", path, "schema."), "schema.absent", path)
    seen = _get(schema, "pages_seen", path, "schema.")
    if isinstance(seen, bool) or not isinstance(seen, int) or not 0 <= seen <= MAX_COUNT:
        raise _bad(path, "schema.pages_seen", f"an int in the range [0, {MAX_COUNT}]", seen)


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

    def check(self, size: int, events: int, *, state_path: Path) -> None:
        """Refuse a checkpoint whose ``drift_bytes``/``drift_events`` do not match this file.

        The first ``size`` bytes must be ``events`` whole lines (what the last commit wrote).
        """
        try:
            with open(self.path, "rb") as f:
                head = f.read(size)
        except FileNotFoundError:
            head = b""
        if len(head) != size or (size and not head.endswith(b"\n")):
            raise IngestError(
                f"{state_path}: key 'drift_bytes' says {size}, but {self.path.name} does not "
                f"have {size} bytes of whole lines; nothing was changed",
                path=state_path,
                field="drift_bytes",
            )
        lines = head.count(b"\n")
        if lines != events:
            raise IngestError(
                f"{state_path}: key 'drift_events' says {events}, but the first {size} bytes of "
                f"{self.path.name} hold {lines} events; nothing was changed",
                path=state_path,
                field="drift_events",
            )

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
