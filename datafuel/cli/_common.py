"""Helpers shared by the CLI verbs: progress bars, option parsing, JSON output."""

from __future__ import annotations

import json
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import click
from tqdm import tqdm

from datafuel.errors import ConfigError

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
) -> Any:
    """A tqdm bar on a terminal; silent when stderr is a pipe or a file."""
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not sys.stderr.isatty(),
        leave=False,
        dynamic_ncols=True,
    )


class StageBars:
    """A build's ``on_progress(stage, n, total)`` as one tqdm bar per stage (see :func:`progress`).

    Use as a context manager; the bars close on exit. On a terminal a ticker thread
    redraws the open bars every ``tick`` seconds, so a phase that reports rarely (or
    never, like the tokenizer trainer's merges) still shows its clock moving.
    """

    def __init__(self, unit: str = "it", tick: float = 0.5) -> None:
        self.unit = unit
        self.tick = tick
        self._bars: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, stage: str, n: int, total: int | None) -> None:
        with self._lock:
            bar = self._bars.get(stage)
            if bar is None:
                bar = self._bars[stage] = progress(total=total, desc=stage, unit=self.unit)
            if n:
                bar.update(n)

    def postfix(self, stage: str, text: str) -> None:
        """Show ``text`` after ``stage``'s bar (drawn at its next update or redraw)."""
        with self._lock:
            bar = self._bars.get(stage)
            if bar is not None and not bar.disable:
                bar.set_postfix_str(text, refresh=False)

    def _redraw(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                for bar in self._bars.values():
                    if not bar.disable:
                        bar.refresh()

    def __enter__(self) -> StageBars:
        if sys.stderr.isatty():
            self._ticker = threading.Thread(target=self._redraw, name="datafuel-bars", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()


#: ``--overwrite`` of every build verb (see :func:`datafuel.build._common.prepare_out`).
overwrite_option = click.option(
    "--overwrite",
    is_flag=True,
    help="OUT holds another kind of build: remove it first (only files datafuel wrote; "
    "refused if OUT holds other files). A rerun of the same build needs no flag.",
)


#: ``--stage-dir`` of every build verb (see :mod:`datafuel.build._remote_out`).
stage_dir_option = click.option(
    "--stage-dir",
    default=None,
    metavar="DIR",
    help="With --out s3://|gs://|az://...: build here, then upload [default: a folder "
    "named after the URL under ~/.cache/datafuel/stage]. A rerun uploads only what is "
    "missing.",
)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_HELP = (
    "a number of bytes, optionally with a K, M, G or T suffix (powers of 1024), like 512M or 8G"
)
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?")


def parse_size(text: str, *, option: str = "--cache-limit") -> int:
    """Bytes from ``8G``, ``512M``, ``64KiB``, ``1.5GB`` or plain ``1048576`` (K/M/G/T are
    powers of 1024); a clear ConfigError for anything else."""
    m = _SIZE.fullmatch(text.strip().lower())
    if m is None:
        raise ConfigError(f"{option} must be {_SIZE_HELP}. Got {text!r} instead.", field=option)
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


class SizeType(click.ParamType):
    """A byte count with an optional K/M/G/T suffix (see :func:`parse_size`)."""

    name = "bytes"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ConfigError:
            self.fail(f"expected {_SIZE_HELP}; got {value!r}.", param, ctx)


def cache_options(fn: Any) -> Any:
    """``--cache-dir`` and ``--cache-limit`` of a verb that reads a shard set (``inspect``,
    ``profile``): where a bucket URL's files are cached on this node, and how much."""
    fn = click.option(
        "--cache-limit",
        type=SizeType(),
        default=None,
        metavar="BYTES",
        help="For a bucket URL: most bytes the cache may hold (512M, 8G, or plain bytes) "
        "[default: no limit].",
    )(fn)
    return click.option(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="For a bucket URL (s3://, gs://, az://, https://): the node's shard cache "
        "[default: $DATAFUEL_CACHE_DIR, else ~/.cache/datafuel/shards].",
    )(fn)


def echo_remote(summary: dict[str, Any]) -> None:
    """One line on what a build to a bucket uploaded (nothing for a local build)."""
    r = summary.get("remote")
    if r:
        click.echo(
            f"uploaded {r['uploaded']} object(s), {r['uploaded_bytes'] / 1e6:.2f} MB, to "
            f"{r['url']} ({r['already_there']} already there; staged in {r['stage_dir']})"
        )


def parse_fractions(text: str, *, option: str = "--split") -> tuple[float, ...]:
    """Parse '0.8,0.1,0.1' into floats; the split module checks that they sum to 1."""
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(
            f"{option} must be comma-separated numbers like 0.8,0.1,0.1. Got {text!r} instead."
        ) from None
    return values


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, sort_keys=True, default=str))


def echo_dedup(summary: dict[str, Any], unit: str, out: Any) -> None:
    """One line on what ``--dedup`` found, when the build reported it (see build._dedup)."""
    d = summary.get("dedup")
    if not d:
        return
    click.echo(
        f"dedup ({d['method']}, keep {d['keep']}): {d['clusters']:,} cluster(s) of copies, "
        f"{d['duplicates']:,} duplicate {unit}(s), {d['moved']:,} moved to their cluster's "
        f"split, {d['dropped']:,} dropped -> {out}/{d['report']}"
    )


def iter_lines(items: Iterable[str]) -> Iterator[str]:
    yield from items


def dedup_options(kind: str) -> Any:
    """``--dedup`` and ``--dedup-keep`` of a build verb (tables: no ``near``; ``--dedup-key``)."""
    methods = ["none", "exact"] if kind == "table" else ["none", "exact", "near"]
    what = {
        "text": "equal after Unicode NFC and whitespace collapsing; near: MinHash LSH over word "
        "5-grams, Jaccard >= 0.8",
        "images": "the same decoded pixels; near: 64-bit DCT pHash within 10 bits (re-encodes, "
        "resizes, small crops, brightness)",
        "table": "rows equal on every feature column, or on the --dedup-key columns",
    }[kind]

    def wrap(fn: Any) -> Any:
        fn = click.option(
            "--dedup-keep",
            type=click.Choice(["all", "one"]),
            default="all",
            show_default=True,
            help="Keep every member of a duplicate cluster, or only its first.",
        )(fn)
        if kind == "table":
            fn = click.option(
                "--dedup-key",
                multiple=True,
                metavar="COL",
                help="Compare rows on this column only (repeatable) instead of every feature.",
            )(fn)
        return click.option(
            "--dedup",
            type=click.Choice(methods),
            default=None,
            help=f"Duplicate clusters that stay in one split [default: exact] (exact: {what}). "
            "Reported in dedup.json.",
        )(fn)

    return wrap
