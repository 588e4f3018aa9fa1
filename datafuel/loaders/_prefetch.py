"""``Prefetcher``: worker threads that produce jobs ``0..n-1`` ahead of a consumer.

Workers take job numbers in order and run ``produce(j)`` while the consumer works on
earlier jobs; at most ``depth`` jobs beyond the one the consumer will take next are
started. Results are handed out strictly in job order. An exception in ``produce`` is
stored and handed to the consumer at that job, never lost. Threads hold no reference
to the object that owns the prefetcher, so dropping the owner (a ``break`` out of a
``for`` loop) lets it :meth:`close` the threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Prefetcher"]

T = TypeVar("T")

#: how long ``close`` waits for a worker in the middle of a job
_JOIN_TIMEOUT_S = 30.0


class Prefetcher(Generic[T]):
    """Run ``produce(j)`` for ``j`` in ``range(n)`` on ``num_workers`` threads.

    Parameters
    ----------
    produce
        Called in a worker thread with the job number.
    n
        Number of jobs.
    num_workers
        Threads; 0 runs each job in the consumer's thread when it is asked for.
    depth
        Jobs allowed to be started beyond the next one the consumer takes.
    name
        Thread name prefix (shows in ``threading.enumerate()``).

    Examples
    --------
    >>> p = Prefetcher(lambda j: j * j, 4, num_workers=2, depth=2)
    >>> [p.get(j)[1] for j in range(4)]
    [0, 1, 4, 9]
    >>> p.close()
    """

    def __init__(
        self,
        produce: Callable[[int], T],
        n: int,
        *,
        num_workers: int,
        depth: int,
        name: str = "datafuel-loader",
    ) -> None:
        self._produce = produce
        self._n = n
        self._depth = max(1, depth)
        lock = threading.Lock()
        # workers wait on one condition, the consumer on another, so that each event
        # wakes exactly the thread that can act on it (no thundering herd on the GIL)
        self._cv = threading.Condition(lock)
        self._done = threading.Condition(lock)
        self._next_job = 0
        self._consumed = 0
        self._results: dict[int, tuple[bool, Any]] = {}
        self._stop = False
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(min(num_workers, n))
        ]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while (
                    not self._stop
                    and self._next_job < self._n
                    and self._next_job >= self._consumed + self._depth
                ):
                    cv.wait()
                if self._stop or self._next_job >= self._n:
                    return
                j = self._next_job
                self._next_job += 1
            try:
                result: tuple[bool, Any] = (True, self._produce(j))
            except Exception as exc:  # handed to the consumer at job j
                result = (False, exc)
            with cv:
                self._results[j] = result
                self._done.notify()

    def get(self, j: int) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, exception)`` of job ``j`` (taken in order)."""
        if not self._threads:
            try:
                return True, self._produce(j)
            except Exception as exc:
                return False, exc
        with self._done:
            while j not in self._results:
                if self._stop:
                    raise RuntimeError("the prefetcher was closed")
                self._done.wait()
            result = self._results.pop(j)
            self._consumed = j + 1
            self._cv.notify()  # one more job may start: wake one worker
        return result

    def close(self) -> None:
        """Stop the workers and wait for them (a job in progress is finished first)."""
        with self._cv:
            self._stop = True
            self._results.clear()
            self._cv.notify_all()
            self._done.notify_all()
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(_JOIN_TIMEOUT_S)

    @property
    def alive(self) -> int:
        """Number of worker threads still running."""
        return sum(t.is_alive() for t in self._threads)
