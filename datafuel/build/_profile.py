"""``build.profile``: drive a Loader with a simulated training step; throughput and starvation.

What ``datafuel profile`` runs. Not a build (it writes nothing, so it has no ``out``
and no engine): it reads a shard set the builds wrote, through the same Loader a
training loop would use. Starvation (the share of wall time the loop waits for data)
means something only against a step time: with ``step_ms=0`` the loop does nothing
but wait, so the report gives throughput and ``starvation: None``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from datafuel._checks import check_int
from datafuel.errors import ConfigError, ManifestError
from datafuel.loaders import ShardSet
from datafuel.loaders._manifest import MANIFEST_NAME
from datafuel.loaders._remote import is_remote

from ._common import Progress, report

if TYPE_CHECKING:
    from datafuel.loaders import Loader

__all__ = ["profile"]

#: what the report's ``starvation_note`` says when ``step_ms`` is 0
STARVATION_NOT_MEASURED = (
    "not measured: pass --step-ms MS (your training step) to measure how long the loop "
    "waits for data; with no step the loop only waits, so only throughput is measured"
)
#: seconds between two ``on_rate`` calls (at most)
RATE_EVERY_S = 0.5

#: ``on_rate({"samples_per_s", "wait_share", "batches"})``: the live rate of a profile run
Rate = Callable[[dict[str, float]], None]


def build_root_error(path: str) -> ManifestError | None:
    """For a build's output root (no manifest, shard sets inside): an error naming them.

    A build writes ``OUT/train``, ``OUT/val``, ... each a shard set; ``OUT`` itself has
    no manifest. Reading ``OUT`` then fails with "did you mean OUT/train" (the sets
    found listed) rather than "no manifest". ``None`` for any other directory.
    """
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, MANIFEST_NAME)):
        return None
    try:
        names = sorted(
            e.name
            for e in os.scandir(path)
            if e.is_dir() and os.path.isfile(os.path.join(e.path, MANIFEST_NAME))
        )
    except OSError:
        return None
    if not names:
        return None
    first = next((n for n in ("train", "val", "test") if n in names), names[0])
    sets = ", ".join(os.path.join(path, n) for n in names)
    return ManifestError(
        f"{path}: not a shard set but a build's output root, holding the shard set(s) "
        f"{sets}; did you mean {os.path.join(path, first)}?",
        path=path,
    )


def open_shard_set(
    path: str,
    *,
    verify: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit: int | None = None,
) -> ShardSet:
    """``ShardSet(path)``, or, on a build's output root, :func:`build_root_error`.

    A bucket URL (``s3://``, ``gs://``, ``az://``, ``https://``) opens a
    ``RemoteShardSet`` read through the node's cache
    (``cache_dir``, ``cache_limit``); a local ``path`` given either is a ConfigError.
    """
    if is_remote(path):
        from datafuel.loaders._remote_set import RemoteShardSet

        return RemoteShardSet(path, cache_dir=cache_dir, cache_limit=cache_limit, verify=verify)
    if cache_dir is not None or cache_limit is not None:
        raise ConfigError(
            "--cache-dir and --cache-limit (cache_dir=, cache_limit=) are for a bucket URL "
            f"(s3://, gs://, az://, https://); {path} is local and is read in place, never "
            "cached.",
            field="cache_limit",
            path=path,
        )
    try:
        return ShardSet(path, verify=verify)
    except ManifestError as exc:
        hint = build_root_error(path)
        if hint is None:
            raise
        raise hint from exc


def shard_set_location(shards: ShardSet, path: str) -> str:
    """Where ``shards`` is, to print: a remote set's URL without credentials, else ``path``."""
    url = getattr(shards, "url", None)
    return url if isinstance(url, str) else path


def _remote_report(shards: ShardSet) -> dict[str, Any] | None:
    """A remote set's URL, cache and store counters (``None`` for a local set)."""
    cache = getattr(shards, "cache", None)
    store = getattr(shards, "store", None)
    if cache is None or store is None:
        return None

    def counts(obj: Any) -> dict[str, Any]:
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}

    return {
        "url": shard_set_location(shards, ""),
        "cache_dir": str(cache.root),
        "cache_limit": cache.limit,
        "cache": counts(cache.stats),
        "store": counts(store.counters),
    }


def _image_transform(
    shards: ShardSet, backend: str, size: int, seed: int, processes: int = 0
) -> Any:
    from datafuel.vision import loader_transform

    if processes and backend != "cpu":
        raise ConfigError(
            f"--processes is for --decode cpu (DALI has its own threads); got --decode {backend}."
        )
    return loader_transform(shards, backend, train=True, size=size, seed=seed, processes=processes)


def _fixed_fields(shards: ShardSet, shards_dir: str) -> list[str]:
    """The fields a plain (no transform, no windows) loader can batch: the fixed ones."""
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
    return fields


class _RateMeter:
    """The loop's samples/s and wait share since the last call, from the loader's meter.

    Reads only what the meter appended since the previous call (a slice of its
    per-batch arrays and its sample count): cheap at :data:`RATE_EVERY_S`, unlike
    ``loader.stats()``, which also attributes the spans.
    """

    def __init__(self, loader: Loader, on_rate: Rate) -> None:
        self.meter = loader._meter
        self.on_rate = on_rate
        self.seen = 0
        self.samples = 0
        self.next_at = time.perf_counter() + RATE_EVERY_S

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now < self.next_at or self.meter is None:
            return
        self.next_at = now + RATE_EVERY_S
        m = self.meter
        n = len(m._wait)
        if n < self.seen:  # the meter was reset
            self.seen = self.samples = 0
        wall = sum(m._wall[self.seen : n])
        wait = sum(m._wait[self.seen : n])
        samples = m._samples - self.samples
        self.seen, self.samples = n, m._samples
        if wall > 0:
            self.on_rate(
                {
                    "samples_per_s": samples / wall,
                    "wait_share": min(1.0, wait / wall),
                    "batches": float(done),
                }
            )


def _drive(
    loader: Loader,
    total: int,
    step_s: float,
    cuda: bool,
    tick: Any,
    step_kind: str = "sleep",
    on_rate: Rate | None = None,
) -> None:
    """Take ``total`` batches (across epochs), spending ``step_s`` per batch as the step;
    ``on_rate`` gets the live rate at most every :data:`RATE_EVERY_S` seconds."""
    from datafuel.loaders._step import simulated_step

    rate = None if on_rate is None else _RateMeter(loader, on_rate)
    done = 0
    while done < total:
        progressed = False
        for batch in loader:
            progressed = True
            if cuda:
                import torch

                torch.cuda.current_stream().synchronize()  # the step needs the data
            if step_s:
                simulated_step(step_s, step_kind)
            del batch
            done += 1
            tick(1)
            if rate is not None:
                rate(done)
            if done >= total:
                break
        if not progressed:
            break


def _check_args(
    step_ms: float,
    step_kind: str,
    epochs: int,
    batches: int | None,
    trace: str | os.PathLike[str] | None,
    plot: str | os.PathLike[str] | None = None,
) -> None:
    if step_ms < 0:
        raise ConfigError(f"--step-ms must be >= 0. Got {step_ms} instead.")
    if step_kind not in ("sleep", "gil"):
        raise ConfigError(f"--step-kind must be 'sleep' or 'gil'. Got {step_kind!r} instead.")
    check_int("--epochs", epochs)
    check_int("--batches", batches, none_ok=True)
    if trace is not None and (not str(trace) or os.path.isdir(trace)):
        raise ConfigError(f"--trace must name a file, such as trace.json. Got {str(trace)!r}.")
    if plot is not None:
        if not str(plot) or os.path.isdir(plot):
            raise ConfigError(f"--plot must name a file, such as profile.png. Got {str(plot)!r}.")
        parent = os.path.dirname(os.path.abspath(plot))
        if not os.path.isdir(parent):
            raise ConfigError(
                f"--plot {str(plot)!r}: its directory {parent} does not exist.", path=parent
            )
        from datafuel.loaders._plot import check_matplotlib

        check_matplotlib()  # before the run, not after it


def profile(
    inputs: str | os.PathLike[str],
    *,
    seed: int = 0,
    on_progress: Progress | None = None,
    batch_size: int = 256,
    seq_len: int | None = None,
    token_field: str = "tokens",
    step_ms: float = 0.0,
    step_kind: str = "sleep",
    workers: int = 2,
    prefetch: int = 4,
    device: str = "cpu",
    decode: str | None = None,
    size: int = 224,
    processes: int = 0,
    epochs: int = 1,
    batches: int | None = None,
    trace: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    on_rate: Rate | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit: int | None = None,
) -> dict[str, Any]:
    """Drive a :class:`~datafuel.loaders.Loader` over ``inputs`` with a simulated training step.

    The step takes ``step_ms`` milliseconds per batch (on CUDA it first waits for the
    batch's copy, as a real step would): asleep (``step_kind="sleep"``), or running
    pure Python that holds the GIL (``"gil"``), as a real training loop does while it
    launches kernels; a thread-based loader that keeps up beside a sleep can starve
    beside that. Runs ``epochs`` epochs, or stops after
    ``batches`` batches. Returns the loader's starvation report plus the settings.
    ``decode`` (``"cpu"``/``"dali"``) decodes image shards; ``processes`` (with
    ``decode="cpu"``) decodes them in that many worker processes.

    With ``step_ms=0`` (the default) there is no step to hide the loading behind, so
    starvation is not measured: the report's ``starvation`` is ``None`` and
    ``starvation_note`` says to pass a step time; throughput (``samples_per_s``,
    ``bytes_per_s``) is what the run measures. With ``decode="cpu"`` the report's
    ``pil`` is :func:`datafuel.vision.pil_build` (pillow-simd or stock Pillow, which
    is about 3x slower at resizing). ``inputs`` that is a build's output root (it holds
    ``train``/``val``/... shard sets) is refused with "did you mean inputs/train".
    ``inputs`` may be a bucket URL (``s3://bucket/prefix``, ``gs://``, ``az://``,
    ``https://``): the Loader reads it through the node's cache (``cache_dir``,
    ``cache_limit`` bytes), and the report's ``remote`` says what the cache and the
    store did.

    The report also holds the loader's per-stage breakdown (``stages``: ms per batch,
    share of worker time, share of the loop's wait), the ``bottleneck`` stage and one
    line of ``advice``; ``trace`` writes the run's Chrome/Perfetto trace to that file
    (:meth:`~datafuel.loaders.Loader.trace`). ``plot`` draws the run into that PNG
    (1200 x 900 pixels: the loop's heartbeat, busy or waiting for data; throughput
    over time; each worker's time per stage; the bottleneck and advice in the title;
    :func:`datafuel.loaders._plot.profile_plot`; needs matplotlib, the ``plot`` extra).
    ``on_rate`` is called during the run, at most twice a second, with the loop's
    ``samples_per_s`` and ``wait_share`` since the previous call and the ``batches``
    taken so far (what ``datafuel profile`` shows beside its bar).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel import build
    >>> from datafuel.loaders import write_shards
    >>> d = tempfile.mkdtemp()
    >>> _ = write_shards(d, x=np.zeros((64, 4), np.float32))
    >>> r = build.profile(d, batch_size=16, step_ms=1)
    >>> r["batches"], 0.0 <= r["starvation"] <= 1.0
    (4, True)
    >>> r = build.profile(d, batch_size=16)  # no step: throughput only
    >>> r["starvation"] is None, r["samples_per_s"] > 0
    (True, True)
    """
    _check_args(step_ms, step_kind, epochs, batches, trace, plot)
    shards_dir = str(inputs)
    shards = open_shard_set(shards_dir, cache_dir=cache_dir, cache_limit=cache_limit)
    try:
        return _profile(
            shards,
            shard_set_location(shards, shards_dir),
            seed=seed,
            on_progress=on_progress,
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
            trace=trace,
            plot=plot,
            on_rate=on_rate,
        )
    finally:
        close = getattr(shards, "close", None)  # a remote set: let go of its pinned files
        if close is not None:
            close()


def _profile(
    shards: ShardSet,
    shards_dir: str,
    *,
    seed: int,
    on_progress: Progress | None,
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
    trace: str | os.PathLike[str] | None,
    plot: str | os.PathLike[str] | None = None,
    on_rate: Rate | None = None,
) -> dict[str, Any]:
    # torch: not for `datafuel inspect`, which shares this module
    from datafuel.loaders import Loader

    transform, fields = None, None
    if decode is not None:
        if seq_len is not None:
            raise ConfigError("--decode (images) and --seq-len (token windows) exclude each other.")
        transform = _image_transform(shards, decode, size, seed, processes)
    elif seq_len is None:
        fields = _fixed_fields(shards, shards_dir)
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
    t0 = time.perf_counter()
    with loader:
        _drive(
            loader,
            total,
            step_ms / 1000.0,
            device.startswith("cuda"),
            report(on_progress, "profile", total),
            step_kind,
            on_rate,
        )
    elapsed = time.perf_counter() - t0
    close = getattr(transform, "close", None)
    if close is not None:
        close()
    out = loader.stats().to_dict()
    if trace is not None:
        loader.trace(trace)
        out["trace"] = str(trace)
    if plot is not None:
        title = (
            f"{shards_dir}: batches of {batch_size}"
            + (f" windows of {seq_len + 1} tokens" if seq_len else "")
            + f", step {step_ms:g} ms ({step_kind}), {workers} workers"
            + (f", --decode {decode}" if decode else "")
            + (f", {processes} decode processes" if processes else "")
        )
        loader.plot(plot, title=title)
        out["plot"] = str(plot)
    if not step_ms:  # the loop did nothing but wait: a "starvation" of ~1 would say nothing
        out["starvation"] = None
        out["starvation_note"] = STARVATION_NOT_MEASURED
    if decode == "cpu":
        from datafuel.vision import pil_build

        out["pil"] = pil_build()
    remote = _remote_report(shards)
    if remote is not None:
        out["remote"] = remote
    out.update(
        {
            "path": shards_dir,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "step_ms": step_ms,
            "step_kind": step_kind,
            "workers": workers,
            "prefetch": prefetch,
            "device": device,
            "decode": decode,
            "processes": processes,
            "elapsed_s": elapsed,
            "batches_per_epoch": len(loader),
        }
    )
    return out
