"""Builds into one ``out`` never run at once; a killed build's lock does not outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from golden_builds import image_folder, tree_hashes

from datafuel import build
from datafuel._lock import LOCK_NAME, locked
from datafuel.errors import LockedError

HOUSES = str(files("datafuel") / "data" / "houses.csv")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "c.jsonl").write_text("".join(f'{{"text": "doc {i} says hi"}}\n' for i in range(80)))
    return d / "c.jsonl"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    out = tmp_path_factory.mktemp("tokens")
    build.text([corpus], out, vocab_size=300)
    return out / "train"


def builds(tmp_path: Path, corpus: Path, tokens: Path) -> dict[str, Callable[[Path], Any]]:
    images = image_folder(tmp_path / "images", corrupt=False)
    return {
        "table": lambda out: build.table(HOUSES, out, target="price", drop=["id"]),
        "images": lambda out: build.images(images, out),
        "text": lambda out: build.text([corpus], out, vocab_size=300),
        "resample": lambda out: build.resample(tokens, out, report_tokens=200),
    }


@pytest.mark.parametrize("kind", ["table", "images", "text", "resample"])
def test_a_second_build_into_a_locked_out_is_refused_naming_the_holder(
    tmp_path: Path, corpus: Path, tokens: Path, kind: str
) -> None:
    run = builds(tmp_path, corpus, tokens)[kind]
    out = tmp_path / "out"
    with locked(out, "build"):
        with pytest.raises(LockedError, match=rf"is in use by process {os.getpid()}") as info:
            run(out)
        assert info.value.path == str(out)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing was written
    run(out)  # once the holder is gone the build runs
    run(out)  # and a rerun (same process, lock taken again) too
    assert (out / "split.json").exists() or (out / "manifest.json").exists()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from datafuel import build

    def stall(stage, n, total):
        print("building", flush=True)
        time.sleep(120)  # killed here, in the middle of the build, holding the lock

    build.table(sys.argv[1], sys.argv[2], target="price", drop=["id"], on_progress=stall)
    """
)


def test_a_build_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    out, clean = tmp_path / "out", tmp_path / "clean"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, HOUSES, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "building"
        with pytest.raises(LockedError, match=rf"is in use by process {child.pid}\b"):
            build.table(HOUSES, out, target="price", drop=["id"])
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    build.table(HOUSES, out, target="price", drop=["id"])  # the kernel released the flock
    build.table(HOUSES, clean, target="price", drop=["id"])
    assert tree_hashes(out) == tree_hashes(clean)


def test_the_golden_record_does_not_hash_the_lock(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_text("x")
    before = tree_hashes(tmp_path)
    with locked(tmp_path, "build"):
        assert (tmp_path / LOCK_NAME).exists()
        assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("kind", ["table", "text"])
def test_an_out_that_cannot_be_created_is_one_output_error(tmp_path: Path, kind: str) -> None:
    from datafuel import build
    from datafuel.errors import OutputError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    inputs = {
        "table": str(files("datafuel") / "data" / "houses.csv"),
        "text": [str(files("datafuel") / "data" / "text" / "chronicles.jsonl")],
    }[kind]
    with pytest.raises(OutputError, match="cannot create the output directory .*: not a directory"):
        getattr(build, kind)(inputs, blocker / "out")
    assert blocker.read_text() == "not a directory"
