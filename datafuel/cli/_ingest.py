"""``datafuel ingest``: a paginated REST API -> a Parquet dataset directory, resumably.

The command is one call to :func:`datafuel.ingest.ingest`::

    ingest(URL, DIR, paginate=..., records_path=..., primary_key=..., max_pages=...,
           rate=..., headers={...}, page_size=..., max_attempts=...,
           allow_origins=(...), secret_params=(...), max_response_bytes=...,
           max_depth=..., request_deadline=..., concurrency=..., total_field=...)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import click

from datafuel.errors import ConfigError
from datafuel.ingest import IngestProgress, IngestResult
from datafuel.ingest import ingest as ingest_api
from datafuel.ingest._html import HtmlSpec, parse_field
from datafuel.ingest._ingest import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from datafuel.ingest._limits import (
    DEFAULT_DEADLINE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_DEPTH,
    MAX_DEPTH_LIMIT,
)

from ._common import echo_json, progress

__all__ = ["ingest", "parse_header"]


def parse_header(text: str) -> tuple[str, str]:
    """``'Name: value'`` -> ``("Name", "value")``; the value is never echoed back."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c.isspace() for c in name):
        raise ConfigError(
            f"--header must look like 'Name: value'. Got a header named {name!r}"
            + ("" if sep else " with no ':'")
            + " instead."
        )
    return name, value.strip()


def _summary(r: IngestResult) -> str:
    parts = [
        f"{r.pages} page(s)",
        f"{r.records} record(s)",
        f"{r.retries} retr{'y' if r.retries == 1 else 'ies'}",
        f"{r.drift_events} drift event(s)",
    ]
    if r.duplicates:
        parts.append(f"{r.duplicates} duplicate(s) dropped")
    return ", ".join(parts)


@click.command("ingest")
@click.argument("url")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory: Parquet parts, _state.json, _drift.jsonl.",
)
@click.option(
    "--paginate",
    default="page",
    show_default=True,
    help="page | offset | cursor:FIELD | link (RFC 8288 Link rel=next).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=MAX_CONCURRENCY),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Pages in flight for page and offset pagination (committed in page order, exactly "
    "once). Cursor and link pagination are sequential by nature (each request needs the last "
    "answer) and ignore it. An empty page or 204, a 404 past the first page, or --total-field "
    "ends the listing (a short page does not: pages may vary in size; with offsets, more "
    "records after a short page are an error); 429s halve it (AIMD). Use 1 for an API that "
    "shifts while paged.",
)
@click.option(
    "--total-field",
    default=None,
    metavar="PATH",
    help="Dotted path to the total record count in the body (e.g. total): with --concurrency "
    "> 1, no page past the last one it implies is requested.",
)
@click.option(
    "--html",
    "html_mode",
    is_flag=True,
    help="The pages are HTML listings: records from --select/--field, the next page from "
    "--next; robots.txt is obeyed and --rate defaults to 1/s.",
)
@click.option("--select", "select", default=None, metavar="CSS", help="HTML: one record's element.")
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="NAME=SELECTOR",
    help="HTML: a column from CSS, CSS::text or CSS::attr(NAME) inside the record (repeatable).",
)
@click.option(
    "--next", "next_sel", default=None, metavar="SELECTOR", help="HTML: the next page's link."
)
@click.option(
    "--on-empty",
    type=click.Choice(["fail", "skip"]),
    default="skip",
    show_default=True,
    help="HTML: a page --select matches nothing on (layout drift, in _drift.jsonl).",
)
@click.option(
    "--ignore-robots", is_flag=True, help="HTML: do not read robots.txt (a warning is logged)."
)
@click.option(
    "--incremental",
    default=None,
    metavar="FIELD",
    help="Keep the highest committed value of FIELD (e.g. updated_at, id); run again on a "
    "finished OUT to fetch only newer records (sent as --since-param) into new parts.",
)
@click.option(
    "--since-param",
    default=None,
    metavar="NAME",
    help="Query parameter carrying the --incremental high value (default: the field name).",
)
@click.option(
    "--records-path",
    default=None,
    help="Dotted path to the records list in the body, e.g. data.items (default: the body is the list).",
)
@click.option(
    "--primary-key",
    default=None,
    help="Drop records whose value in this (flattened) column was already written.",
)
@click.option(
    "--max-pages",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N pages; rerun with a larger N or without it to go on.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Client-side limit, requests per second (retries count).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="Extra request header (repeatable); values are never written to disk or logs.",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    default=None,
    help="Page size sent to the API (page_size for page, limit otherwise).",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Attempts per page before giving up (checkpoint kept, exit 1).",
)
@click.option(
    "--retry-base",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="First backoff ceiling in seconds (doubles per attempt, full jitter, cap 30 s).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds per request.",
)
@click.option(
    "--allow-origin",
    "allow_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Another origin (https://host[:port]) that may receive the --header values (repeatable); "
    "by default they go only to the URL's own origin, never after a redirect or to a next-page "
    "URL elsewhere.",
)
@click.option(
    "--secret-param",
    "secret_params",
    multiple=True,
    metavar="NAME",
    help="A query parameter to write and print as *** (repeatable), besides key, api_key, "
    "apikey, token, access_token, secret, password, signature, sig and names ending in _KEY, "
    "_TOKEN... The value is still sent.",
)
@click.option(
    "--max-page-bytes",
    "--max-response-bytes",
    "max_response_bytes",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_BYTES,
    show_default=True,
    help="Largest response body after decompression; a larger one (a gzip bomb) is cut off.",
)
@click.option(
    "--max-depth",
    type=click.IntRange(min=1, max=MAX_DEPTH_LIMIT),
    default=DEFAULT_MAX_DEPTH,
    show_default=True,
    help="Deepest JSON nesting accepted in a response.",
)
@click.option(
    "--request-deadline",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_DEADLINE,
    show_default=True,
    help="Seconds of wall clock per request, redirects and a slow trickle included (retried "
    "like a timeout).",
)
@click.option(
    "--no-fsync",
    is_flag=True,
    help="Skip fsync per page: faster; still exactly-once across process kills, not across power loss.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="Log retries and drift events to stderr.")
def ingest(
    url: str,
    out: str,
    paginate: str,
    concurrency: int,
    total_field: str | None,
    html_mode: bool,
    select: str | None,
    fields: tuple[str, ...],
    next_sel: str | None,
    on_empty: str,
    ignore_robots: bool,
    incremental: str | None,
    since_param: str | None,
    records_path: str | None,
    primary_key: str | None,
    max_pages: int | None,
    rate: float | None,
    headers: tuple[str, ...],
    page_size: int | None,
    max_attempts: int,
    retry_base: float,
    timeout: float,
    allow_origins: tuple[str, ...],
    secret_params: tuple[str, ...],
    max_response_bytes: int,
    max_depth: int,
    request_deadline: float,
    no_fsync: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Pull records from a paginated REST API into Parquet, resumably, exactly once.

    Every page becomes OUT/part-NNNNNNNN.parquet (written and fsynced) before
    OUT/_state.json records the next request, so a kill at any moment followed by the
    same command again gives exactly the records of an uninterrupted run. Nested
    objects become parent.child columns, lists JSON text; type changes and new or
    missing fields are logged in OUT/_drift.jsonl. Read the result with
    datafuel.ingest.read_ingested(OUT) or `datafuel build table OUT`.

    \b
    Example:
      datafuel ingest https://api.example.com/listings --out data/listings \\
        --paginate cursor:next --records-path data.items --primary-key id \\
        --rate 5 --header "Authorization: Bearer $TOKEN"

    Headers go only to the URL's origin (and --allow-origin ones); secret query
    values (api_key=..., token=..., --secret-param NAME) are written and printed as
    ***; one ingest at a time per OUT (a second gets an error naming the pid).
    """
    header_map = dict(parse_header(h) for h in headers)
    html = None
    if html_mode:
        html = HtmlSpec(
            select or "", dict(parse_field(f) for f in fields), next_sel, on_empty=on_empty
        )
    with _verbose_log(verbose), _progress_bar(max_pages) as on_progress:
        result = ingest_api(
            url,
            out,
            paginate=paginate,
            records_path=records_path,
            primary_key=primary_key,
            max_pages=max_pages,
            page_size=page_size,
            rate=rate,
            headers=header_map,
            max_attempts=max_attempts,
            retry_base=retry_base,
            timeout=timeout,
            allow_origins=allow_origins,
            secret_params=secret_params,
            max_response_bytes=max_response_bytes,
            max_depth=max_depth,
            request_deadline=request_deadline,
            fsync=not no_fsync,
            on_progress=on_progress,
            concurrency=concurrency,
            total_field=total_field,
            incremental=incremental,
            since_param=since_param,
            html=html,
            ignore_robots=ignore_robots,
        )
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(_report(result, out))


@contextlib.contextmanager
def _verbose_log(verbose: bool) -> Iterator[None]:
    """With ``verbose``, the ingest log (retries, drift) goes to stderr while the block runs."""
    if not verbose:
        yield
        return
    logger = logging.getLogger("datafuel.ingest")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("datafuel: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)


@contextlib.contextmanager
def _progress_bar(max_pages: int | None) -> Iterator[Callable[[IngestProgress], None]]:
    """A page progress bar, closed on exit, and the ``on_progress`` callback that moves it."""
    bar = progress(total=max_pages, desc="ingest", unit="page")

    def on_progress(p: IngestProgress) -> None:
        bar.update(p.pages - bar.n)
        bar.set_postfix(records=p.records, retries=p.retries, refresh=False)

    try:
        yield on_progress
    finally:
        bar.close()


def _report(result: IngestResult, out: str) -> str:
    """The one line printed after a run."""
    if result.already_done:
        what = "finished" if result.status == "done" else f"stopped at {result.stop_reason}"
        return f"{out}: ingest already {what} ({_summary(result)}); nothing to do"
    verb = "resumed and ingested" if result.resumed else "ingested"
    end = "the listing ended" if result.status == "done" else "stopped"
    return (
        f"{verb} {result.new_pages} page(s), {result.new_records} record(s) this run; "
        f"{end} ({result.stop_reason}); total {_summary(result)} in {out}"
    )
