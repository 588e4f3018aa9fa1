"""``datafuel apply``: a thin layer over :func:`datafuel.build.apply`."""

from __future__ import annotations

import click

from datafuel import build

from ._common import StageBars, echo_json
from ._engine_opts import engine_options, open_engine

__all__ = ["apply_cmd"]


@click.command("apply")
@click.argument("recipe", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.argument("input_path", metavar="INPUT")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output shard set.")
@click.option(
    "--shard-bytes",
    default=64 << 20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Close a shard once its data reaches this many bytes.",
)
@click.option(
    "--keep",
    "keep",
    multiple=True,
    metavar="COL",
    help="Store this column unchanged as its own field (repeatable). Default: the columns "
    "the build kept.",
)
@click.option("--no-keep", is_flag=True, help="Keep no column, not even the build's --keep ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@engine_options
def apply_cmd(
    recipe: str,
    input_path: str,
    out: str,
    shard_bytes: int,
    keep: tuple[str, ...],
    no_keep: bool,
    as_json: bool,
    engine: str,
    ray_address: str | None,
) -> None:
    """Turn new rows (INPUT: CSV/Parquet, or a directory of parts) into one shard set with
    the RECIPE (OUT/recipe.json) a `datafuel build table` wrote, unchanged.

    \b
    Same columns, same fields and dtypes as the build's splits: float32 `x` (numeric
    features through the fitted clean/scale steps, one-hot columns with the train
    categories, missing indicators) and int64 `cat` when the build wrote codes; the
    target is not needed and not written. A fitted column that is missing or of
    another kind (text where a number was fitted, ...) is refused, naming it. The
    build's --keep columns (ids) are stored unchanged too, unless --keep or --no-keep
    says otherwise.

    \b
    Python equivalent:
      from datafuel import build
      build.apply("out/recipe.json", "new.csv", "scored")
    """
    if keep and no_keep:
        raise click.UsageError("--keep and --no-keep contradict each other; pass one.")
    with open_engine(engine, ray_address) as runner, StageBars("row") as bars:
        summary = build.apply(
            recipe,
            input_path,
            out,
            engine=runner,
            on_progress=bars,
            shard_bytes=shard_bytes,
            keep=[] if no_keep else (list(keep) or None),
        )
    if as_json:
        echo_json(summary)
        return
    click.echo(
        f"wrote {out}: {summary['counts']['data']} rows, {len(summary['columns'])} features"
        + (f" ({summary['skipped']} rows dropped by the recipe)" if summary["skipped"] else "")
    )
