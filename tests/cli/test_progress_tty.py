"""Long CLI phases show a live bar on a terminal (a pty here) and nothing in a pipe."""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from datafuel.demo import write_corpus

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pty")

#: one tqdm rendering: "desc: 123doc [00:02, 61.5doc/s]"
RENDERING = re.compile(r"(train tokenizer|read): *(\d+)doc \[(\d\d:\d\d)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "a.jsonl", 12_000, seed=1)  # ~7 MB: about 3 s of training here
    return root


def command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "datafuel", "build", "text", str(corpus), "--out", str(out),
            "--vocab-size", "4000"]  # fmt: skip


def run_on_a_pty(cmd: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run ``cmd`` with stderr on a pty (stdout a pipe); what the terminal showed."""
    master, slave = os.openpty()
    # a new pty is 0x0; tqdm fits its bar to the width, so give it a terminal's size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return rc, b"".join(chunks).decode(errors="replace")


def test_build_text_bars_move_on_a_terminal(corpus: Path, tmp_path: Path) -> None:
    rc, screen = run_on_a_pty(command(corpus, tmp_path / "out"))
    assert rc == 0, screen
    shown = RENDERING.findall(screen)
    train = [(n, clock) for stage, n, clock in shown if stage == "train tokenizer"]
    # the tokenizer phase has a bar, and it moves: counter or clock change between renderings
    assert len(set(train)) >= 2, screen[-2000:]
    assert len({clock for _, clock in train}) >= 2 or len({n for n, _ in train}) >= 2
    assert train[-1] > train[0]
    assert any(stage == "read" for stage, _, _ in shown), screen[-2000:]


def test_build_text_prints_no_bar_into_a_pipe(corpus: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        command(corpus, tmp_path / "out"), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no bar, no carriage returns
    assert "train tokenizer" not in proc.stdout and "\r" not in proc.stdout
