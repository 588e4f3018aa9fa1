"""``datafuel profile``: loader throughput and GPU starvation against a simulated step."""

from __future__ import annotations

import os
import time
from typing import Any

import click

from datafuel.errors import ConfigError
from datafuel.loaders import Loader, ShardSet

from ._common import echo_json, progress

__all__ = ["profile", "run_profile"]


def _image_transform(
    shards: ShardSet, backend: str, size: int, seed: int, processes: int = 0
) -> Any:
    try:
        from datafuel.vision import loader_transform
    except ImportError as exc:
        raise ConfigError(
            f"--decode {backend}: the image path is unavailable in this version "
            "(datafuel.vision does not provide loader_transform)."
        ) from exc
    if processes and backend != "cpu":
        raise ConfigError(
            f"--processes is for --decode cpu (DALI has its own threads); got --decode {backend}."
        )
    return loader_transform(shards, backend, train=True, size=size, seed=seed, processes=processes)


def run_profile(
    shards_dir: str,
    *,
    batch_size: int = 256,
    seq_len: int | None = None,
    token_field: str = "tokens",
    step_ms: float = 0.0,
    workers: int = 2,
    prefetch: int = 4,
    device: str = "cpu",
    decode: str | None = None,
    size: int = 224,
    processes: int = 0,
    epochs: int = 1,
    batches: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Drive a :class:`~datafuel.loaders.Loader` with a simulated training step.

    The step sleeps ``step_ms`` milliseconds per batch (on CUDA it first waits for the
    batch's copy, as a real step would). Runs ``epochs`` epochs, or stops after
    ``batches`` batches. Returns the loader's starvation report plus the settings.
    ``processes`` (with ``decode="cpu"``): decode images in that many worker processes.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import write_shards
    >>> d = tempfile.mkdtemp()
    >>> _ = write_shards(d, x=np.zeros((64, 4), np.float32))
    >>> r = run_profile(d, batch_size=16, step_ms=1)
    >>> r["batches"], 0.0 <= r["starvation"] <= 1.0
    (4, True)
    """
    if step_ms < 0:
        raise ConfigError(f"--step-ms must be >= 0. Got {step_ms} instead.")
    if epochs < 1:
        raise ConfigError(f"--epochs must be >= 1. Got {epochs} instead.")
    if batches is not None and batches < 1:
        raise ConfigError(f"--batches must be >= 1. Got {batches} instead.")
    shards = ShardSet(shards_dir)
    transform = None
    fields = None
    if decode is not None:
        if seq_len is not None:
            raise ConfigError("--decode (images) and --seq-len (token windows) exclude each other.")
        transform = _image_transform(shards, decode, size, seed, processes)
    elif seq_len is None:
        fields = [n for n, f in shards.fields.items() if f.kind == "fixed"]
        encoded = sorted(n for n, f in shards.fields.items() if f.kind == "bytes")
        if encoded:
            raise ConfigError(
                f"{shards_dir}: bytes field(s) {encoded} (encoded images?) need decoding; "
                "pass --decode cpu|dali.",
                path=shards_dir,
            )
        if not fields:
            raise ConfigError(
                f"{shards_dir}: only variable-length fields {sorted(shards.fields)}; "
                "pass --seq-len T for token windows.",
                path=shards_dir,
            )
    loader = Loader(
        shards,
        batch_size,
        seed=seed,
        num_workers=workers,
        prefetch=prefetch,
        device=None if device == "cpu" else device,
        transform=transform,
        seq_len=seq_len,
        token_field=token_field,
        fields=fields,
    )
    total = len(loader) * epochs if batches is None else batches
    step_s = step_ms / 1000.0
    cuda = device.startswith("cuda")
    done = 0
    t0 = time.perf_counter()
    with loader, progress(total=total, desc="profile", unit="batch") as bar:
        while done < total:
            progressed = False
            for batch in loader:
                progressed = True
                if cuda:
                    import torch

                    torch.cuda.current_stream().synchronize()  # the step needs the data
                if step_s:
                    time.sleep(step_s)
                del batch
                done += 1
                bar.update(1)
                if done >= total:
                    break
            if not progressed:
                break
    elapsed = time.perf_counter() - t0
    close = getattr(transform, "close", None)
    if close is not None:
        close()
    report = loader.stats().to_dict()
    report.update(
        {
            "path": shards_dir,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "step_ms": step_ms,
            "workers": workers,
            "prefetch": prefetch,
            "device": device,
            "decode": decode,
            "processes": processes,
            "elapsed_s": elapsed,
            "batches_per_epoch": len(loader),
        }
    )
    return report


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
    help="Simulated training step per batch in ms (0: as fast as the loader goes).",
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
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON object.")
def profile(
    shards_dir: str,
    batch_size: int,
    seq_len: int | None,
    token_field: str,
    step_ms: float,
    workers: int,
    prefetch: int,
    device: str,
    decode: str | None,
    size: int,
    processes: int,
    epochs: int,
    batches: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Run the loader over SHARDS_DIR against a simulated training step; report throughput and GPU starvation.

    Starvation is the fraction of wall time the training loop spent waiting inside
    next() for data (0: never waited, 1: only waited). The same in Python:

        loader = datafuel.loaders.Loader(SHARDS_DIR, B, seq_len=T, num_workers=N)
        for batch in loader: step(batch)
        print(loader.stats())
    """
    r = run_profile(
        shards_dir,
        batch_size=batch_size,
        seq_len=seq_len,
        token_field=token_field,
        step_ms=step_ms,
        workers=workers,
        prefetch=prefetch,
        device=device,
        decode=decode,
        size=size,
        processes=processes,
        epochs=epochs,
        batches=batches,
        seed=seed,
    )
    if as_json:
        echo_json(r)
        return
    click.echo(
        f"{shards_dir}: {r['batches']} batches of {batch_size}"
        + (f" windows of {seq_len + 1} tokens" if seq_len else "")
        + f" on {device}, step {step_ms:g} ms, {workers} workers"
        + (f", {processes} decode processes" if processes else "")
    )
    click.echo(f"  samples/s   {r['samples_per_s']:,.0f}")
    click.echo(f"  MB/s        {r['bytes_per_s'] / 1e6:,.1f}")
    click.echo(
        f"  starvation  {r['starvation']:.3f}  ({100 * r['starvation']:.1f}% of wall time waiting for data)"
    )
    click.echo(f"  wait p50    {r['wait_p50_ms']:.3f} ms   p95 {r['wait_p95_ms']:.3f} ms")
    cores = os.cpu_count() or 1
    if decode == "cpu" and not processes and cores > 4 and r["starvation"] > 0.05:
        click.echo(
            f"  hint: on {cores} cores the CPU image path stalls on the GIL with threads; "
            f"try --processes {cores - 2}"
        )
