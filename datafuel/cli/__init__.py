"""The ``datafuel`` command: a thin layer over the Python API.

Each verb lives in its own module; this one wires them into one click group and
holds the error contract: every failure is one line on stderr and a non-zero exit,
never a traceback (``--debug`` or ``DATAFUEL_DEBUG=1`` shows it instead).

=========================================  ==========================================  ====
failure                                    stderr                                      exit
=========================================  ==========================================  ====
:class:`~datafuel.errors.DatafuelError`    ``datafuel: error: <message>``              1
``OSError`` (disk full, read-only, ...)    ``datafuel: error: <strerror>: <path>``     1
``MemoryError``                            ``datafuel: error: out of memory ...``      1
click usage error (bad option, ...)        click's ``Usage:`` / ``Error:`` lines       2
Ctrl-C                                     ``datafuel: interrupted``                   130
anything else (a bug)                      ``datafuel: internal error: TYPE: ...``     70
=========================================  ==========================================  ====
"""

from __future__ import annotations

import os
import re
import sys

import click

from datafuel._version import __version__
from datafuel.errors import DatafuelError

from ._lazy import LazyGroup

__all__ = ["cli", "main"]


_COMMANDS = {
    "apply": (
        "datafuel.cli._apply:apply_cmd",
        "Turn new rows into shards with a saved table recipe (OUT/recipe.json).",
    ),
    "build": (
        "datafuel.cli._build:build",
        "Split, fit on train only, and write train/val/test shard sets.",
    ),
    "ingest": (
        "datafuel.cli._ingest:ingest",
        "Pull a paginated REST API into Parquet, resumably, exactly once.",
    ),
    "resample": (
        "datafuel.cli._resample:resample",
        "Semi-synthetic token resampling with a frozen prior.",
    ),
    "profile": (
        "datafuel.cli._profile:profile",
        "Loader throughput and GPU starvation against a simulated step.",
    ),
    "inspect": (
        "datafuel.cli._inspect:inspect_cmd",
        "Schema, shard count, rows and bytes of a shard set (--verify).",
    ),
    "audit": (
        "datafuel.cli._audit:audit_cmd",
        "Exact and near duplicates across shard sets (exit 1 when any).",
    ),
    "demo": ("datafuel.cli._demo:demo", "Every stage end to end on built-in sample data."),
}


@click.group(
    cls=LazyGroup,
    commands=_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="datafuel")
@click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda _ctx, _param, value: _set_debug(value),
    help="Show the full traceback of a failure (also DATAFUEL_DEBUG=1), for bug reports.",
)
def cli() -> None:
    """datafuel: turn raw data into batches that keep a GPU busy.

    Typical flow: `datafuel ingest` (REST API -> Parquet), `datafuel build table|images|text`
    (split, fit on train, write shard sets), `datafuel resample` (semi-synthetic tokens),
    `datafuel profile` (loader throughput and GPU starvation), `datafuel inspect`.
    Run `datafuel demo` to see every stage on built-in sample data.
    """


#: exit status of an unexpected exception (a bug): sysexits.h EX_SOFTWARE
EXIT_INTERNAL = 70
#: exit status after Ctrl-C (128 + SIGINT), as shells report it
EXIT_INTERRUPTED = 130

_debug = False


def _set_debug(value: bool) -> None:
    global _debug
    _debug = _debug or bool(value)


def _debug_from_env() -> bool:
    return os.environ.get("DATAFUEL_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(text: str) -> str:
    """``text`` on one line (a message's own line breaks become ``; ``)."""
    return re.sub(r"\s*\n\s*", "; ", text.strip())


def _describe_os_error(exc: OSError) -> str:
    """``strerror: path`` (``no space left on device: out/train/shard-00003.bin``)."""
    if not exc.strerror:  # raised with a free-form message (e.g. by pyarrow)
        return str(exc) or type(exc).__name__
    reason = exc.strerror[:1].lower() + exc.strerror[1:]
    if exc.filename is None:
        return reason
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{reason}: {where}"


def _quiet_stdout() -> None:
    """After a broken pipe (``datafuel inspect ... | head``), drop what is still buffered."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured in tests)
        return


def _report(exc: BaseException) -> int:
    """Print ``exc`` as one line on stderr; the exit status for it."""
    if isinstance(exc, DatafuelError):
        line, code = f"datafuel: error: {exc}", 1
    elif isinstance(exc, MemoryError):
        line, code = (
            "datafuel: error: out of memory; use smaller batches or shards (--batch-size, "
            "--shard-bytes) or fewer workers",
            1,
        )
    elif isinstance(exc, BrokenPipeError):
        _quiet_stdout()
        line, code = "datafuel: error: output closed early (broken pipe)", 1
    elif isinstance(exc, OSError):
        line, code = f"datafuel: error: {_describe_os_error(exc)}", 1
    else:
        line = (
            f"datafuel: internal error: {type(exc).__name__}: {exc} "
            "(run with --debug or DATAFUEL_DEBUG=1 for the traceback, and report it)"
        )
        code = EXIT_INTERNAL
    click.echo(_one_line(line), err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status.

    Every failure is one line on stderr (see the module's table) unless ``--debug``
    or ``DATAFUEL_DEBUG=1`` asks for the traceback, which then propagates.
    """
    global _debug
    _debug = _debug_from_env()
    try:
        code = cli.main(args=argv, prog_name="datafuel", standalone_mode=False)
        if type(code) is int:  # a verb's ctx.exit(N) (audit: 1 when it finds a leak)
            return code
    except click.exceptions.Abort as exc:
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        if interrupted and _debug:
            raise
        click.echo("datafuel: interrupted" if interrupted else "datafuel: aborted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:  # outside click's own handling (e.g. during teardown)
        if _debug:
            raise
        click.echo("datafuel: interrupted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # the contract: one line, never a traceback
        if _debug:
            raise
        return _report(exc)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
