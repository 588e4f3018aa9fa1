"""``datafuel profile``: throughput and starvation of the loader, as text and JSON."""

from __future__ import annotations

import io
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runner import Cli
from PIL import Image

from datafuel.loaders import bytes_field, fixed, ragged, write_shards
from datafuel.vision import pil_build


@pytest.fixture()
def token_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    docs = [
        rng.integers(0, 50000, size=int(k), dtype=np.uint16)
        for k in rng.integers(100, 400, size=60)
    ]
    write_shards(
        tmp_path / "tok", fields={"tokens": ragged("uint16")}, tokens=docs, shard_bytes=8 << 10
    )
    return tmp_path / "tok"


@pytest.fixture()
def rows_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_shards(
        tmp_path / "rows", x=rng.normal(size=(500, 8)).astype(np.float32), y=np.arange(500)
    )
    return tmp_path / "rows"


def test_json_report_for_token_windows(cli: Cli, token_dir: Path) -> None:
    rc, out, err = cli(
        *[
            "profile",
            str(token_dir),
            "--seq-len",
            "32",
            "--batch-size",
            "8",
            "--step-ms",
            "2",
            "--batches",
            "12",
            "--json",
        ]
    )
    assert rc == 0, err
    report = json.loads(out)
    assert report["batches"] == 12 and report["samples"] == 96
    assert report["bytes"] == 96 * 33 * 2  # uint16 windows of 33 tokens cross the bus
    assert 0.0 <= report["starvation"] <= 1.0
    assert report["samples_per_s"] == pytest.approx(96 / report["wall_s"])
    assert report["bytes_per_s"] == pytest.approx(report["bytes"] / report["wall_s"])
    # 12 simulated steps of 2 ms: the wall time is at least that
    assert report["wall_s"] >= 12 * 0.002 * 0.9
    assert report["wait_p50_ms"] <= report["wait_p95_ms"]


def test_text_report_for_rows_and_epochs(cli: Cli, rows_dir: Path) -> None:
    rc, out, err = cli(*["profile", str(rows_dir), "--batch-size", "64", "--epochs", "2"])
    assert rc == 0, err
    assert "16 batches of 64" in out  # 8 batches per epoch, 2 epochs
    for word in ("samples/s", "MB/s", "starvation", "p50"):
        assert word in out
    rc, out, _ = cli(*["profile", str(rows_dir), "--batch-size", "64", "--workers", "0", "--json"])
    assert rc == 0 and json.loads(out)["batches"] == 8


def test_without_a_step_it_reports_throughput_and_says_starvation_needs_one(
    cli: Cli, rows_dir: Path
) -> None:
    rc, out, err = cli(*["profile", str(rows_dir), "--batch-size", "64"])
    assert rc == 0, err
    assert "samples/s" in out and "MB/s" in out
    assert "starvation  not measured: pass --step-ms MS (your training step)" in out
    assert "% of wall time" not in out  # never "100% of wall time waiting" for a loop with no step
    rc, out, err = cli(*["profile", str(rows_dir), "--batch-size", "64", "--json"])
    report = json.loads(out)
    assert report["starvation"] is None and "--step-ms" in report["starvation_note"]
    assert report["samples_per_s"] > 0
    # with a step, starvation is measured and printed as before
    rc, out, err = cli(*["profile", str(rows_dir), "--batch-size", "64", "--step-ms", "1"])
    assert rc == 0, err
    assert "% of wall time waiting for data" in out and "not measured" not in out


def test_python_profile_without_a_step_has_no_starvation(rows_dir: Path) -> None:
    from datafuel import build

    r = build.profile(rows_dir, batch_size=100)
    assert r["starvation"] is None and r["batches"] == 5 and r["samples_per_s"] > 0
    assert "--step-ms" in r["starvation_note"]
    r = build.profile(rows_dir, batch_size=100, step_ms=0.5)
    assert 0.0 <= r["starvation"] <= 1.0 and "starvation_note" not in r


def test_a_build_root_gets_did_you_mean_train(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "tab" / "out"
    for split in ("train", "val", "test"):
        write_shards(root / split, x=np.zeros((8, 2), np.float32))
    (root / "recipe.json").write_text("{}")
    rc, _, err = cli(*["profile", str(root)])
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"did you mean {root / 'train'}?" in err
    for split in ("test", "train", "val"):
        assert str(root / split) in err
    assert "no manifest" not in err
    # a directory with no shard sets at all keeps the plain "no manifest" message
    (tmp_path / "empty").mkdir()
    rc, _, err = cli(*["profile", str(tmp_path / "empty")])
    assert rc == 1 and "no manifest" in err and "did you mean" not in err


def test_bad_input_is_one_line_and_exit_1(
    cli: Cli, token_dir: Path, rows_dir: Path, tmp_path: Path
) -> None:
    rc, _, err = cli(*["profile", str(token_dir)])
    assert rc == 1 and "--seq-len" in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli(*["profile", str(rows_dir), "--step-ms", "-1"])
    assert rc == 1 and "--step-ms" in err
    rc, _, err = cli(*["profile", str(tmp_path / "missing")])
    assert rc == 1 and "missing" in err
    rc, _, err = cli(*["profile", str(rows_dir), "--decode", "cpu"])
    assert rc == 1 and "bytes field" in err  # names the encoded-image field it looked for
    rc, _, err = cli(*["profile", str(token_dir), "--seq-len", "8", "--decode", "cpu"])
    assert rc == 1 and "exclude" in err


def test_decode_cpu_on_real_jpegs(cli: Cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in range(24):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
        jpegs.append(buf.getvalue())
    d = tmp_path / "img"
    write_shards(
        d,
        fields={"jpeg": bytes_field(), "label": fixed("int64")},
        jpeg=jpegs,
        label=np.arange(24) % 3,
    )
    rc, _, err = cli(*["profile", str(d)])
    assert rc == 1 and "--decode" in err
    rc, out, err = cli(
        *["profile", str(d), "--decode", "cpu", "--size", "32", "--batch-size", "8", "--json"]
    )
    assert rc == 0, err
    report = json.loads(out)
    assert report["batches"] == 3
    assert report["bytes"] == 24 * (32 * 32 * 3 + 8)  # uint8 pixels + int64 labels
    assert report["pil"] == pil_build()  # which PIL decoded: pillow-simd or stock Pillow
    rc, out, err = cli(*["profile", str(d), "--decode", "cpu", "--size", "32", "--batch-size", "8"])
    assert rc == 0, err
    name = "pillow-simd" if pil_build()["simd"] else "stock Pillow"
    assert f"PIL: {name} {pil_build()['version']}" in out
    # in worker processes: the same batches; the settings are reported
    args = ["profile", str(d), "--decode", "cpu", "--size", "32", "--batch-size", "8"]
    rc, out, err = cli(*[*args, "--processes", "2", "--json"])
    assert rc == 0, err
    assert json.loads(out)["batches"] == 3 and json.loads(out)["processes"] == 2
    rc, _, err = cli(*["profile", str(d), "--decode", "dali", "--processes", "2"])
    assert rc == 1 and "--processes is for --decode cpu" in err


def test_many_cores_get_a_processes_hint(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datafuel.cli._profile as prof

    d = tmp_path / "img"
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(buf, "JPEG")
    write_shards(
        d,
        fields={"jpeg": bytes_field(), "label": fixed("int64")},
        jpeg=[buf.getvalue()] * 8,
        label=np.zeros(8, np.int64),
    )
    monkeypatch.setattr(prof.os, "cpu_count", lambda: 16)
    monkeypatch.setattr(prof.build, "profile", lambda *a, **k: {**_FAKE_REPORT, "starvation": 0.5})
    rc, out, _ = cli(*["profile", str(d), "--decode", "cpu"])
    assert rc == 0 and "try --processes 14" in out
    monkeypatch.setattr(prof.build, "profile", lambda *a, **k: {**_FAKE_REPORT, "starvation": 0.01})
    rc, out, _ = cli(*["profile", str(d), "--decode", "cpu"])
    assert rc == 0 and "hint" not in out  # the loop was not waiting: nothing to fix


def test_decode_cpu_under_stock_pillow_says_how_to_restore_simd(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datafuel.cli._profile as prof
    import datafuel.vision._cpu as cpu

    stock = {
        "version": "13.0.0",
        "distribution": "pillow",
        "simd": False,
        "libjpeg_turbo": "3.2.0",
        "path": "/venv/site-packages/PIL",
        "advice": cpu.STOCK_PILLOW_ADVICE.format(python="/venv/bin/python"),
    }
    monkeypatch.setattr(cpu, "pil_build", lambda: stock)
    monkeypatch.setattr(prof.build, "profile", lambda *a, **k: {**_FAKE_REPORT, "starvation": None})
    rc, out, _ = cli(*["profile", str(tmp_path), "--decode", "cpu"])
    assert rc == 0
    assert "PIL: stock Pillow 13.0.0, libjpeg-turbo 3.2.0" in out
    assert "about 3x slower" in out and "bash scripts/setup.sh" in out
    rc, out, _ = cli(*["profile", str(tmp_path)])  # no decoding: no PIL line
    assert rc == 0 and "PIL" not in out


_FAKE_REPORT = {
    "batches": 1,
    "samples_per_s": 1.0,
    "bytes_per_s": 1.0,
    "wait_p50_ms": 0.0,
    "wait_p95_ms": 0.0,
}


def test_stages_bottleneck_and_trace(cli: Cli, rows_dir: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    rc, out, err = cli(
        *["profile", str(rows_dir), "--batch-size", "64", "--trace", str(trace), "--json"]
    )
    assert rc == 0, err
    report = json.loads(out)
    assert {"gather", "transform", "finite", "collate", "copy", "handoff"} <= set(report["stages"])
    assert report["bottleneck"] and report["advice"] and report["trace"] == str(trace)
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" and e["name"] == "wait" for e in events) == report["batches"]
    rc, out, err = cli(*["profile", str(rows_dir), "--batch-size", "64", "--step-ms", "10"])
    assert rc == 0, err
    assert "  stage       ms/batch  worker  wait" in out
    assert "bottleneck  none: the loop waits" in out and "input is not the bottleneck" in out


def test_trace_to_a_directory_is_refused(cli: Cli, rows_dir: Path, tmp_path: Path) -> None:
    rc, _, err = cli(*["profile", str(rows_dir), "--trace", str(tmp_path)])
    assert rc != 0 and "--trace" in err
    from datafuel import build
    from datafuel.errors import ConfigError

    with pytest.raises(ConfigError, match="--trace must name a file"):
        build.profile(rows_dir, trace=tmp_path)


def test_plot_writes_the_png_and_says_where(cli: Cli, rows_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "profile.png"
    argv = ["profile", str(rows_dir), "--batch-size", "32", "--step-ms", "1", "--plot", str(png)]
    rc, out, err = cli(*argv)
    assert rc == 0, err
    assert f"  plot        {png}\n" in out
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.size == (1200, 900)  # as --help and the README say
    png.unlink()
    rc, out, err = cli(*argv, "--json")
    assert rc == 0, err
    assert json.loads(out)["plot"] == str(png) and png.is_file()


def test_plot_refusals_come_before_the_run(
    cli: Cli, rows_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datafuel import build
    from datafuel.build import _profile
    from datafuel.errors import ConfigError

    rc, _, err = cli(*["profile", str(rows_dir), "--plot", str(tmp_path)])
    assert rc != 0 and "--plot" in err
    with pytest.raises(ConfigError, match="--plot must name a file, such as profile.png"):
        build.profile(rows_dir, plot=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        build.profile(rows_dir, plot=tmp_path / "nowhere" / "p.png")

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader ran before the plot was refused")

    monkeypatch.setattr(_profile, "_drive", no_run)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pip install 'datafuel\[plot\]'"):
        build.profile(rows_dir, plot=tmp_path / "p.png")
    rc, _, err = cli(*["profile", str(rows_dir), "--plot", str(tmp_path / "p.png")])
    assert rc != 0 and "needs matplotlib" in err and "scripts/setup.sh" in err


def test_on_rate_reports_the_live_rate_at_most_twice_a_second(token_dir: Path) -> None:
    from datafuel import build

    seen: list[tuple[float, dict[str, float]]] = []
    r = build.profile(
        token_dir,
        seq_len=32,
        batch_size=8,
        step_ms=10,
        batches=130,  # ~1.3 s of steps
        on_rate=lambda rate: seen.append((time.perf_counter(), rate)),
    )
    assert 1 <= len(seen) <= 3, seen
    for _, rate in seen:
        assert set(rate) == {"samples_per_s", "wait_share", "batches"}
        assert 0 < rate["samples_per_s"] < 8 / 0.009  # a 10 ms step bounds it
        assert 0.0 <= rate["wait_share"] <= 1.0
        assert 0 < rate["batches"] <= r["batches"]
    times = [t for t, _ in seen]
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(times))


def profile_command(token_dir: Path) -> list[str]:
    return [sys.executable, "-m", "datafuel", "profile", str(token_dir), "--seq-len", "32",
            "--batch-size", "8", "--step-ms", "10", "--batches", "200"]  # fmt: skip


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")
def test_live_rate_on_a_terminal_and_quiet_in_a_pipe(token_dir: Path) -> None:
    from test_progress_tty import run_on_a_pty

    rc, screen = run_on_a_pty(profile_command(token_dir))  # ~2 s of 10 ms steps
    assert rc == 0, screen
    live = re.findall(r"profile: .*?([\d,]+) samples/s, wait (\d+\.\d)%", screen)
    assert live, screen[-2000:]
    assert all(0.0 <= float(w) <= 100.0 for _, w in live)
    proc = subprocess.run(profile_command(token_dir), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no bar, no live rate in a pipe
    assert "  samples/s   " in proc.stdout  # the report itself
