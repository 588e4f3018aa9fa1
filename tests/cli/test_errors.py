"""The CLI's error contract: every failure of every verb is one line, never a traceback.

Each bad input runs as a real ``python3 -m datafuel`` process, so a traceback printed
by the interpreter (not only by our handler) would show. The processes start together
in one module fixture (each costs about a second of imports) and each case checks its
own result.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import click
import numpy as np
import pytest
from cli_runner import Cli
from image_samples import make_folder

from datafuel.errors import ManifestError
from datafuel.loaders import ShardWriter, ragged, write_shards

SAMPLE_CSV = str(files("datafuel") / "data" / "houses.csv")

#: how a case must fail: one ``datafuel: ...`` line, or click's usage error (exit 2)
ONE_LINE, USAGE = "one line", "usage"


def _inputs(root: Path) -> dict[str, str]:
    """Every bad (and good) input the cases use, written under ``root``."""
    rows = root / "rows"
    write_shards(rows, x=np.ones((8, 3), np.float32), y=np.arange(8))
    tokens = root / "tokens"
    meta = {"vocab_size": 64, "eot_id": 0}
    with ShardWriter(tokens, {"tokens": ragged("uint16")}, metadata=meta) as w:
        w.write({"tokens": [np.arange(50, dtype=np.uint16)] * 8})
    bad_json = root / "bad_manifest"
    bad_json.mkdir()
    (bad_json / "manifest.json").write_text('{"version": 1, "fields": ')
    wrong_types = root / "wrong_types"
    wrong_types.mkdir()
    manifest = json.loads((rows / "manifest.json").read_text())
    manifest["fields"]["x"]["shape"] = None  # a wrong type deep inside
    (wrong_types / "manifest.json").write_text(json.dumps(manifest))
    truncated = root / "truncated"
    write_shards(truncated, x=np.ones((64, 3), np.float32))
    for f in truncated.iterdir():
        if f.name != "manifest.json":
            f.write_bytes(f.read_bytes()[:7])
    not_shards = root / "plain_dir"
    not_shards.mkdir()
    (not_shards / "notes.txt").write_text("hello\n")
    a_file = root / "a_file"
    a_file.write_text("not a directory\n")
    corrupt_parquet = root / "corrupt.parquet"
    corrupt_parquet.write_bytes(b"PAR1" + os.urandom(200))
    bad_jsonl = root / "bad.jsonl"
    bad_jsonl.write_text('{"text": "fine"}\n{"text": \n')
    good_jsonl = root / "good.jsonl"
    good_jsonl.write_text("".join(json.dumps({"text": f"doc {i} " * 20}) + "\n" for i in range(30)))
    images = make_folder(root / "images", per_class=3)
    return {
        "ROWS": str(rows),
        "TOKENS": str(tokens),
        "BAD_MANIFEST": str(bad_json),
        "WRONG_TYPES": str(wrong_types),
        "TRUNCATED": str(truncated),
        "PLAIN_DIR": str(not_shards),
        "FILE": str(a_file),
        "UNDER_FILE": str(a_file / "out"),  # ENOTDIR
        "MISSING": str(root / "missing"),
        "CORRUPT_PARQUET": str(corrupt_parquet),
        "BAD_JSONL": str(bad_jsonl),
        "GOOD_JSONL": str(good_jsonl),
        "IMAGES": str(images),
        "CSV": SAMPLE_CSV,
        "OUT": str(root / "out"),
    }


#: case id -> (argv with {PLACEHOLDERS}, expected kind of failure)
CASES: dict[str, tuple[list[str], str]] = {
    "build-table-missing-input": (["build", "table", "{MISSING}", "--out", "{OUT}/t1"], ONE_LINE),
    "build-table-corrupt-parquet": (
        ["build", "table", "{CORRUPT_PARQUET}", "--out", "{OUT}/t2"],
        ONE_LINE,
    ),
    "build-table-bad-split": (
        ["build", "table", "{CSV}", "--out", "{OUT}/t3", "--split", "0.8,x"],
        ONE_LINE,
    ),
    "build-table-out-under-file": (["build", "table", "{CSV}", "--out", "{UNDER_FILE}"], ONE_LINE),
    "build-table-out-in-proc": (["build", "table", "{CSV}", "--out", "/proc/datafuel"], ONE_LINE),
    "build-images-missing-input": (
        ["build", "images", "{MISSING}", "--out", "{OUT}/i1"],
        ONE_LINE,
    ),
    "build-images-input-is-file": (["build", "images", "{FILE}", "--out", "{OUT}/i2"], ONE_LINE),
    "build-images-out-under-file": (
        ["build", "images", "{IMAGES}", "--out", "{UNDER_FILE}"],
        ONE_LINE,
    ),
    "build-images-bad-split": (
        ["build", "images", "{IMAGES}", "--out", "{OUT}/i3", "--split", "2,-1"],
        ONE_LINE,
    ),
    "build-text-missing-input": (["build", "text", "{MISSING}", "--out", "{OUT}/x1"], ONE_LINE),
    "build-text-corrupt-jsonl": (["build", "text", "{BAD_JSONL}", "--out", "{OUT}/x2"], ONE_LINE),
    "build-text-out-under-file": (
        ["build", "text", "{GOOD_JSONL}", "--out", "{UNDER_FILE}", "--vocab-size", "300"],
        ONE_LINE,
    ),
    "build-text-bad-shard-bytes": (
        ["build", "text", "{GOOD_JSONL}", "--out", "{OUT}/x3", "--shard-bytes", "lots"],
        USAGE,
    ),
    "ingest-out-under-file": (["ingest", "http://127.0.0.1:9/", "--out", "{UNDER_FILE}"], ONE_LINE),
    "ingest-not-a-url": (["ingest", "not a url", "--out", "{OUT}/g1"], ONE_LINE),
    "ingest-unreachable": (
        ["ingest", "http://127.0.0.1:9/", "--out", "{OUT}/g2", "--max-attempts", "1"],
        ONE_LINE,
    ),
    "ingest-bad-paginate": (
        ["ingest", "http://127.0.0.1:9/", "--out", "{OUT}/g3", "--paginate", "sideways"],
        ONE_LINE,
    ),
    "resample-missing": (["resample", "{MISSING}", "--out", "{OUT}/r1"], ONE_LINE),
    "resample-not-shards": (["resample", "{PLAIN_DIR}", "--out", "{OUT}/r2"], ONE_LINE),
    "resample-no-tokens": (["resample", "{ROWS}", "--out", "{OUT}/r3"], ONE_LINE),
    "resample-out-under-file": (["resample", "{TOKENS}", "--out", "{UNDER_FILE}"], ONE_LINE),
    "profile-not-shards": (["profile", "{PLAIN_DIR}"], ONE_LINE),
    "profile-truncated-shard": (["profile", "{TRUNCATED}", "--batch-size", "8"], ONE_LINE),
    "profile-bad-batch-size": (["profile", "{ROWS}", "--batch-size", "0"], ONE_LINE),
    "inspect-missing": (["inspect", "{MISSING}"], ONE_LINE),
    "inspect-corrupt-manifest": (["inspect", "{BAD_MANIFEST}"], ONE_LINE),
    "inspect-wrong-manifest-types": (["inspect", "{WRONG_TYPES}"], ONE_LINE),
    "inspect-verify-truncated": (["inspect", "{TRUNCATED}", "--verify"], ONE_LINE),
    "inspect-a-file": (["inspect", "{FILE}"], USAGE),
    "demo-bad-steps": (["demo", "--steps", "nope"], USAGE),
    "demo-workdir-under-file": (
        ["demo", "--steps", "table", "--workdir", "{UNDER_FILE}"],
        ONE_LINE,
    ),
}

#: the same bad input with the traceback asked for, both ways
DEBUG_CASES: dict[str, tuple[list[str], dict[str, str]]] = {
    "flag": (["--debug", "inspect", "{MISSING}"], {}),
    "env": (["inspect", "{MISSING}"], {"DATAFUEL_DEBUG": "1"}),
    "flag-oserror": (["--debug", "build", "table", "{CSV}", "--out", "{UNDER_FILE}"], {}),
}

Result = tuple[int, str, str]

#: processes at a time
_PARALLEL = max(2, min(8, os.cpu_count() or 1))


def _run(argv: list[str], paths: dict[str, str], env: dict[str, str]) -> Result:
    args = [a.format(**paths) for a in argv]
    p = subprocess.run(
        [sys.executable, "-m", "datafuel", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    """Every case's ``(status, stdout, stderr)``, a few processes side by side."""
    paths = _inputs(tmp_path_factory.mktemp("bad_inputs"))
    no_debug = {"DATAFUEL_DEBUG": ""}
    todo = {name: (argv, no_debug) for name, (argv, _kind) in CASES.items()}
    todo |= {f"debug-{n}": (argv, env) for n, (argv, env) in DEBUG_CASES.items()}
    # each process imports torch: a bounded pool keeps the memory and the CPU in check
    with ThreadPoolExecutor(_PARALLEL) as pool:
        futures = {name: pool.submit(_run, argv, paths, env) for name, (argv, env) in todo.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_in_one_line_without_a_traceback(
    case: str, results: dict[str, Result]
) -> None:
    code, stdout, stderr = results[case]
    kind = CASES[case][1]
    assert "Traceback" not in stdout + stderr, stderr
    lines = stderr.splitlines()
    if kind == USAGE:  # click's own usage errors stay as click prints them
        assert code == 2, (code, stderr)
        assert lines and lines[0].startswith("Usage: datafuel") and lines[-1].startswith("Error: ")
        return
    assert code == 1, (code, stderr)
    assert len(lines) == 1, stderr
    assert lines[0].startswith("datafuel: error: "), stderr


@pytest.mark.parametrize("case", sorted(DEBUG_CASES))
def test_debug_shows_the_traceback(case: str, results: dict[str, Result]) -> None:
    code, _stdout, stderr = results[f"debug-{case}"]
    assert code != 0
    assert "Traceback (most recent call last)" in stderr
    assert not stderr.startswith("datafuel: ")


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/train/shard-00003.jpeg.bin")


def _erofs() -> OSError:
    return OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out")


def _eacces() -> OSError:
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/root/secret")


def _rename() -> OSError:
    return OSError(errno.EXDEV, os.strerror(errno.EXDEV), "a.tmp", None, "b")


def _interrupt() -> BaseException:
    return KeyboardInterrupt()


@pytest.mark.parametrize(
    ("make", "code", "line"),
    [
        (_enospc, 1, "datafuel: error: no space left on device: out/train/shard-00003.jpeg.bin"),
        (_erofs, 1, "datafuel: error: read-only file system: /mnt/ro/out"),
        (_eacces, 1, "datafuel: error: permission denied: /root/secret"),
        (_rename, 1, "datafuel: error: invalid cross-device link: a.tmp -> b"),
        (lambda: OSError("free-form"), 1, "datafuel: error: free-form"),
        (lambda: MemoryError(), 1, "datafuel: error: out of memory; use smaller batches"),
        (lambda: ManifestError("first\nsecond"), 1, "datafuel: error: first; second"),
        (
            lambda: RecursionError("maximum recursion depth exceeded"),
            70,
            "datafuel: internal error: RecursionError: maximum recursion depth exceeded "
            "(run with --debug or DATAFUEL_DEBUG=1 for the traceback, and report it)",
        ),
        (_interrupt, 130, "datafuel: interrupted"),
    ],
    ids=["enospc", "erofs", "eacces", "rename", "free-form", "memory", "newline", "bug", "ctrl-c"],
)
def test_every_escaping_exception_is_one_line(
    cli: Cli,
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[], BaseException],
    code: int,
    line: str,
) -> None:
    import datafuel.cli._inspect as inspect_module

    def boom(*_args: object, **_kwargs: object) -> None:
        raise make()

    monkeypatch.delenv("DATAFUEL_DEBUG", raising=False)
    monkeypatch.setattr(inspect_module, "ShardSet", boom)
    got, stdout, stderr = cli("inspect", "anywhere")
    assert got == code
    assert stderr.strip().startswith(line), stderr  # Ctrl-C: click ends the ^C line first
    assert len(stderr.strip().splitlines()) == 1
    assert "Traceback" not in stdout + stderr
    raised = click.exceptions.Abort if code == 130 else type(make())  # click wraps Ctrl-C
    with pytest.raises(raised):
        cli("--debug", "inspect", "anywhere")
