"""``datafuel profile``: loader throughput and GPU starvation against a simulated step."""

from __future__ import annotations

import os
from typing import Any

import click

from datafuel import build

from ._common import StageBars, cache_options, echo_json

__all__ = ["profile"]


@click.command("profile")
@click.argument("shards_dir", type=click.Path(file_okay=False, path_type=str))
@click.option("--batch-size", type=int, default=256, show_default=True, help="Samples per batch.")
@click.option("--seq-len", type=int, default=None, help="Token windows of T+1 tokens (LM data).")
@click.option(
    "--token-field", default="tokens", show_default=True, help="Ragged token field for --seq-len."
)
@click.option(
    "--step-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Simulated training step per batch in ms (0: as fast as the loader goes; "
    "throughput only, starvation needs a step time).",
)
@click.option(
    "--step-kind",
    type=click.Choice(["sleep", "gil"]),
    default="sleep",
    show_default=True,
    help="How the step spends its time: asleep, or running pure Python that holds the GIL "
    "(as a real training loop does while it launches kernels).",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Loader worker threads.")
@click.option("--prefetch", type=int, default=4, show_default=True, help="Batches prepared ahead.")
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where batches go (cuda: pinned buffers, async copies).",
)
@click.option(
    "--decode",
    type=click.Choice(["cpu", "dali"]),
    default=None,
    help="Decode + augment encoded images with the vision stage (image shard sets).",
)
@click.option("--size", type=int, default=224, show_default=True, help="Image size for --decode.")
@click.option(
    "--processes",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="--decode cpu: decode in this many worker processes (scales past ~4 cores; 0: threads).",
)
@click.option("--epochs", type=int, default=1, show_default=True, help="Epochs to run.")
@click.option("--batches", type=int, default=None, help="Stop after this many batches instead.")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffle seed.")
@click.option(
    "--trace",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Write the run's per-stage spans as a Chrome/Perfetto trace (open in ui.perfetto.dev).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=str),
    default=None,
    help="Draw the run into this PNG (1200 x 900): the loop's heartbeat (busy or waiting for "
    "data), throughput over time, each worker's time per stage (needs matplotlib: "
    "pip install 'datafuel[plot]').",
)
@cache_options
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON object.")
def profile(
    shards_dir: str,
    batch_size: int,
    seq_len: int | None,
    token_field: str,
    step_ms: float,
    step_kind: str,
    workers: int,
    prefetch: int,
    device: str,
    decode: str | None,
    size: int,
    processes: int,
    epochs: int,
    batches: int | None,
    seed: int,
    trace: str | None,
    plot: str | None,
    cache_dir: str | None,
    cache_limit: int | None,
    as_json: bool,
) -> None:
    """Run the loader over SHARDS_DIR against a simulated training step; report throughput and GPU starvation.

    Starvation is the fraction of wall time the training loop spent waiting inside
    next() for data (0: never waited, 1: only waited); it is measured against
    --step-ms (your training step's time): with the default 0 the report gives
    throughput only. SHARDS_DIR is one shard set (a build's OUT/train, not OUT), or a
    bucket URL (s3://bucket/prefix, gs://, az://, https://) read through the node's
    cache (--cache-dir, --cache-limit), as a Loader given the URL reads it.
    Per stage (gather, transform, finite check, collate, copy) it gives the time
    per batch and its share of the loop's wait, names the bottleneck with one line
    of advice, --trace FILE writes a Perfetto trace and --plot FILE a PNG of the run.
    On a terminal the bar shows the live samples/s and wait share.
    With --decode cpu it names the active PIL (pillow-simd or stock Pillow). In Python:
    datafuel.build.profile(SHARDS_DIR, batch_size=B, seq_len=T, step_ms=MS); by hand:

        loader = datafuel.loaders.Loader(SHARDS_DIR, B, seq_len=T, num_workers=N)
        for batch in loader: step(batch)
        print(loader.stats())
    """
    with StageBars("batch") as bars:
        r = build.profile(
            shards_dir,
            batch_size=batch_size,
            seq_len=seq_len,
            token_field=token_field,
            step_ms=step_ms,
            step_kind=step_kind,
            workers=workers,
            prefetch=prefetch,
            device=device,
            decode=decode,
            size=size,
            processes=processes,
            epochs=epochs,
            batches=batches,
            seed=seed,
            on_progress=bars,
            trace=trace,
            plot=plot,
            on_rate=lambda r: bars.postfix("profile", live_rate(r)),
            cache_dir=cache_dir,
            cache_limit=cache_limit,
        )
    if as_json:
        echo_json(r)
        return
    click.echo(
        f"{r.get('path', shards_dir)}: {r['batches']} batches of {batch_size}"
        + (f" windows of {seq_len + 1} tokens" if seq_len else "")
        + f" on {device}, step {step_ms:g} ms ({step_kind}), {workers} workers"
        + (f", {processes} decode processes" if processes else "")
    )
    click.echo(f"  samples/s   {r['samples_per_s']:,.0f}")
    click.echo(f"  MB/s        {r['bytes_per_s'] / 1e6:,.1f}")
    starvation = r["starvation"]
    if starvation is None:
        click.echo(f"  starvation  {r.get('starvation_note', 'not measured: pass --step-ms MS')}")
        click.echo(f"  per batch   p50 {r['wait_p50_ms']:.3f} ms   p95 {r['wait_p95_ms']:.3f} ms")
    else:
        click.echo(
            f"  starvation  {starvation:.3f}  ({100 * starvation:.1f}% of wall time waiting for data)"
        )
        click.echo(f"  wait p50    {r['wait_p50_ms']:.3f} ms   p95 {r['wait_p95_ms']:.3f} ms")
    _echo_stages(r)
    remote = r.get("remote")
    if remote:
        c, st = remote["cache"], remote["store"]
        click.echo(
            f"  cache       {c['downloads']} download(s), {c['bytes_downloaded'] / 1e6:,.2f} MB, "
            f"{c['hits']} hit(s), {c['evictions']} eviction(s), {st['retries']} retried "
            f"request(s) ({remote['cache_dir']})"
        )
    if decode == "cpu":
        from datafuel.vision._cpu import pil_build_line

        click.echo(f"  {pil_build_line()}")
    cores = os.cpu_count() or 1
    if (
        decode == "cpu"
        and not processes
        and cores > 4
        and (starvation is None or starvation > 0.05)
    ):
        click.echo(
            f"  hint: on {cores} cores the CPU image path stalls on the GIL with threads; "
            f"try --processes {cores - 2}"
        )


def _echo_stages(r: dict[str, Any]) -> None:
    """The per-stage table, the bottleneck and its advice, and where the trace went."""
    stages = r.get("stages")
    if not stages:
        return
    click.echo("  stage       ms/batch  worker  wait")
    for name, v in stages.items():
        if v["ms_per_batch"] or v["wait_share"]:
            click.echo(
                f"    {name:<9} {v['ms_per_batch']:8.3f}  {100 * v['worker_share']:5.1f}%"
                f"  {100 * v['wait_share']:5.1f}%"
            )
    click.echo(f"  bottleneck  {r['bottleneck']}: {r['advice']}")
    if r.get("trace"):
        click.echo(f"  trace       {r['trace']} (open in https://ui.perfetto.dev)")
    if r.get("plot"):
        click.echo(f"  plot        {r['plot']}")


def live_rate(rate: dict[str, float]) -> str:
    """The bar's postfix: ``12,345 samples/s, wait 3.1%``."""
    return f"{rate['samples_per_s']:,.0f} samples/s, wait {100 * rate['wait_share']:.1f}%"
