from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datafuel.cli import main
from datafuel.loaders import write_shards


def test_inspect_prints_schema_rows_and_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_shards(
        tmp_path, x=np.zeros((10, 3), np.float32), y=np.arange(10), provenance={"source": "unit"}
    )
    assert main(["inspect", str(tmp_path), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "10 rows in 1 shard(s)" in out
    assert "x" in out and "float32 shape=[3]" in out
    assert "verify: every checksum matches" in out
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 10 and info["fields"]["y"] == {
        "kind": "fixed",
        "dtype": "int64",
        "shape": [],
    }
    assert info["bytes"] == 10 * 12 + 10 * 8


def test_inspect_bad_input_is_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_shards(tmp_path, x=np.zeros((10, 3), np.float32))
    victim = tmp_path / "shard-00000.x.bin"
    victim.write_bytes(victim.read_bytes()[:-1])
    assert main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("datafuel: error:") and "shard-00000.x.bin" in err and "\n" not in err


@pytest.mark.parametrize(
    "verb",
    [
        ["build", "table"],
        ["build", "images"],
        ["build", "text"],
        ["ingest"],
        ["resample"],
        ["profile"],
        ["inspect"],
        ["demo"],
    ],
)
def test_every_verb_has_help(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*verb, "--help"]) == 0
    assert "Usage: datafuel" in capsys.readouterr().out


def test_console_script_runs_as_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "datafuel", "--version"], capture_output=True, text=True, check=True
    )
    assert "datafuel" in out.stdout
