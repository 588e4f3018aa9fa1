"""``datafuel build table``: a thin layer over :func:`datafuel.build.table`."""

from __future__ import annotations

import click

from datafuel import build
from datafuel.errors import ConfigError

from ._column_opts import column_options, parse_categorical
from ._common import (
    StageBars,
    dedup_options,
    echo_dedup,
    echo_json,
    echo_remote,
    overwrite_option,
    parse_fractions,
    stage_dir_option,
)
from ._engine_opts import engine_options, open_engine

__all__ = ["build_table"]


def _pair(text: str) -> tuple[float, float] | None:
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(p) for p in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--winsorize must be LOWER,UPPER quantiles like 0.01,0.99 or 'none'. Got {text!r}."
        ) from None
    return lo, hi


@click.command("table")
@click.argument("input_path", metavar="INPUT")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory, or a bucket URL (s3://bucket/prefix, gs://, az://).",
)
@click.option("--target", default=None, help="Target column, written as field `y` (not a feature).")
@click.option(
    "--split",
    "split_text",
    default="0.8,0.1,0.1",
    show_default=True,
    help="train,val,test fractions.",
)
@click.option("--split-by", default=None, help="Group column: no group in two splits.")
@click.option(
    "--split-key",
    default=None,
    help="Key column: stable hash split (rows keep their split as data grows).",
)
@click.option("--time-col", default=None, help="Time column: train before val before test.")
@click.option("--seed", default=0, show_default=True, type=int, help="Split seed.")
@click.option(
    "--drop",
    multiple=True,
    help="Column to leave out (repeatable); dropped from every part before they are merged.",
)
@click.option(
    "--keep",
    multiple=True,
    help="Column to store unchanged in its own shard field, not as a feature (repeatable), "
    "e.g. an id: numbers keep their dtype, text is UTF-8 bytes.",
)
@click.option(
    "--allow-id",
    multiple=True,
    help="Use this id-like column as a feature anyway (repeatable).",
)
@click.option(
    "--drop-missing-target",
    is_flag=True,
    help="Drop rows whose target is missing (counted per split) instead of refusing them.",
)
@click.option(
    "--max-missing",
    default=0.5,
    show_default=True,
    type=float,
    help="Drop rows with a larger missing fraction.",
)
@click.option(
    "--impute",
    type=click.Choice(["knn", "median", "mean", "none"]),
    default="knn",
    show_default=True,
)
@click.option(
    "--knn-k",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Neighbours for --impute knn.",
)
@click.option(
    "--winsorize",
    "winsorize_text",
    default="0.01,0.99",
    show_default=True,
    help="Per-column caps as quantiles LOWER,UPPER fitted on train, or 'none'.",
)
@click.option(
    "--clip-target/--no-clip-target",
    default=True,
    show_default=True,
    help="Cap the TRAIN targets (numeric, not labels) to the --winsorize quantiles of the "
    "train targets; val and test targets are never changed, so metrics stay against the "
    "true values. On by default because one absurd train target (a $999,000,000 typo) "
    "dominates a squared loss; the summary says how many were capped.",
)
@click.option(
    "--scale",
    type=click.Choice(["standard", "minmax", "none"]),
    default="standard",
    show_default=True,
)
@click.option(
    "--max-categories",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="One-hot text columns with at most this many distinct values; refuse others.",
)
@click.option(
    "--shard-bytes",
    default=64 << 20,
    show_default=True,
    type=click.IntRange(min=1),
    help="Close a shard once its data reaches this many bytes.",
)
@overwrite_option
@stage_dir_option
@dedup_options("table")
@column_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@engine_options
def build_table(
    input_path: str,
    out: str,
    target: str | None,
    split_text: str,
    split_by: str | None,
    split_key: str | None,
    time_col: str | None,
    seed: int,
    drop: tuple[str, ...],
    keep: tuple[str, ...],
    allow_id: tuple[str, ...],
    drop_missing_target: bool,
    max_missing: float,
    impute: str,
    knn_k: int,
    winsorize_text: str,
    clip_target: bool,
    scale: str,
    max_categories: int,
    categorical: tuple[str, ...],
    missing_indicators: bool,
    expand_dates: bool,
    shard_bytes: int,
    as_json: bool,
    overwrite: bool,
    stage_dir: str | None,
    dedup: str | None,
    dedup_keep: str,
    dedup_key: tuple[str, ...],
    engine: str,
    ray_address: str | None,
) -> None:
    """Read CSV/Parquet (a file or a directory of parts), split, fit on train, write shards.

    \b
    Steps: split (random, --split-by group, --split-key hash or --time-col order);
    then, fitted on the train split ONLY and applied unchanged to val and test:
    drop rows with more than --max-missing missing values; infinities count as
    missing; impute (KNN with sklearn's nan-euclidean distance, mean or median);
    winsorize each column to train quantile caps; scale (standard or min-max).
    Writes DIR/{train,val,test} (float32 `x`; `y` = --target: int64 class labels
    for a boolean or an integer target with at most --max-categories values, else
    float32; column names in the manifest metadata), DIR/recipe.json
    (+ .npy arrays for KNN donors) and DIR/split.json. Same arguments, same bytes.

    \b
    Columns: numbers and booleans are features; text columns with at most
    --max-categories distinct values are one-hot encoded (categories from train;
    unseen values encode as all zeros) after the numeric ones; a text column that is
    mostly numbers, any other text or a date/list column is refused, naming it.
    The target and the split column are not features. A column named `id`/`*_id`,
    or holding unique increasing integers, is refused as a feature: --drop it,
    --keep it (stored unchanged in its own field) or --allow-id it.

    \b
    Targets: val and test targets are written exactly as read (int64, or float32
    of the source value); only train targets are ever clipped (--clip-target).
    DIR/split.json lists which source rows (0-based, in shard order) each split
    holds, as runs: N is one row, [A, B] rows A..B-1.

    \b
    Ingest output (a directory with _state.json) is read with its unified schema;
    a column that drift widened to text but whose every value is a number is read
    back as numbers (the summary says so); a truly mixed one is refused, naming the
    value and its page (--drop it to build without it).

    \b
    Python equivalent:
      from datafuel import build
      build.table("houses.csv", "out", target="price", drop=["id"], engine="local")
    """
    fractions = parse_fractions(split_text)
    with open_engine(engine, ray_address) as runner, StageBars("row") as bars:
        summary = build.table(
            input_path,
            out,
            target=target,
            fractions=fractions,
            seed=seed,
            split_by=split_by,
            split_key=split_key,
            time_col=time_col,
            drop=drop,
            max_missing=max_missing,
            impute=impute,
            knn_k=knn_k,
            winsorize=_pair(winsorize_text),
            clip_target=clip_target,
            scale=scale,
            max_categories=max_categories,
            categorical=parse_categorical(categorical),
            missing_indicators=missing_indicators,
            expand_dates=expand_dates,
            shard_bytes=shard_bytes,
            engine=runner,
            on_progress=bars,
            overwrite=overwrite,
            stage_dir=stage_dir,
            dedup=dedup,
            dedup_keep=dedup_keep,
            dedup_key=list(dedup_key),
            keep=keep,
            allow_id=allow_id,
            drop_missing_target=drop_missing_target,
        )
    if as_json:
        echo_json(summary)
        return
    rows = summary["counts"]
    click.echo(
        f"wrote {out}: train {rows['train']}, val {rows['val']}, test {rows['test']} rows, "
        f"{len(summary['columns'])} features"
    )
    echo_dedup(summary, "row", out)
    echo_remote(summary)
    for col, kind in summary["coerced_columns"].items():
        click.echo(
            f"  {col}: widened to text by ingest drift, every value a number: read as {kind}"
        )
    if summary["clipped_train_targets"]:
        click.echo(f"  target: {summary['clipped_train_targets']} train target(s) clipped")
    missing = summary["dropped_missing_target"]
    if any(missing.values()):
        per = ", ".join(f"{k} {v}" for k, v in missing.items())
        click.echo(f"  target: rows with a missing target dropped: {per}")
    for entry in summary["fit_report"]:
        facts = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("step", "target"))
        click.echo(f"  {entry['step']}{' (target)' if entry.get('target') else ''}: {facts}")
