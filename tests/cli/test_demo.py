from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "datafuel", "demo", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo finished" in proc.stdout
    for step in ("[ingest]", "[table]", "[images]", "[text]", "[loader]"):
        assert step in proc.stdout, f"demo step {step} did not run:\n{proc.stdout}"
    # what each stage must show: retries and drift, the outlier capped, images trained,
    # resampling keeping the tail, the loader's starvation report
    assert "retries" in proc.stdout and "drift" in proc.stdout
    assert "999,000,000" in proc.stdout
    assert "val accuracy" in proc.stdout
    assert "tail kept" in proc.stdout
    assert "starvation" in proc.stdout
    assert (tmp_path / "demo").is_dir()
