"""``datafuel build text``: documents -> split -> BPE fitted on train -> token shard sets."""

from __future__ import annotations

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


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise click.BadParameter(f"expected a size like 64MB or 1048576, got {text!r}") from None


@click.command("text")
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--out",
    required=True,
    help="Output directory (DIR/train, DIR/val, DIR/test, tokenizer.json, split.json), or a "
    "bucket URL (s3://bucket/prefix, gs://, az://).",
)
@click.option(
    "--vocab-size",
    type=int,
    default=None,
    help="Train a byte-level BPE of this size on the train split [default: 8192].",
)
@click.option(
    "--tokenizer",
    "tokenizer_file",
    default=None,
    help="Use this tokenizer.json instead of training one.",
)
@click.option(
    "--split",
    "split_text",
    default="0.8,0.1,0.1",
    show_default=True,
    help="Train,val,test fractions of documents.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Salt of the document hash that assigns splits.",
)
@click.option(
    "--text-field",
    default="text",
    show_default=True,
    help="Field of each .jsonl object, or column of a Parquet/Arrow/HF dataset, holding the text.",
)
@click.option(
    "--txt-mode",
    type=click.Choice(["file", "paragraph"]),
    default="file",
    show_default=True,
    help="A .txt file is one document, or one per blank-line-separated block.",
)
@click.option("--shard-bytes", default="64MB", show_default=True, help="Target shard size.")
@overwrite_option
@stage_dir_option
@dedup_options("text")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@engine_options
def build_text(
    inputs: tuple[str, ...],
    out: str,
    vocab_size: int | None,
    tokenizer_file: str | None,
    split_text: str,
    seed: int,
    text_field: str,
    txt_mode: str,
    shard_bytes: str,
    as_json: bool,
    overwrite: bool,
    stage_dir: str | None,
    dedup: str | None,
    dedup_keep: str,
    engine: str,
    ray_address: str | None,
) -> None:
    """Split documents, train or load a byte-level BPE tokenizer on train, write token shards.

    INPUT is any mix of .txt files, .jsonl files (one document per line, text in
    --text-field), Parquet (.parquet) and Arrow IPC / Feather v2 (.arrow, .feather)
    files (one document per row, text in the string column --text-field), directories
    of them, and Hugging Face datasets saved with save_to_disk (read offline through
    the 'hf' extra: pip install 'datafuel[hf]'). A missing or non-string text field,
    or a null, is an error naming the file and row. Documents go to train/val/test by a stable
    hash of their text (whole documents; duplicates never straddle splits). The
    tokenizer is trained on train documents only. Each split is a shard set with one
    ragged field "tokens" (uint16, or uint32 for vocabularies of 65,535+ ids), one row
    per document ending with the end-of-document token. Invalid UTF-8 becomes U+FFFD
    (counted). The same run in Python:

        datafuel.build.text(["corpus/"], "out", vocab_size=8192, fractions=(0.8, 0.1, 0.1))

    Train on it with datafuel.loaders.Loader("out/train", batch_size=B, seq_len=T).
    """
    fractions = parse_fractions(split_text)
    with open_engine(engine, ray_address) as runner, StageBars("doc") as bars:
        summary = build.text(
            list(inputs),
            out,
            vocab_size=vocab_size,
            tokenizer=tokenizer_file,
            fractions=fractions,
            seed=seed,
            text_field=text_field,
            txt_mode=txt_mode,  # type: ignore[arg-type]
            shard_bytes=_size(shard_bytes),
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
    c = summary["corpus"]
    click.echo(
        f"read {c['documents']:,} documents from {c['files']} file(s), {c['bytes'] / 1e6:.2f} MB"
        + (
            f"; {c['replaced']} invalid UTF-8 sequence(s) replaced by U+FFFD"
            if c["replaced"]
            else ""
        )
        + (f"; {c['empty']} empty document(s) skipped" if c["empty"] else "")
    )
    how = "trained on train" if summary["tokenizer_trained"] else "given"
    click.echo(
        f"tokenizer: {summary['vocab_size']} ids ({how}), EOT id {summary['eot_id']}, "
        f"{summary['token_dtype']}, sha256 {summary['tokenizer_sha256'][:16]}"
    )
    for name in ("train", "val", "test"):
        if name not in summary["counts"]:
            continue
        docs, tokens = summary["counts"][name], summary["tokens"][name]
        click.echo(f"{name:5s}: {docs:,} documents, {tokens:,} tokens -> {out}/{name}")
    echo_dedup(summary, "document", out)
    echo_remote(summary)
    if summary.get("resumed"):
        click.echo("(already built with these arguments; nothing to do)")
    else:
        click.echo(f"done in {summary['seconds']['total']:.2f} s")
