"""``Prefetcher``: worker threads that produce jobs ``0..n-1`` ahead of a consumer.

Workers take job numbers in order and run ``produce(j)`` while the consumer works on
earlier jobs; at most ``depth`` jobs beyond the one the consumer will take next are
started. Results are handed out strictly in job order. An exception in ``produce`` is
stored and handed to the consumer at that job, never lost. Threads hold no reference
to the object that owns the prefetcher, so dropping the owner (a ``break`` out of a
``for`` loop) lets it :meth:`close` the threads at once.

Every wait is bounded: :meth:`get` takes a ``timeout`` (and notices workers that
died), :meth:`close` waits at most ``timeout`` seconds for all workers together and
warns naming the ones still running and where, and workers re-check for a stop at
least every :data:`_POLL_S`. Prefetchers still running at interpreter exit are closed
by an ``atexit`` hook, before the runtime (and libraries' C++ threads) tear down.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["SWITCH_INTERVAL_S", "Prefetcher"]

T = TypeVar("T")

#: how long ``close`` waits, in all, for workers in the middle of a job
_JOIN_TIMEOUT_S = 30.0
#: the longest any thread sleeps without re-checking for a stop or a dead worker
_POLL_S = 1.0

_live: weakref.WeakSet[Prefetcher[Any]] = weakref.WeakSet()

#: the interpreter's GIL switch interval while worker threads run (see _SwitchInterval)
SWITCH_INTERVAL_S = 0.0005


class _SwitchInterval:
    """Lower the interpreter's GIL switch interval while any prefetcher's threads run.

    Why: a thread waiting for the GIL asks the holder to drop it only after a whole
    interval (5 ms by default) in which the GIL did not change hands. A training loop
    that frees a tensor releases and re-takes the GIL for an instant (torch's tensor
    deallocation), which counts as a change, so with steps shorter than the interval
    the workers never get a forced turn: they run only when the loop blocks for a batch,
    and the loop then waits while they catch up (measured: starvation 5% beside a
    GIL-holding 2 ms step against 0.5% beside a sleeping one). With a 0.5 ms interval
    the workers get their turn between the loop's deallocations.

    Process-wide, so reference-counted: the first prefetcher lowers it (never raises
    it: a smaller value set by the program is kept), the last to close puts back the
    value it found, unless the program changed it meanwhile.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: float | None = None
        self._set: float | None = None

    def acquire(self, seconds: float | None) -> bool:
        """Count one user; lower the interval to ``seconds`` if it is above. False: no user."""
        if seconds is None:
            return False
        with self._lock:
            if self._users == 0:
                current = sys.getswitchinterval()
                self._saved, self._set = current, None
                if seconds < current:
                    sys.setswitchinterval(seconds)
                    self._set = sys.getswitchinterval()
            self._users += 1
        return True

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._set is not None and self._saved is not None:
                if sys.getswitchinterval() == self._set:  # not changed by the program since
                    sys.setswitchinterval(self._saved)
                self._saved = self._set = None


_switch = _SwitchInterval()


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
    switch_interval
        While the threads run, lower the interpreter's GIL switch interval to this many
        seconds (see :class:`_SwitchInterval`; None: leave it alone). Put back at
        :meth:`close`.

    Examples
    --------
    >>> p = Prefetcher(lambda j: j * j, 4, num_workers=2, depth=2)
    >>> [p.get(j)[1] for j in range(4)]
    [0, 1, 4, 9]
    >>> p.close()  # the threads still running after the close deadline: none
    []
    """

    def __init__(
        self,
        produce: Callable[[int], T],
        n: int,
        *,
        num_workers: int,
        depth: int,
        name: str = "datafuel-loader",
        switch_interval: float | None = None,
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
        self._switching = False
        self._switch_lock = threading.Lock()  # not the condition's: close may run in a worker
        if self._threads:
            _live.add(self)
            self._switching = _switch.acquire(switch_interval)
        for t in self._threads:
            t.start()

    @property
    def threads(self) -> list[threading.Thread]:
        """The worker threads (started; none with ``num_workers=0``)."""
        return list(self._threads)

    def _work(self) -> None:
        cv = self._cv
        while True:
            with cv:
                while (
                    not self._stop
                    and self._next_job < self._n
                    and self._next_job >= self._consumed + self._depth
                ):
                    cv.wait(_POLL_S)
                if self._stop or self._next_job >= self._n:
                    return
                j = self._next_job
                self._next_job += 1
            try:
                result: tuple[bool, Any] = (True, self._produce(j))
            except BaseException as exc:  # handed to the consumer at job j, even SystemExit:
                result = (False, exc)  # a worker that died silently would leave it waiting
            with cv:
                self._results[j] = result
                self._done.notify()
            del result

    def get(self, j: int, timeout: float | None = None) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, exception)`` of job ``j`` (taken in order).

        Raises ``TimeoutError`` when job ``j`` is not done ``timeout`` seconds after the
        call (``None``: wait as long as it takes), and ``RuntimeError`` when the
        prefetcher is closed or every worker has exited without producing it.
        """
        if not self._threads:
            try:
                return True, self._produce(j)
            except Exception as exc:
                return False, exc
        with self._done:
            if j not in self._results:  # the hot path (a result ready) skips all of this
                self._wait_for(j, timeout)
            result = self._results.pop(j)
            self._consumed = j + 1
            self._cv.notify()  # one more job may start: wake one worker
        return result

    def _wait_for(self, j: int, timeout: float | None) -> None:
        """Sleep (holding nothing) until job ``j`` is done; called with the lock held."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while j not in self._results:
            if self._stop:
                raise RuntimeError("the prefetcher was closed")
            if not any(t.is_alive() for t in self._threads):
                raise RuntimeError(f"every worker thread exited before job {j} was produced")
            if deadline is None:
                self._done.wait(_POLL_S)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {j} not done after {timeout} s")
            self._done.wait(min(left, _POLL_S))

    def close(self, timeout: float | None = None) -> list[str]:
        """Stop the workers and wait for them (a job in progress is finished first).

        Waits at most ``timeout`` seconds in all (default :data:`_JOIN_TIMEOUT_S`); a
        worker still running then is named in a ``RuntimeWarning`` with the function
        it is in. Returns the names of those workers.
        """
        me = threading.current_thread()
        if me in self._threads:
            # called from one of our own workers (a finaliser run by the garbage
            # collector there, perhaps while that worker holds the lock): only flag the
            # stop; every worker sees it within _POLL_S
            self._stop = True
            self._release_switch()
            # still running (this one included): the caller must not reuse their buffers
            return [t.name for t in self._threads if t.is_alive()]
        with self._cv:
            self._stop = True
            self._results.clear()
            self._cv.notify_all()
            self._done.notify_all()
        self._release_switch()
        _live.discard(self)
        limit = _JOIN_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + limit
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t for t in self._threads if t.is_alive()]
        if stuck:
            where = "; ".join(f"{t.name} in {_where(t)}" for t in stuck)
            warnings.warn(
                f"datafuel loader: {len(stuck)} worker thread(s) did not stop within "
                f"{limit:g} s of close, stuck in a job ({where}). They are daemon threads "
                "and end when that job returns.",
                RuntimeWarning,
                stacklevel=2,
            )
        return [t.name for t in stuck]

    def _release_switch(self) -> None:
        """Give back this prefetcher's lowering of the switch interval (once)."""
        with self._switch_lock:
            switching, self._switching = self._switching, False
        if switching:
            _switch.release()

    def busy(self) -> dict[str, str]:
        """``{thread name: where it is}`` for each worker inside a job (not idle, not done)."""
        out = {}
        for t in self._threads:
            place = _where(t)
            if t.is_alive() and place and not place.startswith("Prefetcher._work "):
                out[t.name] = place
        return out

    @property
    def alive(self) -> int:
        """Number of worker threads still running."""
        return sum(t.is_alive() for t in self._threads)


_HERE = os.path.abspath(__file__)
_THREADING = os.path.abspath(threading.__file__)


def _where(thread: threading.Thread) -> str:
    """The innermost frame of ``thread`` outside ``threading.py``: ``func (file:line)``."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return ""
    for fs in reversed(traceback.extract_stack(frame)):
        if os.path.abspath(fs.filename) != _THREADING:
            qual = "Prefetcher._work" if (fs.filename == _HERE and fs.name == "_work") else fs.name
            return f"{qual} ({fs.filename}:{fs.lineno})"
    return ""


@atexit.register
def _close_all() -> None:
    """Stop prefetchers left running (an iterator kept alive to the end of the program)."""
    for p in list(_live):
        p.close(timeout=_POLL_S)
