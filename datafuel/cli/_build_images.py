"""``datafuel build images``: an ImageFolder tree -> train/val/test image shard sets."""

from __future__ import annotations

from pathlib import Path

import click

from datafuel import build

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


@click.command("images")
@click.argument("input_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output directory, or a bucket URL (s3://bucket/prefix, gs://, az://).",
)
@click.option(
    "--split", "split", default="0.8,0.1,0.1", show_default=True, help="train,val,test fractions."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Split seed.")
@click.option(
    "--on-error",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="Unreadable files: fail naming the file, or skip them and list them in DIR/skipped.json.",
)
@click.option(
    "--max-side",
    type=click.IntRange(min=1),
    default=None,
    help="Re-encode images whose longer side exceeds N pixels (default: keep the original bytes).",
)
@click.option(
    "--shard-bytes",
    type=click.IntRange(min=1),
    default=256 << 20,
    show_default=True,
    help="Close a shard once its data reaches this many bytes.",
)
@click.option(
    "--stratify", is_flag=True, help="Split each class separately (keeps class proportions)."
)
@overwrite_option
@stage_dir_option
@dedup_options("images")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@engine_options
def build_images(
    input_dir: Path,
    out: str,
    split: str,
    seed: int,
    on_error: str,
    max_side: int | None,
    shard_bytes: int,
    stratify: bool,
    as_json: bool,
    overwrite: bool,
    stage_dir: str | None,
    dedup: str | None,
    dedup_keep: str,
    engine: str,
    ray_address: str | None,
) -> None:
    """Read an ImageFolder tree (one sub-folder per class), split, and write image shards.

    Every file is decoded once to validate it; the shards keep the original encoded
    bytes (field `image`; older builds called it `jpeg`, still read) and an int64
    `label`; class names go in the manifest metadata. Writes OUT/train, OUT/val,
    OUT/test, OUT/split.json, OUT/skipped.json.

    Python: datafuel.build.images(INPUT_DIR, OUT, fractions=(0.8, 0.1, 0.1), seed=0,
    on_error="fail", max_side=None, stratify=False, engine="local").
    """
    with open_engine(engine, ray_address) as runner, StageBars("file") as bars:
        summary = build.images(
            input_dir,
            out,
            fractions=parse_fractions(split),
            seed=seed,
            on_error=on_error,
            max_side=max_side,
            shard_bytes=shard_bytes,
            stratify=stratify,
            engine=runner,
            on_progress=bars,
            overwrite=overwrite,
            stage_dir=stage_dir,
            dedup=dedup,
            dedup_keep=dedup_keep,
        )
    if as_json:
        echo_json(summary)
        return
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    click.echo(
        f"wrote {summary['total']} images of {len(summary['classes'])} classes to {out} ({counts}); "
        f"skipped {summary['skipped']}"
        + (f" (listed in {out}/skipped.json)" if summary["skipped"] else "")
    )
    echo_dedup(summary, "image", out)
    echo_remote(summary)
