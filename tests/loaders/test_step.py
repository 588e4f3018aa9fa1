"""The simulated training step of profiles and benchmarks: ``sleep`` releases the GIL,
``gil`` holds it as a training loop's Python does."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from datafuel import build
from datafuel.errors import ConfigError
from datafuel.loaders import write_shards
from datafuel.loaders._step import simulated_step


def _counted_beside(kind: str, seconds: float) -> tuple[int, float]:
    """How far a pure-Python counter thread gets while the step runs, and the step's time."""
    stop, count = threading.Event(), [0]

    def counter() -> None:
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=counter)
    t.start()
    time.sleep(0.02)  # the counter is running
    start = count[0]
    t0 = time.perf_counter()
    simulated_step(seconds, kind)
    took = time.perf_counter() - t0
    got = count[0] - start
    stop.set()
    t.join()
    return got, took


def test_a_gil_step_holds_the_gil_and_a_sleep_does_not() -> None:
    slept, t_sleep = _counted_beside("sleep", 0.2)
    spun, t_gil = _counted_beside("gil", 0.2)
    assert 0.19 < t_sleep < 0.4 and 0.19 < t_gil < 0.4  # both take the step time
    # beside a sleep the counter has the GIL to itself; beside the Python step it shares it
    assert spun < 0.75 * slept, (spun, slept)


def test_bad_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match="'sleep' or 'gil'"):
        simulated_step(0.001, "busy")


@pytest.mark.parametrize("kind", ["sleep", "gil"])
def test_profile_runs_either_step_and_says_which(tmp_path, kind: str) -> None:
    write_shards(tmp_path, x=np.zeros((256, 4), np.float32))
    r = build.profile(tmp_path, batch_size=32, step_ms=2, step_kind=kind)
    assert r["step_kind"] == kind and r["batches"] == 8
    assert 0.0 <= r["starvation"] <= 1.0
    assert r["elapsed_s"] >= 8 * 0.002
    with pytest.raises(ConfigError, match="--step-kind"):
        build.profile(tmp_path, batch_size=32, step_ms=2, step_kind="spin")
