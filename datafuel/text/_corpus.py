"""Streaming document readers: ``.txt``, ``.jsonl``, Parquet and Arrow files, HF datasets.

Policy (stated once, applied everywhere):

* **Documents.** A ``.jsonl`` line is one document (its ``text_field``). A ``.txt`` file
  is one document (``txt_mode="file"``, the default) or one document per block of
  lines separated by blank lines (``txt_mode="paragraph"``). Documents that are empty
  after stripping whitespace are skipped and counted (``stats.empty``).
* **Invalid UTF-8.** Files are read as bytes and decoded with ``errors="replace"``:
  each invalid byte sequence becomes U+FFFD. A leading UTF-8 byte-order mark is
  dropped. Lone surrogates (only reachable through ``\\ud800``-style JSON escapes)
  are also replaced by U+FFFD. Every replacement is counted (``stats.replaced``);
  nothing crashes and nothing is dropped silently.
* **Tables.** A row of a Parquet (``.parquet``) or Arrow IPC / Feather v2 (``.arrow``,
  ``.feather``) file is one document, its text in the string column ``text_field``;
  a directory written by Hugging Face ``datasets``' ``save_to_disk`` (it holds
  ``state.json`` and ``dataset_info.json``) is read through ``datasets.load_from_disk``
  from local files only (the ``hf`` extra). They stream one record batch at a time. A
  missing or non-string column and a null value are refused, naming the file, the row
  (0-based) and the field; see :mod:`datafuel.text._tables`.
* **Directories** are walked recursively in sorted order for ``*.txt``, ``*.jsonl``,
  ``*.parquet``, ``*.arrow`` and ``*.feather``; other files are counted in
  ``stats.ignored_files`` (never read). A ``save_to_disk`` dataset directory, given or
  met in the walk, is read as that dataset (through ``datasets``) instead; a
  ``DatasetDict`` directory given as an input is refused (give one split's directory).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from datafuel.errors import ConfigError, InputDataError

from . import _tables
from ._tables import ARROW_SUFFIXES, PARQUET_SUFFIXES
from ._utf8 import decode_utf8 as _decode

__all__ = ["Corpus", "CorpusStats", "clean_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")
_SUFFIXES = (".txt", ".jsonl", *PARQUET_SUFFIXES, *ARROW_SUFFIXES)
TxtMode = Literal["file", "paragraph"]
_JSON_TYPES: dict[type, str] = {
    type(None): "null",
    bool: "boolean",
    int: "number",
    float: "number",
    list: "array",
    dict: "object",
}


def clean_text(text: str) -> tuple[str, int]:
    """Apply the text policy to a ``str``: lone surrogates become U+FFFD.

    Returns the cleaned text and how many characters were replaced.

    >>> clean_text("ok\\ud800!")
    ('ok\\ufffd!', 1)
    """
    if text.isascii():
        return text, 0
    n = 0

    def repl(_: re.Match[str]) -> str:
        nonlocal n
        n += 1
        return "\ufffd"

    out = _SURROGATE.sub(repl, text)
    return out, n


def _dict_splits(d: Path) -> list[str]:
    try:
        names = json.loads((d / "dataset_dict.json").read_text()).get("splits", [])
    except (OSError, ValueError, AttributeError):
        names = []
    return [str(d / str(n)) for n in names] or [str(d / "<split>")]


def _dir_inputs(p: Path) -> tuple[list[Path], int]:
    """What a directory input reads (a dataset directory, or its files walked), and files ignored."""
    if _tables.is_hf_dataset(p):
        return [p], 0  # read through datasets.load_from_disk
    if (p / "dataset_dict.json").is_file():
        raise ConfigError(
            f"{p}: a Hugging Face DatasetDict (dataset_dict.json); give one of its "
            f"splits' directories ({', '.join(_dict_splits(p))}) instead.",
            path=p,
        )
    files: list[Path] = []
    ignored = 0
    for root, dirs, names in os.walk(p):
        dirs.sort()
        if _tables.is_hf_dataset(Path(root)):  # a saved dataset inside: read as a dataset
            files.append(Path(root))  # (not its cache-*.arrow files beside the data)
            dirs.clear()
            continue
        for name in sorted(names):
            f = Path(root) / name
            if f.suffix.lower() in _SUFFIXES:
                files.append(f)
            else:
                ignored += 1
    return files, ignored


def _parse_line(line: str, f: Path, lineno: int) -> Any:
    """One ``.jsonl`` line as JSON; any way it can fail is an :class:`InputDataError`."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        why = f"{exc.msg} at column {exc.colno}"
        cause: BaseException = exc
    except RecursionError as exc:  # arrays or objects nested thousands deep
        why, cause = "nested too deeply to read", exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        why, cause = str(exc).split(";")[0][:200], exc
    raise InputDataError(f"{f}:{lineno}: not valid JSON ({why}).", path=f, row=lineno) from cause


@dataclass
class CorpusStats:
    """Counts from the last pass over a :class:`Corpus`."""

    files: int = 0
    documents: int = 0
    bytes: int = 0
    replaced: int = 0
    empty: int = 0
    ignored_files: int = 0

    def to_json(self) -> dict[str, int]:
        return asdict(self)


class Corpus:
    """A re-iterable stream of documents (``str``) from files and directories.

    Iterating reads the inputs again from disk, one file and one line or block at a
    time, so a corpus of any size is never held in memory. See the module docstring
    for what a document is and how invalid UTF-8 is handled.

    Parameters
    ----------
    inputs
        Files (``.txt``, ``.jsonl``, ``.parquet``, ``.arrow``, ``.feather``),
        directories of them, and ``save_to_disk`` dataset directories.
    text_field
        The field of each ``.jsonl`` object, or the column of a table, that holds the
        document text.
    txt_mode
        ``"file"``: a ``.txt`` file is one document; ``"paragraph"``: one document per
        blank-line-separated block.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text('{"text": "one"}\\n{"text": "two"}\\n')
    >>> list(Corpus([d]))
    ['one', 'two']
    """

    def __init__(
        self,
        inputs: Sequence[str | os.PathLike[str]],
        *,
        text_field: str = "text",
        txt_mode: TxtMode = "file",
    ) -> None:
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        if not inputs:
            raise ConfigError("Corpus needs at least one input file or directory.")
        if txt_mode not in ("file", "paragraph"):
            raise ConfigError(f"txt_mode must be 'file' or 'paragraph'. Got {txt_mode!r} instead.")
        self.inputs = [Path(p) for p in inputs]
        self.text_field = text_field
        self.txt_mode: TxtMode = txt_mode
        self.stats = CorpusStats()
        self.files = self._resolve()

    def _resolve(self) -> list[Path]:
        files: list[Path] = []
        ignored = 0
        for p in self.inputs:
            if p.is_dir():
                found, skipped = _dir_inputs(p)
                files += found
                ignored += skipped
            elif p.is_file():
                if p.suffix.lower() not in _SUFFIXES:
                    raise ConfigError(
                        f"{p}: unsupported input type {p.suffix or '(no suffix)'!r}; "
                        "give .txt, .jsonl, .parquet, .arrow or .feather files, directories "
                        "of them, or a save_to_disk dataset directory.",
                        path=p,
                    )
                files.append(p)
            elif p.exists():
                raise InputDataError(f"{p}: not a regular file or directory.", path=p)
            else:
                raise InputDataError(f"{p}: input not found.", path=p)
        self._ignored = ignored
        return files

    def describe(self) -> dict[str, Any]:
        """JSON-able description of the inputs (for provenance)."""
        return {
            "inputs": [str(p) for p in self.inputs],
            "files": len(self.files),
            "text_field": self.text_field,
            "txt_mode": self.txt_mode,
        }

    def file_stats(self) -> list[list[Any]]:
        """``[path, size, mtime_ns]`` of every file read (a dataset directory: each of its files)."""
        out: list[list[Any]] = []
        for f in self.files:
            for g in _tables.hf_dataset_files(f) if f.is_dir() else [f]:
                st = g.stat()
                out.append([str(g), st.st_size, st.st_mtime_ns])
        return out

    def __iter__(self) -> Iterator[str]:
        self.stats = CorpusStats(ignored_files=self._ignored)
        for f in self.files:
            self.stats.files += 1
            suffix = f.suffix.lower()
            if f.is_dir():
                yield from self._table(f, _tables.hf_dataset_batches(f, self.text_field))
            elif suffix in PARQUET_SUFFIXES:
                yield from self._table(f, _tables.parquet_batches(f, self.text_field))
            elif suffix in ARROW_SUFFIXES:
                yield from self._table(f, _tables.arrow_batches(f, self.text_field))
            elif suffix == ".jsonl":
                yield from self._jsonl(f)
            elif self.txt_mode == "file":
                yield from self._txt_file(f)
            else:
                yield from self._txt_paragraphs(f)

    def _emit(self, text: str) -> Iterator[str]:
        text, n = clean_text(text)
        self.stats.replaced += n
        if not text or text.isspace():
            self.stats.empty += 1
            return
        self.stats.documents += 1
        yield text

    def _table(self, f: Path, batches: Iterator[Any]) -> Iterator[str]:
        row = 0
        for column in batches:
            texts = _tables.table_texts(column, f, self.text_field, row, self.stats)
            row += len(texts)
            for text in texts:
                yield from self._emit(text)

    def _open(self, f: Path) -> Any:
        try:
            return open(f, "rb")
        except OSError as exc:
            raise InputDataError(f"{f}: cannot open ({exc.strerror}).", path=f) from exc

    def _txt_file(self, f: Path) -> Iterator[str]:
        with self._open(f) as fh:
            raw = fh.read()
        self.stats.bytes += len(raw)
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        text, n = _decode(raw)
        self.stats.replaced += n
        yield from self._emit(text)

    def _txt_paragraphs(self, f: Path) -> Iterator[str]:
        block: list[str] = []
        with self._open(f) as fh:
            for i, raw in enumerate(fh):
                self.stats.bytes += len(raw)
                if i == 0 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                line, n = _decode(raw)
                self.stats.replaced += n
                if line.strip():
                    block.append(line)
                elif block:
                    yield from self._emit("".join(block).rstrip("\r\n"))
                    block = []
        if block:
            yield from self._emit("".join(block).rstrip("\r\n"))

    def _jsonl(self, f: Path) -> Iterator[str]:
        field = self.text_field
        with self._open(f) as fh:
            for lineno, raw in enumerate(fh, start=1):
                self.stats.bytes += len(raw)
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if not raw.strip():
                    continue
                line, n = _decode(raw)
                self.stats.replaced += n
                obj = _parse_line(line, f, lineno)
                if not isinstance(obj, dict):
                    raise InputDataError(
                        f"{f}:{lineno}: expected a JSON object with a {field!r} field, "
                        f"got a JSON {type(obj).__name__}.",
                        path=f,
                        row=lineno,
                        field=field,
                    )
                if field not in obj:
                    raise InputDataError(
                        f"{f}:{lineno}: no {field!r} field (fields: {sorted(obj)[:10]}); "
                        "pick another with --text-field.",
                        path=f,
                        row=lineno,
                        field=field,
                    )
                text = obj[field]
                if not isinstance(text, str):
                    raise InputDataError(
                        f"{f}:{lineno}: field {field!r} must be a string, "
                        f"got a JSON {_JSON_TYPES.get(type(text), type(text).__name__)}.",
                        path=f,
                        row=lineno,
                        field=field,
                    )
                yield from self._emit(text)
