"""The one CLI runner of the CLI tests: ``cli(*argv)`` -> ``(exit status, stdout, stderr)``."""

from __future__ import annotations

import pytest
from cli_runner import Cli

from datafuel.cli import main


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run ``datafuel ARGV...`` in this process; what it printed comes back with its status."""

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()  # drop what came before
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
