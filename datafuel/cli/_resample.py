"""``datafuel resample``: semi-synthetic token resampling of a token shard set."""

from __future__ import annotations

import click

from datafuel import build
from datafuel.synthetic import format_report

from ._common import StageBars, echo_json, echo_remote, overwrite_option, stage_dir_option


@click.command("resample")
@click.argument("tokens_dir")
@click.option(
    "--out",
    required=True,
    help="Output directory for the resampled token shards, or a bucket URL (s3://bucket/prefix).",
)
@click.option(
    "--prior",
    default="ngram",
    show_default=True,
    help="'ngram' (fitted on TOKENS_DIR) or a local Hugging Face model directory (needs datafuel[transformers]).",
)
@click.option(
    "--threshold",
    type=float,
    default=0.99,
    show_default=True,
    help="Resample tokens whose prior probability is at least this.",
)
@click.option(
    "--top-k",
    type=int,
    default=8,
    show_default=True,
    help="Draw replacements from the prior's k most likely tokens.",
)
@click.option(
    "--temperature",
    type=float,
    default=1.5,
    show_default=True,
    help="Weights p**(1/temperature) over the top-k.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed; document i uses a generator seeded by (seed, i).",
)
@click.option(
    "--ngram-order", type=int, default=3, show_default=True, help="Order of the n-gram prior."
)
@click.option(
    "--device", default=None, help="Device of a model prior (default: cuda when available)."
)
@click.option(
    "--report-tokens",
    type=int,
    default=50_000,
    show_default=True,
    help="Size of the diversity comparison sample.",
)
@overwrite_option
@stage_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def resample(
    tokens_dir: str,
    out: str,
    prior: str,
    threshold: float,
    top_k: int,
    temperature: float,
    seed: int,
    ngram_order: int,
    device: str | None,
    report_tokens: int,
    as_json: bool,
    overwrite: bool,
    stage_dir: str | None,
) -> None:
    """Semi-synthetic token resampling: redraw tokens a frozen prior finds near-certain.

    One teacher-forced pass of the prior gives P(x_i | x_<i) on the original prefix;
    tokens with P >= --threshold are redrawn from the prior's top-k with weights
    p**(1/temperature); all other tokens, each document's first token and every
    end-of-document token stay (Zhu et al., arXiv 2412.14689). Writes a shard set with
    the same document boundaries plus OUT/resample_report.json and a summary comparing
    the diversity of the original, the resampled data and a purely synthetic sample.
    Rerunning an interrupted run skips finished shards. In Python:

        datafuel.build.resample("out/train", "out/train-resampled", seed=0)
    """
    with StageBars("doc") as bars:
        summary = build.resample(
            tokens_dir,
            out,
            prior=prior,
            threshold=threshold,
            top_k=top_k,
            temperature=temperature,
            seed=seed,
            ngram_order=ngram_order,
            device=device,
            report_tokens=report_tokens,
            on_progress=bars,
            overwrite=overwrite,
            stage_dir=stage_dir,
        )
    if as_json:
        echo_json(summary)
        return
    report = summary["report"]
    click.echo(format_report(report))
    if report.get("resumed"):
        click.echo(f"({report['resumed']})")
    elif report.get("shards_resumed"):
        click.echo(f"({report['shards_resumed']} shard(s) were already done and skipped)")
    click.echo(f"wrote {out} and {out}/resample_report.json")
    echo_remote(summary)
