"""Retries with exponential backoff and full jitter, honouring ``Retry-After``.

The policy is a small value object around :mod:`tenacity`: which failures are retried
is decided by the source (it raises :class:`TransientError` for 429, 500, 502, 503,
504, timeouts, dropped connections and malformed bodies); the policy decides how long
to wait and when to give up. ``sleep``, ``now`` and ``rng`` are injectable so that
timing can be tested without sleeping.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import TypeVar

import tenacity

from datafuel._checks import check_int
from datafuel.errors import ConfigError

__all__ = ["RetryPolicy", "TransientError", "parse_retry_after"]

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying (internal: the source turns it into a datafuel error).

    ``retry_after`` is the raw ``Retry-After`` header value when the server sent one;
    ``status`` the HTTP status, when there was an answer.
    """

    def __init__(
        self, reason: str, *, retry_after: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.status = status


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP-date).

    Returns ``None`` when the value is absent or unparseable; a date in the past gives 0.

    Examples
    --------
    >>> parse_retry_after("7", now=0.0)
    7.0
    >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=4.0)
    6.0
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        return None
    return max(0.0, when.timestamp() - now)


@dataclass
class RetryPolicy:
    """How long to wait between attempts and when to give up.

    Parameters
    ----------
    max_attempts
        Attempts per page, the first included (``1`` disables retrying).
    base
        Ceiling of the first backoff in seconds; the ceiling doubles each attempt.
    cap
        Largest backoff ceiling in seconds.
    retry_after_cap
        Largest wait honoured from a ``Retry-After`` header, in seconds.
    rng, sleep, now
        Random source for the jitter, the sleep function and the wall clock (for
        ``Retry-After`` dates); inject fakes to test timing without sleeping.

    Notes
    -----
    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): after the
    n-th failed attempt the wait is ``uniform(0, min(cap, base * 2**(n-1)))``, unless the
    server sent ``Retry-After``, which is then honoured exactly, up to ``retry_after_cap``.

    Examples
    --------
    >>> waits = []
    >>> policy = RetryPolicy(max_attempts=3, base=1.0, sleep=waits.append)
    >>> policy.delay(1, "2")
    2.0
    """

    max_attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    retry_after_cap: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        check_int("max_attempts", self.max_attempts)
        for name in ("base", "cap", "retry_after_cap"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0. Got {value!r} instead.")

    def backoff(self, attempt: int) -> float:
        """Full-jitter wait after the ``attempt``-th failure (1-based)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(attempt - 1, 60))
        return self.rng.uniform(0.0, ceiling)

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Wait after the ``attempt``-th failure, honouring a ``Retry-After`` value."""
        honoured = parse_retry_after(retry_after, now=self.now())
        if honoured is not None:
            return min(honoured, self.retry_after_cap)
        return self.backoff(attempt)

    def call(
        self,
        fn: Callable[[], T],
        *,
        on_retry: Callable[[int, TransientError, float], None] | None = None,
    ) -> T:
        """Run ``fn``, retrying on :class:`TransientError`; re-raise the last one at the end."""

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            return self.delay(state.attempt_number, retry_after)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry is None or state.outcome is None:
                return
            exc = state.outcome.exception()
            delay = state.next_action.sleep if state.next_action is not None else 0.0
            if isinstance(exc, TransientError):
                on_retry(state.attempt_number, exc, float(delay))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(TransientError),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(fn)
