"""A simulated training step, for profiles and benchmarks: ``sleep`` or ``gil``.

A real training loop holds the GIL while it runs Python (the model's forward code,
the optimizer's bookkeeping, kernel launches) and releases it only in the kernels and
copies it waits on. ``time.sleep`` releases it for the whole step, which hides the
contention between the loop and a loader's threads that a process-based loader never
has: a profile or benchmark that only sleeps flatters thread-based loading. ``gil``
spins in pure Python for the step time instead, holding the GIL as such a loop does
(the interpreter still hands it over at its switch interval, as it does for any
Python thread).
"""

from __future__ import annotations

import time

from datafuel.errors import ConfigError

__all__ = ["STEP_KINDS", "simulated_step"]

STEP_KINDS = ("sleep", "gil")


def simulated_step(seconds: float, kind: str = "sleep") -> None:
    """Spend ``seconds`` as a training step would: sleeping, or running Python (``gil``).

    >>> simulated_step(0.001, "gil")
    >>> simulated_step(0.001)
    """
    if kind == "sleep":
        if seconds > 0:
            time.sleep(seconds)
        return
    if kind != "gil":
        raise ConfigError(f"the step kind must be 'sleep' or 'gil'. Got {kind!r} instead.")
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:  # pure Python: holds the GIL between checks
        n += 1
