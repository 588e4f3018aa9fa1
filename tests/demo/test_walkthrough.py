"""``run_demo`` and ``DemoContext``: step selection, ordering, and ``say`` instead of print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from datafuel.demo import STEPS, DemoContext, run_demo
from datafuel.errors import ConfigError


def test_importing_the_demo_does_not_import_torch() -> None:
    code = (
        "import sys, datafuel.demo as d; assert 'torch' not in sys.modules, 'torch imported'; "
        "d.TinyLM; assert 'torch' in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_run_demo_reports_through_say_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    summary = run_demo(tmp_path / "w", ["ingest"], say=lines.append)
    assert capsys.readouterr().out == ""  # library code never prints
    assert lines[0] == "[ingest]" and lines[-1].startswith("  (")
    assert all(line.startswith("  ") for line in lines[1:])
    assert any("retries" in line for line in lines)
    assert summary["steps"] == ["ingest"]
    assert set(summary["seconds"]) == {"ingest", "total"}
    assert summary["results"]["ingest_records"] == 300
    assert (summary["results"]["ingest_dir"] / "_state.json").is_file()


def test_run_demo_without_say_is_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_demo(tmp_path, ("ingest",))
    assert capsys.readouterr() == ("", "")


def test_steps_run_in_canonical_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datafuel.demo._run as run_module

    ran: list[str] = []

    class FakeStep:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, ctx: DemoContext) -> None:
            ran.append(self.name)
            ctx.results[self.name] = True

    monkeypatch.setattr(
        run_module.importlib, "import_module", lambda name: FakeStep(name.rsplit(".", 1)[1])
    )
    summary = run_demo(tmp_path, ["loader", " text", "", "ingest"])
    assert ran == summary["steps"] == ["ingest", "text", "loader"]
    assert summary["results"] == {"ingest": True, "text": True, "loader": True}
    assert run_demo(tmp_path, "table")["steps"] == ["table"]  # one name as a string


def test_unknown_steps_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"steps must be among .*Got unknown step\(s\) \['nope'\]"
    ):
        run_demo(tmp_path / "w", ["ingest", "nope"])
    assert not (tmp_path / "w").exists()


def test_steps_are_the_walkthrough_order() -> None:
    assert STEPS == ("ingest", "table", "images", "text", "loader")
    assert DemoContext(workdir=Path(".")).say("nothing happens") is None


def test_table_step_alone_falls_back_to_the_shipped_sample(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(tmp_path, ["table"], say=lines.append)
    assert any("shipped sample houses.csv" in line for line in lines)
    assert (summary["results"]["table_dir"] / "manifest.json").is_file()
