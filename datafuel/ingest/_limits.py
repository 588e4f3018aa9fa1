"""What one response may cost: decompressed bytes, JSON nesting depth, wall-clock time.

A hostile or broken server can send a gzip bomb (a megabyte that inflates to a
gigabyte), JSON nested ten thousand deep (which would blow Python's stack), or trickle
one byte a second forever (each read is quick, so a per-read timeout never fires).
:class:`ResponseLimits` bounds all three while the body streams in:

- ``max_bytes``: the body is decompressed chunk by chunk and refused as soon as it
  grows past the limit (memory stays about ``max_bytes`` plus one inflated chunk);
- ``max_depth``: nesting deeper than this is refused before the records are touched;
- ``deadline``: seconds for the whole request (redirects and the slowest trickle
  included); each read also waits at most the time that is left.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # msgspec's JSON decoder: ~2.5x the standard library's on API pages (see parse)
    import msgspec

    _fast_decode: Any = msgspec.json.Decoder().decode
    _FAST_REFUSED: tuple[type[BaseException], ...] = (msgspec.MsgspecError, RecursionError)
except ImportError:  # pragma: no cover - msgspec is a dependency
    _fast_decode, _FAST_REFUSED = None, ()

from datafuel._checks import check_int
from datafuel.errors import ConfigError, IngestError

__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_DEPTH",
    "MAX_DEPTH_LIMIT",
    "DeadlineExceeded",
    "ResponseLimits",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_DEPTH = 200
#: the largest ``max_depth`` accepted (deeper JSON would exhaust Python's stack)
MAX_DEPTH_LIMIT = 500
DEFAULT_DEADLINE = 300.0

_BLOCK = 1 << 20
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("["), ord("{")]] = 1
_OPEN[[ord("]"), ord("}")]] = -1
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class DeadlineExceeded(Exception):
    """The request ran past its deadline (internal: the source retries it like a timeout)."""


@dataclass(frozen=True)
class ResponseLimits:
    """Bounds on one response.

    Parameters
    ----------
    max_bytes
        Largest body, in bytes *after* decompression.
    max_depth
        Deepest JSON nesting (``[[1]]`` is 2), at most :data:`MAX_DEPTH_LIMIT`.
    deadline
        Seconds for a whole request, from the first byte sent to the last received.

    Examples
    --------
    >>> limits = ResponseLimits(max_bytes=1024, max_depth=3)
    >>> limits.parse(b'{"a": [1, 2]}', where="page 0")
    {'a': [1, 2]}
    >>> limits.parse(b'[[[[1]]]]', where="page 0")
    Traceback (most recent call last):
    ...
    datafuel.errors.IngestError: page 0: the JSON body is nested deeper than --max-depth 3; ...
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH
    deadline: float = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        check_int("max_response_bytes", self.max_bytes)
        check_int("max_depth", self.max_depth, high=MAX_DEPTH_LIMIT)
        d = self.deadline
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or d <= 0:
            raise ConfigError(f"request_deadline must be a finite number > 0. Got {d!r} instead.")

    def read(
        self, chunks: Iterable[bytes], *, until: float, where: str, page: int | None = None
    ) -> bytes:
        """Join decompressed ``chunks``, refusing more than ``max_bytes`` or a read past ``until``.

        ``until`` is a :func:`time.monotonic` instant.
        """
        buf = bytearray()
        for chunk in chunks:
            buf += chunk
            if len(buf) > self.max_bytes:
                raise IngestError(
                    f"{where}: the response body is larger than --max-response-bytes "
                    f"{self.max_bytes} once decompressed; stopped reading it (raise the limit if "
                    "the API really sends pages this large)",
                    page=page,
                )
            if time.monotonic() > until:
                raise DeadlineExceeded(
                    f"still receiving the body after the --request-deadline of {self.deadline:g} s"
                )
        return bytes(buf)

    def check_length(
        self, declared: str | None, encoded: bool, *, where: str, page: int | None = None
    ) -> None:
        """Refuse at once a body whose ``Content-Length`` (not compressed) is over the limit."""
        if declared is None or encoded:
            return
        try:
            size = int(declared)
        except ValueError:
            return
        if size > self.max_bytes:
            raise IngestError(
                f"{where}: the server announces a {size}-byte body, larger than "
                f"--max-response-bytes {self.max_bytes}; not reading it",
                page=page,
            )

    def parse(self, body: bytes, *, where: str, page: int | None = None) -> Any:
        """``json.loads(body)``, refusing nesting deeper than ``max_depth``.

        Raises ``ValueError`` for a body that is not JSON (the source retries those).
        """
        deep = (
            _depth_bound(body, self.max_depth) > self.max_depth
        )  # brackets in strings count: an upper bound
        if _fast_decode is not None and not deep:
            # msgspec gives what json.loads gives for every body it accepts, big ints
            # included (orjson turns ints beyond 64 bits into floats, so it is not used).
            # It refuses what json.loads accepts beyond strict JSON (NaN, 1e400 as inf,
            # UTF-16 bodies, lone surrogates): those bodies take json.loads, whose rules
            # stay the rules (tests/ingest/test_json_decode.py holds the two equal).
            try:
                return _fast_decode(body)
            except _FAST_REFUSED:
                pass
        try:
            value = json.loads(body)
        except RecursionError:
            raise self._too_deep(where, page) from None
        if deep and _depth(value, self.max_depth) > self.max_depth:
            raise self._too_deep(where, page)
        return value

    def _too_deep(self, where: str, page: int | None) -> IngestError:
        return IngestError(
            f"{where}: the JSON body is nested deeper than --max-depth {self.max_depth}; "
            "refusing it (raise the limit if the records really nest this deep)",
            page=page,
        )


def _depth_bound(body: bytes, enough: int) -> int:
    """An upper bound of ``body``'s nesting (brackets inside strings count too).

    Cheap: the brackets are picked out at C speed (``bytes.translate``); their count
    is the bound when it is at most ``enough``, else their running nesting (numpy).
    """
    brackets = body.translate(None, _NOT_BRACKETS)
    if len(brackets) <= enough:
        return len(brackets)
    a = np.frombuffer(brackets, dtype=np.uint8)
    level, best = 0, 0
    for start in range(0, len(a), _BLOCK):
        run = np.cumsum(_OPEN[a[start : start + _BLOCK]], dtype=np.int64)
        best = max(best, level + int(run.max()))
        level += int(run[-1])
    return best


def _depth(value: Any, stop: int) -> int:
    """The nesting depth of a parsed JSON value (``[]`` is 1), or a number > ``stop``."""
    best = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        obj, d = stack.pop()
        if isinstance(obj, dict):
            children: Iterable[Any] = obj.values()
        elif isinstance(obj, list):
            children = obj
        else:
            continue
        if d > best:
            best = d
            if best > stop:
                return best
        stack.extend((c, d + 1) for c in children if isinstance(c, (dict, list)))
    return best
