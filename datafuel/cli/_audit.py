"""``datafuel audit``: duplicates across shard sets; exit status 1 when any is found."""

from __future__ import annotations

import click

from datafuel import build

from ._common import echo_json


@click.command("audit")
@click.argument("sets", nargs=-1, required=True)
@click.option(
    "--dedup", "method", type=click.Choice(["exact", "near"]), default="near", show_default=True
)
@click.option("--worst", type=int, default=20, show_default=True, help="Pairs to list.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON object.")
@click.option(
    "--html",
    "html",
    default=None,
    metavar="FILE",
    help="Also write the pairs as one self-contained HTML page (thumbnails, marked text).",
)
def audit_cmd(
    sets: tuple[str, ...], method: str, worst: int, as_json: bool, html: str | None
) -> None:
    """Exact and near duplicates across OUT_DIR's train/val/test, or across SET_DIR...

    Exit status 1 when any record has a copy in another set. The same in Python:
    datafuel.build.audit(["out"]).
    """
    result = build.audit(list(sets), method=method, worst=worst, html=html)
    if as_json:
        echo_json(result)
    else:
        for path, n in result["sets"].items():
            click.echo(f"{path}: {n:,} {result['kind']} records")
        click.echo(
            f"{result['cross_clusters']} cluster(s) across sets, {result['cross_pairs']} pair(s)"
        )
        for p in result["pairs"]:
            a, b = p["a"], p["b"]
            click.echo(
                f"  {p['similarity']:.3f}  {a['set']}[{a['index']}]  {b['set']}[{b['index']}]"
            )
        if html is not None:
            click.echo(f"wrote {html}")
    if result["leaked"]:
        click.get_current_context().exit(1)  # CI gates on it
