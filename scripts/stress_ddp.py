"""Run the 2-process gloo loader test (tests/loaders/test_distributed.py) N times.

Not part of ``.ci/run``: it hunts a rare hang or teardown crash by repetition.

Each run starts both ranks with ``PYTHONFAULTHANDLER=1``; a rank still running after
``--timeout`` seconds gets SIGABRT, so faulthandler prints every thread's Python
stack before it dies. A run fails when a rank hangs, exits non-zero, prints
``terminate called`` (a C++ thread torn down while joinable), or the ranks' batches
are not disjoint and equal. Failed runs' stderr (with the stacks) is printed and
kept under ``--keep``.

    python3 scripts/stress_ddp.py               # 50 runs
    python3 scripts/stress_ddp.py -n 200 --timeout 60 --keep /tmp/ddp-failures
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "loaders"))

from loader_helpers import write_rows  # noqa: E402
from test_distributed import SCRIPT, launch_ranks  # noqa: E402


def run_once(shards: Path, script: Path, out: Path, timeout: float) -> tuple[str, list[str]]:
    """``("ok" | "hang" | "fail", [stderr of rank 0, stderr of rank 1])``."""
    out.unlink(missing_ok=True)
    # PYTHONFAULTHANDLER: SIGABRT below (or a real abort) dumps the stacks
    procs = launch_ranks(script, shards, out, {"PYTHONFAULTHANDLER": "1"})
    deadline = time.monotonic() + timeout
    hung = False
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            hung = True
            p.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
            try:
                _, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                _, err = p.communicate()
        errs.append(err)
    if hung:
        return "hang", errs
    if any(p.returncode != 0 for p in procs) or any("terminate called" in e for e in errs):
        return "fail", errs
    return ("ok" if _result_ok(out) else "fail"), errs


def _result_ok(out: Path) -> bool:
    try:
        gathered = json.loads(out.read_text())
    except (OSError, ValueError):
        return False
    if [g["rank"] for g in gathered] != [0, 1] or any(len(g["seen"]) != 18 for g in gathered):
        return False
    for epoch in (0, 1):
        per_rank = [{i for e, b in g["seen"] if e == epoch for i in b} for g in gathered]
        if len(per_rank[0]) != 50 or len(per_rank[1]) != 50 or per_rank[0] & per_rank[1]:
            return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=50, help="Runs (default 50).")
    ap.add_argument("--timeout", type=float, default=90.0, help="Seconds per run (default 90).")
    ap.add_argument("--budget", type=float, default=None, help="Stop after this many seconds.")
    ap.add_argument("--keep", type=Path, default=None, help="Write failed runs' stderr here.")
    args = ap.parse_args()
    counts = {"ok": 0, "hang": 0, "fail": 0}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="datafuel-stress-ddp-") as tmp:
        work = Path(tmp)
        shards = write_rows(work / "rows", n=101)
        script = work / "ddp.py"
        script.write_text(SCRIPT)
        for i in range(args.runs):
            if args.budget is not None and time.monotonic() - t_start > args.budget:
                break
            t0 = time.monotonic()
            verdict, errs = run_once(shards, script, work / "seen.json", args.timeout)
            counts[verdict] += 1
            print(f"run {i + 1:3d}: {verdict:4s} {time.monotonic() - t0:5.1f} s", flush=True)
            if verdict != "ok":
                for rank, err in enumerate(errs):
                    print(f"--- rank {rank} stderr ---\n{err.rstrip()}", flush=True)
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for rank, err in enumerate(errs):
                        (args.keep / f"run{i + 1:03d}-rank{rank}.txt").write_text(err)
    total = sum(counts.values())
    print(
        f"{total} run(s) in {time.monotonic() - t_start:.0f} s: {counts['ok']} ok, "
        f"{counts['hang']} hang(s), {counts['fail']} failure(s)"
    )
    return 0 if counts["ok"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
