"""Kill an ingest process at random moments (the kill tests of every ingest mode share this)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path


def kill_at_random_moments(
    cmd: list[str], state_file: Path, rng: random.Random, *, attempts: int, max_delay: float
) -> int:
    """Run ``cmd`` up to ``attempts`` times, each killed (SIGKILL) at a random moment.

    Each run is let start ingesting (its first write of ``state_file``, not the import),
    then killed after ``U(0, max_delay)`` seconds if it is still running; a run that
    finishes first ends the loop. Returns how many kills interrupted a run.
    """

    def stamp() -> int | None:
        return state_file.stat().st_mtime_ns if state_file.exists() else None

    kills = 0
    for _ in range(attempts):
        before = stamp()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while stamp() == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, max_delay))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
        finally:
            proc.wait(timeout=30)
        if proc.returncode == 0:
            break
    return kills
