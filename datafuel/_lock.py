"""One writer per output directory: an exclusive ``flock`` on ``DIR/.datafuel.lock``.

The kernel releases a ``flock`` when its holder exits or is killed, so no stale lock
outlives a crash and a rerun after ``kill -9`` starts at once. The lock file holds the
holder's pid (for the error a second writer gets); it is left in place (removing it
would race with a second writer that already opened it).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datafuel.errors import LockedError, OutputError

__all__ = ["LOCK_NAME", "locked", "make_output_dir"]

LOCK_NAME = ".datafuel.lock"


def make_output_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` (and its parents); an OS refusal is one :class:`OutputError`.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "file"
    >>> _ = f.write_text("x")
    >>> make_output_dir(f / "out")
    Traceback (most recent call last):
    ...
    datafuel.errors.OutputError: cannot create the output directory .../file/out: not a directory
    """
    root = Path(directory)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""
        raise OutputError(
            f"cannot create the output directory {root}: {reason}{where}",
            path=root,
            errno=exc.errno,
        ) from exc
    return root


@contextmanager
def locked(directory: str | os.PathLike[str], what: str = "write") -> Iterator[Path]:
    """Hold the exclusive lock of ``directory`` (created if needed) for the ``with`` body.

    A second holder, in this process or another, gets :class:`~datafuel.errors.LockedError`
    at once, naming the directory and the pid that holds it.

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with locked(d):
    ...     try:
    ...         with locked(d):
    ...             pass
    ...     except LockedError as e:
    ...         print("refused:", "is in use by process" in str(e))
    refused: True
    """
    root = make_output_dir(directory)
    path = root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise OutputError(
            f"cannot write in the output directory {root}: {(exc.strerror or str(exc)).lower()}",
            path=root,
            errno=exc.errno,
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise LockedError(
                f"{root}: is in use by process {holder} (another datafuel {what} into the same "
                "directory); wait for it to finish or choose another directory.",
                path=root,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield root
    finally:
        os.close(fd)  # closing the descriptor releases the lock
