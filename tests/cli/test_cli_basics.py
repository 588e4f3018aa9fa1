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


def test_inspect_on_a_build_root_asks_which_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for split in ("train", "val", "test"):
        write_shards(tmp_path / "out" / split, x=np.zeros((4, 2), np.float32))
    assert main(["inspect", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert f"did you mean {tmp_path / 'out' / 'train'}?" in err and "\n" not in err
    assert f"{tmp_path / 'out' / 'val'}" in err and "no manifest" not in err


_STOCK = {
    "version": "13.0.0",
    "distribution": "pillow",
    "simd": False,
    "libjpeg_turbo": "3.2.0",
    "path": "/venv/site-packages/PIL",
    "advice": "stock Pillow resizes about 3x slower ...; restore pillow-simd with: "
    "bash scripts/setup.sh",
}


def test_inspect_of_an_image_set_names_the_pil_and_how_to_restore_simd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import datafuel.vision._cpu as cpu
    from datafuel.loaders import bytes_field, fixed

    write_shards(
        tmp_path / "img",
        fields={"image": bytes_field(), "label": fixed("int64")},
        image=[b"\xff\xd8 not decoded by inspect"] * 3,
        label=np.arange(3),
    )
    real = cpu.pil_build()
    assert main(["inspect", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    name = "pillow-simd" if real["simd"] else "stock Pillow"
    assert f"PIL: {name} {real['version']}" in out
    assert ("bash scripts/setup.sh" in out) is (not real["simd"])
    assert main(["inspect", str(tmp_path / "img"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["pil"] == real
    # stock Pillow in place of pillow-simd (what installing scikit-image does): said, with the fix
    monkeypatch.setattr(cpu, "pil_build", lambda: _STOCK)
    assert main(["inspect", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert "PIL: stock Pillow 13.0.0, libjpeg-turbo 3.2.0" in out
    assert "Warning: stock Pillow" in out and "bash scripts/setup.sh" in out
    # a set without encoded images says nothing about PIL
    write_shards(tmp_path / "rows", x=np.zeros((3, 2), np.float32))
    assert main(["inspect", str(tmp_path / "rows")]) == 0
    assert "PIL" not in capsys.readouterr().out


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
