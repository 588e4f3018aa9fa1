from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cli_runner import Cli

from datafuel.demo import FakeAPI
from datafuel.ingest import read_ingested

RECORDS = [{"id": i, "price": 1000.0 + i, "loc": {"lat": i / 10}} for i in range(23)]


def test_ingest_then_rerun_is_a_no_op(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(RECORDS, page_size=5, faults={1: ["429:0"]}) as api:
        args = [
            "ingest",
            api.url,
            "--out",
            str(out),
            "--paginate",
            "cursor:next",
            "--records-path",
            "data.items",
        ]
        code, stdout, err = cli(*args)
        assert code == 0, err
        assert "ingested 5 page(s), 23 record(s)" in stdout and "1 retry" in stdout
        code, stdout, _ = cli(*args)
        assert code == 0 and "already finished" in stdout and "nothing to do" in stdout
        assert len(api.served) == 6
    assert read_ingested(out).column("loc.lat").to_pylist() == [i / 10 for i in range(23)]


def test_json_output_and_max_pages_resume(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(RECORDS, page_size=5, style="page") as api:
        base = [
            "ingest",
            api.url,
            "--out",
            str(out),
            "--records-path",
            "data.items",
            "--page-size",
            "5",
        ]
        code, stdout, _ = cli(*[*base, "--max-pages", "2", "--json"])
        first = json.loads(stdout)
        assert code == 0 and first["status"] == "stopped" and first["records"] == 10
        code, stdout, _ = cli(*[*base, "--json"])
        second = json.loads(stdout)
    assert second["status"] == "done" and second["records"] == 23 and second["resumed"] is True
    assert read_ingested(out).column("id").to_pylist() == list(range(23))


def test_different_arguments_are_refused(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "o"
    with FakeAPI(RECORDS, page_size=5) as api:
        assert (
            cli(
                *[
                    "ingest",
                    api.url,
                    "--out",
                    str(out),
                    "--paginate",
                    "cursor:next",
                    "--records-path",
                    "data.items",
                ]
            )[0]
            == 0
        )
        code, _, err = cli(
            *[
                "ingest",
                api.url,
                "--out",
                str(out),
                "--paginate",
                "page",
                "--records-path",
                "data.items",
            ]
        )
    assert code == 1
    assert err.startswith("datafuel: error:") and "different source" in err and "paginate" in err


def test_retries_exhausted_exit_nonzero_with_checkpoint(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "o"
    secret = "tok-9f8e7d6c"
    with FakeAPI(RECORDS, page_size=5, faults={2: ["503"] * 3}) as api:
        args = [
            "ingest",
            api.url,
            "--out",
            str(out),
            "--paginate",
            "cursor:next",
            "--records-path",
            "data.items",
            "--max-attempts",
            "3",
            "--retry-base",
            "0",
            "--header",
            f"Authorization: Bearer {secret}",
            "-v",
        ]
        code, stdout, err = cli(*args)
        assert code == 1
        assert "page 2" in err and "failed 3 time(s)" in err and "rerun the same command" in err
        assert "retry 1/2" in err  # -v logs retries
        assert json.loads((out / "_state.json").read_text())["pages"] == 2
        code, stdout, err = cli(*args)
        assert code == 0 and "resumed" in stdout
        assert all(s.headers.get("Authorization") == f"Bearer {secret}" for s in api.served)
    assert secret not in stdout + err
    for p in out.iterdir():
        assert secret.encode() not in p.read_bytes()


@pytest.mark.parametrize("bad", ["NoColon", ": empty-name", "Two Words: v"])
def test_bad_header_is_a_one_line_error(cli: Cli, tmp_path: Path, bad: str) -> None:
    code, _, err = cli(
        *["ingest", "http://127.0.0.1:9/x", "--out", str(tmp_path / "o"), "--header", bad]
    )
    assert code == 1 and "--header must look like 'Name: value'" in err


def test_bad_paginate_and_url(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli(
        *["ingest", "http://127.0.0.1:9/x", "--out", str(tmp_path / "o"), "--paginate", "cursor"]
    )
    assert code == 1 and "--paginate must be one of" in err
    code, _, err = cli(*["ingest", "file:///etc/passwd", "--out", str(tmp_path / "p")])
    assert code == 1 and "http://" in err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    import subprocess

    with FakeAPI(RECORDS, page_size=10, style="link", records_path=None) as api:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "datafuel",
                "ingest",
                api.url,
                "--out",
                str(tmp_path / "o"),
                "--paginate",
                "link",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    assert "23 record(s)" in proc.stdout
    assert "\r" not in proc.stderr and "page/s" not in proc.stderr  # quiet in pipes: no bar


def _one_line_error(code: int, err: str) -> str:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("datafuel: error:"), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("setup", "extra", "expect"),
    [
        ("none", ["--header", "Authorization: Bearer s3cr3t\rX: 1"], "header 'Authorization'"),
        ("none", ["--header", "Authorization: Bearer s3cr3t\u00e9"], "header 'Authorization'"),
        ("none", ["--allow-origin", "ftp://x"], "--allow-origin"),
        ("deep", [], "nested deeper than --max-depth 200"),
        ("loop", [], "redirect loop"),
        ("state", [], "_state.json: key 'pages'"),
        ("locked", [], "is in use by process"),
    ],
)
def test_hostile_cases_are_one_line_errors(
    cli: Cli, tmp_path: Path, setup: str, extra: list[str], expect: str
) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "ingest"))
    from hostile_server import HostileServer, Reply

    from datafuel._lock import locked

    out = tmp_path / "o"
    deep = b"[" * 10_000 + b"]" * 10_000

    def route(s: object, r: object) -> Reply:
        if setup == "deep":
            return Reply(200, {}, deep)
        return Reply(302, {"Location": "/items"})

    with HostileServer(route) as srv, FakeAPI(RECORDS, page_size=5) as api:
        url = srv.url() if setup in ("deep", "loop") else api.url + "?api_key=s3cr3t"
        args = ["ingest", url, "--out", str(out), "--paginate", "cursor:next"]
        args += ["--records-path", "data.items", *extra]
        if setup == "state":
            assert cli(*args, "--max-pages", "2")[0] == 0
            state = json.loads((out / "_state.json").read_text())
            (out / "_state.json").write_text(json.dumps({**state, "pages": -1}))
        if setup == "locked":
            with locked(out, "ingest"):
                line = _one_line_error(*cli(*args)[::2])
        else:
            line = _one_line_error(*cli(*args)[::2])
    assert expect in line and "s3cr3t" not in line
