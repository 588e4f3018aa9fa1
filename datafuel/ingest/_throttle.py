"""One throttle for every worker: AIMD concurrency, a shared pause, the shared rate limit.

Concurrent workers (:mod:`._concurrent`) ask :meth:`Throttle.enter` for a slot before
each page and give it back with :meth:`Throttle.leave`. The number of slots is an
adaptive window (AIMD, as TCP's congestion window): it starts at the ``--concurrency``
given, grows by ``1 / window`` per page that succeeds (about one slot per round of
pages) up to that ceiling, and halves (never below 1) when the server throttles —
a 429, or a 503 with ``Retry-After``. A throttle also pauses *every* worker until the
server's ``Retry-After`` has passed, not only the one that was told: a 429 slows the
whole run. :meth:`acquire` (called before each attempt, retries included) waits for
that pause and then for the shared client-side :class:`~datafuel.ingest.RateLimiter`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ._ratelimit import RateLimiter

__all__ = ["Stopped", "Throttle"]


class Stopped(Exception):
    """The run is over (internal): a worker waiting in the throttle gives up its page."""


class Throttle:
    """Shared by the workers of one run.

    Parameters
    ----------
    concurrency
        Ceiling (and start) of the adaptive window: pages in flight at most.
    rate_limiter
        The run's ``--rate`` limit, shared across workers; ``None`` for none.
    clock
        A monotonic clock (inject a fake in tests).

    Examples
    --------
    >>> t = Throttle(8)
    >>> t.throttled(0.0); t.window
    4.0
    >>> t.succeeded(); round(t.window, 2)
    4.25
    """

    def __init__(
        self,
        concurrency: int,
        rate_limiter: RateLimiter | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = concurrency
        self.window = float(concurrency)
        self.rate_limiter = rate_limiter
        self.in_flight = 0
        self.cuts = 0
        self.min_window = float(concurrency)
        self._clock = clock
        self._pause_until = 0.0
        self._last_cut = -1e18
        self._stop = threading.Event()
        self._cv = threading.Condition()

    # slots -----------------------------------------------------------------------------
    def enter(self) -> None:
        """Block until a slot of the window is free; raises :class:`Stopped` after :meth:`stop`."""
        with self._cv:
            while self.in_flight >= max(1, int(self.window)):
                if self._stop.is_set():
                    raise Stopped
                self._cv.wait(0.05)
            if self._stop.is_set():
                raise Stopped
            self.in_flight += 1

    def leave(self) -> None:
        with self._cv:
            self.in_flight -= 1
            self._cv.notify_all()

    def succeeded(self) -> None:
        """Additive increase: about one more slot per window of pages that succeed."""
        with self._cv:
            self.window = min(float(self.ceiling), self.window + 1.0 / self.window)
            self._cv.notify_all()

    def throttled(self, delay: float) -> None:
        """Multiplicative decrease (once per throttling episode) and a pause of ``delay`` s."""
        with self._cv:
            now = self._clock()
            self._pause_until = max(self._pause_until, now + delay)
            if now - self._last_cut >= max(0.05, delay):  # one cut per episode, not per reply
                self.window = max(1.0, self.window / 2.0)
                self.min_window = min(self.min_window, self.window)
                self._last_cut = now
                self.cuts += 1

    # before each attempt ---------------------------------------------------------------
    def acquire(self) -> float:
        """Wait for the shared pause, then for the shared rate limit; the seconds waited."""
        waited = 0.0
        while True:
            with self._cv:
                left = self._pause_until - self._clock()
            if left <= 0:
                break
            if self._stop.wait(left):
                raise Stopped
            waited += left
        if self.rate_limiter is not None:
            waited += self.rate_limiter.acquire()
        return waited

    def sleep(self, seconds: float) -> None:
        """A retry backoff that ends early (raising :class:`Stopped`) when the run is over."""
        if self._stop.wait(seconds):
            raise Stopped

    def stop(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()
