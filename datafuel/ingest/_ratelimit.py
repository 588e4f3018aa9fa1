"""A client-side rate limit: at most ``rate`` requests per second, evenly spaced."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from datafuel.errors import ConfigError

__all__ = ["RateLimiter"]


class RateLimiter:
    """Space requests at least ``1 / rate`` seconds apart (every attempt counts).

    Parameters
    ----------
    rate
        Requests per second, > 0.
    clock, sleep
        A monotonic clock and a sleep function; inject fakes to test without sleeping.

    Examples
    --------
    >>> t = [0.0]
    >>> limiter = RateLimiter(4.0, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
    >>> [limiter.acquire() for _ in range(3)]
    [0.0, 0.25, 0.25]
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not math.isfinite(rate)
            or rate <= 0
        ):
            raise ConfigError(
                f"rate must be a finite number of requests per second > 0. Got {rate!r} instead."
            )
        self.rate = float(rate)
        self._interval = 1.0 / self.rate
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until the next request may go; return the seconds waited."""
        with self._lock:
            now = self._clock()
            if self._next is None or self._next <= now:
                self._next = now + self._interval
                return 0.0
            wait = self._next - now
            self._next += self._interval
        self._sleep(wait)
        return wait
