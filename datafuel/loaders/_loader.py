"""``Loader``: batches from a shard set for any PyTorch training loop.

Pipeline per batch: sample order (:class:`EpochSampler`) -> gather from the memory
maps (or cut token windows) -> optional per-batch transform -> finite check ->
collate into (pinned) host buffers -> asynchronous copy to the device. Everything
up to the copy runs in worker threads (:class:`Prefetcher`), ``prefetch`` batches
ahead of the training loop; the loop's waits are recorded by a
:class:`StarvationMeter`.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import functools
import itertools
import os
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from datafuel._checks import check_int
from datafuel.errors import ConfigError, DatafuelError, NonFiniteError, SchemaError, WorkerError

from ._mixture import Mixture, Schedule
from ._prefetch import SWITCH_INTERVAL_S, Prefetcher
from ._reader import ShardSet
from ._remote import is_remote
from ._remote_set import BatchShards, MixturePass, RemotePass, RemoteShardSet
from ._sampler import (
    EpochBatchSampler,
    EpochSampler,
    MixtureSampler,
    _max_span_bytes_per_run,
    max_shard_bytes_per_run,
)
from ._spans import (
    COLLATE,
    COPY,
    END,
    FINITE,
    GATHER,
    PROFILER_FLAG,
    RING_MARKS,
    STAGES,
    TRANSFORM,
    SpanRecorder,
    attribute,
    chrome_trace,
    close_marks,
    profiling,
)
from ._stats import StarvationMeter, StarvationReport
from ._transform import BatchInfo, Transform
from ._windows import DOCUMENT_FIELDS, PackedWindows, TokenWindows

if TYPE_CHECKING:
    from ._dataset import ShardDataset

__all__ = ["Batch", "Loader"]

#: ``metrics()["loader/bottleneck_id"]`` indexes this
BOTTLENECK_IDS = ("none", *STAGES, "handoff")

_STATE_FORMAT = "datafuel-loader"
_STATE_VERSION = 1


def resolve_distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """Rank and world size: from the arguments, else ``torch.distributed``, else the environment."""
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise ConfigError(
                f"pass both rank and world_size, or neither. Got rank={rank!r}, world_size={world_size!r}."
            )
        return rank, world_size
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    env_rank, env_world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if env_rank is None and env_world is None:
        return 0, 1
    try:
        r, w = int(env_rank or "0"), int(env_world or "1")
    except ValueError:
        raise ConfigError(
            f"environment RANK and WORLD_SIZE must be integers. Got RANK={env_rank!r}, WORLD_SIZE={env_world!r}."
        ) from None
    return r, w


def _resolve_device(
    device: str | torch.device | None, pin_memory: bool | None
) -> tuple[torch.device | None, bool, bool]:
    """``(device, pin_memory, cuda)``: refuse CUDA or pinning where CUDA is not available.

    ``pin_memory=None`` pins exactly when the device is a GPU.
    """
    resolved = None if device is None else torch.device(device)
    cuda = resolved is not None and resolved.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but CUDA is not available in this torch build/machine; use device=None or 'cpu'."
        )
    if pin_memory and not torch.cuda.is_available():
        raise ConfigError(
            "pin_memory=True needs CUDA (torch.Tensor.pin_memory() raises on CPU-only builds); "
            "leave pin_memory=None to pin exactly when the device is a GPU."
        )
    return resolved, bool(cuda if pin_memory is None else pin_memory) and cuda, cuda


def _spec_from_transform(transform: Any) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
    if not callable(transform):
        raise ConfigError(
            f"transform must be callable (see datafuel.loaders.Transform). Got {type(transform).__name__}."
        )
    spec = getattr(transform, "output_spec", None)
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            "transform must declare output_spec = {name: (dtype, per-sample shape)} "
            f"(see datafuel.loaders.Transform). Got {spec!r}."
        )
    out = {}
    for name, entry in spec.items():
        try:
            dtype, shape = entry
            out[str(name)] = (np.dtype(dtype), tuple(int(d) for d in shape))
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"transform output_spec[{name!r}] must be (dtype, shape). Got {entry!r}."
            ) from exc
    return out


class Batch(dict):  # type: ignore[type-arg]
    """One batch: a ``dict`` of tensors by field name that unpacks as its tensors.

    Everything a dict does works unchanged (``batch["x"]``, ``.items()``, ``.keys()``,
    ``**batch``, ``"x" in batch``, ``len``, assignment, ``torch``'s and Lightning's
    collection helpers, ``torch.utils._pytree``), except bare iteration: it yields the
    *values* in field order (the ``fields=`` order, else the transform's
    ``output_spec`` order, else the shard set's), so ``for x, y in loader`` unpacks
    tensors as it does with a ``DataLoader`` over a ``TensorDataset``, and never the
    keys. Use ``batch.keys()`` for the names; a tensor used as a key (a ``for k in
    batch`` written for a plain dict) raises a ``KeyError`` that says so. Helpers that
    loop ``for key in data`` (torch's ``default_collate`` and ``default_convert``) need
    ``dict(batch)``; those that use ``.items()`` (``pin_memory``, Lightning's
    ``apply_to_collection``) take a Batch as it is.

    Examples
    --------
    >>> b = Batch(x=1, y=2)
    >>> x, y = b
    >>> (x, y), b["x"], list(b.keys()), dict(**b)
    ((1, 2), 1, ['x', 'y'], {'x': 1, 'y': 2})
    """

    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.values())

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self.values())

    def __missing__(self, key: Any) -> Any:
        if isinstance(key, str):
            raise KeyError(key)
        raise KeyError(
            f"a batch's keys are its field names {list(self.keys())}, got a {type(key).__name__}: "
            "iterating a batch yields its tensors in field order (for x, y in loader); "
            "use batch.keys() or batch.items() for the names."
        )


def _register_pytree() -> None:
    """Let ``torch.utils._pytree`` (``tree_map``, ``torch.compile``) see into a Batch."""
    try:
        from torch.utils import _pytree as pytree

        pytree.register_pytree_node(
            Batch,
            lambda b: (list(b.values()), list(b.keys())),
            lambda values, keys: Batch(zip(keys, values, strict=True)),
            serialized_type_name="datafuel.loaders.Batch",
        )
    except (ImportError, AttributeError, TypeError, ValueError):  # an older torch: no pytree API
        return


_register_pytree()


class _Progress:
    """Where one pass is: its epoch and the samples (all ranks) the loop has taken.

    Never changed in place: a pass swaps in a new one, so a ``state_dict()`` taken from
    another thread (an async checkpoint) reads one consistent (epoch, position) pair.
    """

    __slots__ = ("base", "epoch", "position")

    def __init__(self, epoch: int, position: int, base: int = 0) -> None:
        self.epoch = epoch
        self.position = position
        self.base = base  # a mixture's global position of the epoch's start


class _Ring:
    """Pinned host buffers, one set per batch in flight, and each slot's last copy event."""

    __slots__ = ("events", "slots")

    def __init__(self, slots: list[dict[str, torch.Tensor]]) -> None:
        self.slots = slots
        self.events: list[Any] = [None] * len(slots)


class _Batch:
    """What a worker hands to the consumer."""

    __slots__ = ("event", "gpu", "indices", "mix", "nbytes", "size", "tensors")

    def __init__(
        self, tensors: Batch, nbytes: int, size: int, event: Any = None, gpu: Any = None
    ) -> None:
        self.tensors = tensors
        self.nbytes = nbytes
        self.size = size
        self.event = event
        self.gpu = gpu  # (start, end) CUDA timing events of the copy, with spans
        self.mix: np.ndarray | None = None  # a mixture's samples per source


class _Failure(Exception):
    """Carries a worker exception with the indices it was working on."""

    def __init__(self, exc: Exception, indices: np.ndarray, batch_index: int) -> None:
        super().__init__(str(exc))
        self.exc = exc
        self.indices = indices
        self.batch_index = batch_index


class Loader:
    """Prefetching, resumable, DDP-aware batches of ``torch.Tensor`` from a shard set.

    Parameters
    ----------
    source
        A shard directory, a bucket URL (``s3://bucket/prefix``, ``gs://``, ``az://``,
        ``https://``: a :class:`RemoteShardSet` read through the node's cache) or a
        :class:`ShardSet`.
    batch_size
        Samples per batch on this rank.
    shuffle, seed
        A full permutation per ``(seed, epoch)``; ``shuffle=False`` is storage order;
        ``"shards"`` a shard-aware order (a permutation of the shards per epoch, rows
        shuffled within a sliding window of ``shuffle_window`` shards; see FORMAT.md
        "Sampling"), which is what ``shuffle=True`` means for a remote set: a full
        permutation would read every shard all the time. Token windows (``seq_len``)
        take it too: windows grouped by the shard their start lies in, on the epoch's
        grid (not for ``documents="pack"``). A mixture's ``"shards"`` order, and what
        ``shuffle=True`` means for a mixture with a remote source, serves every source
        in shard blocks (:class:`Mixture` ``shards=``; FORMAT.md "Sampling").
    shuffle_window
        Shards open at once in the ``"shards"`` order (a mixture's: shards per block).
        Default: for a remote set with a ``cache_limit``, half the shards the limit
        holds (the rest is room to prefetch; a mixture splits it between the remote
        sources sharing the cache), else 16; never more than the shards there are.
    cache_dir, cache_limit
        For a remote set: the node's cache directory (default ``$DATAFUEL_CACHE_DIR``,
        else ``~/.cache/datafuel/shards``; shared by every process, each file
        downloaded once per node) and the most bytes it may hold (``None``: no limit).
        A limit that cannot hold the files of one batch is refused here, naming the
        bytes needed. Files are prefetched in the pass's order and the one needed
        farthest in the future is evicted first.
    drop_last
        Drop the epoch's last, short batch.
    num_workers
        Worker threads gathering and transforming batches (0: in the loop's thread).
    prefetch
        Batches prepared ahead of the loop.
    device
        Where batches go (``None``: stay on the CPU). With a CUDA device, batches are
        collated into a ring of pinned host buffers and copied with ``non_blocking``
        on a side stream; the loop's stream waits on an event (no host sync).
    pin_memory
        Default: ``True`` exactly when ``device`` is a CUDA device. Never used without
        CUDA (``Tensor.pin_memory()`` raises on CPU-only builds).
    rank, world_size
        DDP position; default from ``torch.distributed``, else ``RANK``/``WORLD_SIZE``.
        Every rank gets ``len(loader)`` batches and no sample is on two ranks in an
        epoch (up to ``world_size - 1`` samples per epoch are left out for that).
    transform
        A :class:`Transform` run per batch in the workers; its ``output_spec`` is
        checked here. Fields it does not return are dropped. Over a mixture it gets
        the batch in mixture order (each source's fields gathered into their rows;
        bytes and ragged fields as one list) with ``source`` (int64 ``(B,)``), and
        ``source`` is added to its output unless it returns one itself.
    seq_len
        Token-window mode: samples are windows of ``seq_len + 1`` tokens of
        ``ShardSet.token_stream(token_field)`` and batches are
        ``{token_field: int64 (B, seq_len + 1)}``. uint16 tokens cross the bus and
        are widened on the device. Per epoch, window starts are ``o + seq_len * k``
        (every token a target once) with a random offset ``o`` per ``(seed, epoch)``,
        in shuffled order; see FORMAT.md "Sampling". From a remote set the windows
        stream: each batch pins only the token shards its windows read (the cache
        limit must hold one batch's run of them, not the whole field).
    token_field
        The ragged token field for ``seq_len``.
    documents
        With ``seq_len``: add per-window fields for attention that stays inside
        documents (boundaries from the token field's ``.idx`` offsets). ``True``: the
        same windows as without it (same order and resume state), plus
        ``position_ids`` (int64 ``(B, T)``), ``cu_seqlens`` (int32 ``(B * S + 1,)``),
        ``max_seqlen`` (a 0-d int32 tensor kept on the CPU) and ``loss_mask`` (bool
        ``(B, T)``). The ``T`` inputs ``w[:-1]`` of a window are cut into segments at
        its start and at every document start inside it: ``position_ids`` count from
        0 in each segment, ``cu_seqlens`` are the segments' starts over the flattened
        ``B * T`` inputs then ``B * T`` repeated to the fixed length ``B * S + 1``
        (zero-length sequences; ``S = loader.windows.max_segments``, the most segments
        any window of this stream can hold, so the shape never changes), ``max_seqlen``
        is the longest segment, and ``loss_mask`` is False on each target
        ``w[i + 1]`` that starts a document (the end-of-text token predicting the next
        document). ``"pack"``: windows of whole documents instead, placed best-fit
        decreasing (documents longer than ``T + 1`` cut at multiples of ``T``), padded
        with token 0 in a segment of its own whose targets are masked; the packing is
        fixed for the stream, its order shuffled per epoch like rows;
        ``loader.windows.padding_fraction`` is the share of padding. See FORMAT.md
        "Document fields". A mixture takes ``True`` (each window's fields from its own
        source's documents; ``S`` the most of any source), not ``"pack"``.
    fields
        Row fields to read (default: all). Bytes and ragged fields must be consumed
        by a ``transform``.
    check_finite
        Raise :class:`~datafuel.errors.NonFiniteError`, naming the sample indices,
        before a NaN or inf in a float field reaches the loop.
    meter
        Record the starvation meter (on by default; it costs well under 2%).
    spans
        Record per-stage spans of every batch (on by default; a few clock reads and one
        tuple per batch, kept for the last 8,192 batches): :meth:`stats` then names the
        ``bottleneck`` stage with advice, and :meth:`trace` writes a Perfetto trace.
        While a ``torch.profiler`` is active, the stages (and the loop's wait) are also
        ``record_function`` ranges in the threads it records.
    trace
        A file to write :meth:`trace` to whenever a pass ends (its last batch, a
        ``break``, :meth:`close`); needs ``spans=True``.
    stall_timeout
        Seconds the loop may wait in ``next()`` for one batch (default 600; ``None``:
        no limit). Past it, every thread's stack is dumped once (``faulthandler``, to
        stderr, or to a temporary file when stderr is not a real file) and
        :class:`~datafuel.errors.WorkerError` is raised naming the batch's sample
        indices, how long the loop waited and where the busy workers are stuck. A
        hung rank then fails (and can be restarted from its last checkpoint) instead
        of holding every other rank of a DDP job forever. Needs ``num_workers >= 1``
        (with 0 the batch is made in the loop's own thread).
    collate_fn
        Only ``None``: the loader collates (per-batch work goes in ``transform=``).
        Accepted so that ``DataLoader(...)`` arguments carry over; the attribute is
        ``None``.
    persistent_workers
        Accepted for ``DataLoader`` compatibility and recorded; worker threads start in
        microseconds, so each pass starts its own and stops them at its end.
    switch_interval
        While a pass's worker threads run, the interpreter's GIL switch interval
        (``sys.setswitchinterval``) is lowered to this many seconds (default 0.5 ms;
        never raised; put back when the last pass ends; ``None``: left alone). A loop
        that holds the GIL (Python between kernel launches) and frees tensors each step
        otherwise keeps the workers from ever getting a turn at the default 5 ms, and
        they catch up only while it waits for a batch: beside a GIL-holding 2 ms step,
        starvation was 5% against 1.6% with 0.5 ms (``benchmarks/bench_step.py``).

    Notes
    -----
    Iteration follows ``torchdata.stateful_dataloader.StatefulDataLoader``:

    - each ``iter(loader)`` is a pass from the start of the current epoch, so
      ``next(iter(loader))`` (a peek) takes nothing from the next ``for`` loop;
    - passes are independent: two live iterators each see the whole epoch
      (``zip(loader, loader)`` yields pairs), and a new one leaves the old running;
    - :meth:`state_dict` is the place of the latest pass (the batches handed to the
      loop, not the prefetched ones), also after a ``break``; after
      :meth:`load_state_dict` the *next* pass resumes from it, exactly (a state saved
      at the last batch, before the loop saw the epoch end, resumes as an empty
      pass, as in StatefulDataLoader); later passes start from the epoch's start;
    - to continue after a ``break`` instead of starting over, call :meth:`resume`.

    Epochs: a pass that hands out an epoch's last batch moves the loader to the next
    epoch (with ``shuffle`` a new order; a ``DataLoader`` draws one per pass too);
    :meth:`set_epoch` (or ``loader.sampler.set_epoch``, which Lightning calls) picks
    one, ``DistributedSampler`` style.

    ``DataLoader`` attributes that training code and Lightning read: ``dataset`` (a
    :class:`ShardDataset` over the same samples), ``batch_size``, ``drop_last``,
    ``sampler`` (this rank's indices; ``set_epoch``), ``batch_sampler``,
    ``collate_fn``, ``num_workers``, ``pin_memory``, ``persistent_workers`` and
    ``len(loader)``. Batches are :class:`Batch` dicts: ``batch["x"]`` and
    ``for x, y in loader`` (values in field order) both work.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import Loader, write_shards
    >>> d = tempfile.mkdtemp()
    >>> _ = write_shards(d, x=np.ones((10, 3), np.float32), y=np.arange(10))
    >>> loader = Loader(d, batch_size=4, seed=0)
    >>> len(loader), [tuple(b["x"].shape) for b in loader]
    (3, [(4, 3), (4, 3), (2, 3)])
    >>> loader.stats().batches
    3
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | ShardSet | Mapping[str, str | os.PathLike[str] | ShardSet],
        batch_size: int,
        *,
        weights: Mapping[str, float] | Schedule | None = None,
        num_samples: int | None = None,
        shuffle: bool | str = True,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int = 2,
        prefetch: int = 4,
        device: str | torch.device | None = None,
        pin_memory: bool | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        transform: Transform | None = None,
        seq_len: int | None = None,
        token_field: str = "tokens",
        documents: bool | str = False,
        fields: Sequence[str] | None = None,
        check_finite: bool = True,
        meter: bool = True,
        spans: bool = True,
        trace: str | os.PathLike[str] | None = None,
        stall_timeout: float | None = 600.0,
        collate_fn: Callable[..., Any] | None = None,
        persistent_workers: bool = False,
        switch_interval: float | None = SWITCH_INTERVAL_S,
        shuffle_window: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
    ) -> None:
        if collate_fn is not None:
            raise ConfigError(
                "collate_fn must be None: the Loader collates each batch itself into tensors; "
                f"put per-batch work in transform= (see datafuel.loaders.Transform). Got {collate_fn!r}."
            )
        check_int("num_workers", num_workers, low=0)
        check_int("prefetch", prefetch)
        self.stall_timeout = _check_stall_timeout(stall_timeout)
        self.switch_interval = _check_switch_interval(switch_interval)
        self._open(source, weights, num_samples, cache_dir, cache_limit)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.transform = transform
        self.check_finite = check_finite
        self.seed = int(seed)
        self.rank, self.world_size = resolve_distributed(rank, world_size)
        self.device, self.pin_memory, self._cuda = _resolve_device(device, pin_memory)
        self.windows: TokenWindows | PackedWindows | None = None
        self.token_field = token_field
        self.documents = _check_documents(documents, seq_len, transform)
        self.fields: list[str]
        self._raw_spec: dict[str, tuple[np.dtype[Any], tuple[int, ...]]]
        self._seq_len = seq_len
        sampler_type = EpochSampler
        if self.sources is not None:
            size, kind = self._use_mixture(
                weights, num_samples, seq_len, fields, shuffle, shuffle_window
            )
            sampler_type = MixtureSampler
        elif seq_len is not None:
            size, kind = self._use_token_windows(token_field, seq_len, fields)
        else:
            size, kind = self._use_rows(fields)
        self.spec = self._batch_spec(transform)
        if self.mixture is not None:
            self.spec["source"] = (np.dtype(np.int64), ())
        self.sampler = sampler_type(
            size,
            batch_size,
            seed=seed,
            drop_last=drop_last,
            rank=self.rank,
            world_size=self.world_size,
            kind=kind,
            **self._order_args(shuffle, shuffle_window),
        )
        self._check_cache_limit()
        self.batch_sampler = EpochBatchSampler(self.sampler)
        self.collate_fn: Callable[..., Any] | None = None
        self.persistent_workers = bool(persistent_workers)
        self._meter = StarvationMeter() if meter else None
        if not isinstance(spans, bool):
            raise ConfigError(f"spans must be True or False. Got {spans!r} instead.", field="spans")
        self._spans = SpanRecorder() if spans else None
        self._trace_path = _check_trace_path(trace, spans)
        self._pass_ids = itertools.count()
        self._live: weakref.WeakSet[_LoaderIter] = weakref.WeakSet()
        #: the latest pass's place: what state_dict saves (None: no pass since a load)
        self._progress: _Progress | None = None
        #: the position load_state_dict restored, for the next pass only (set_epoch keeps it)
        self._pending: int | None = None
        self._ring: _Ring | None = None  # a spare pinned ring, handed to the next pass
        self._copy_stream: Any = None
        self._lock = threading.Lock()

    def _open(
        self,
        source: Any,
        weights: Any,
        num_samples: int | None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_limit: int | None = None,
    ) -> None:
        """``self.shards`` (and a mixture's ``self.sources``) from the ``source`` argument."""
        self.mixture: Mixture | None = None
        self.sources: dict[str, ShardSet] | None = None
        self._mix_windows: list[TokenWindows] | None = None
        self._mix_segments = 1  # documents=True: the most segments of any source's window
        self._mix_counts: np.ndarray | None = None
        self._streamed = False  # token windows streamed through a remote set's cache
        if isinstance(source, Mapping):
            self.sources = _open_sources(source, cache_dir, cache_limit)
            self.shards = next(iter(self.sources.values()))
        elif weights is not None or num_samples is not None:
            raise ConfigError(
                "weights= and num_samples= are for a mixture: pass the sources as a mapping "
                f"{{name: shard set}}. Got a single source {source!r}."
            )
        else:
            self.shards = _open_set(source, cache_dir, cache_limit)

    def _order_args(self, shuffle: Any, window: int | None) -> dict[str, Any]:
        """The sampler's ``shuffle`` (and, for the shard-aware order, its offsets and window)."""
        remote = isinstance(self.shards, RemoteShardSet)
        _check_shuffle(shuffle, window)
        if self.sources is not None:  # the mixture's order holds its shard blocks
            return {"shuffle": bool(shuffle)}
        rows_or_windows = not isinstance(self.windows, PackedWindows)
        if shuffle is True and remote and rows_or_windows:
            shuffle = "shards"
        if shuffle != "shards":
            if window is not None:
                raise ConfigError(
                    "shuffle_window is for shuffle='shards' (or a remote set's default order); "
                    f"got shuffle={shuffle!r}.",
                    field="shuffle_window",
                )
            return {"shuffle": shuffle}
        if not rows_or_windows:
            raise ConfigError(
                "shuffle='shards' orders rows and token windows; packed windows have their "
                "own order (use shuffle=True).",
                field="shuffle",
            )
        offsets: Any = self.shards.offsets
        if isinstance(self.windows, TokenWindows):
            windows, seed = self.windows, self.seed

            def offsets(epoch: int) -> np.ndarray:
                # the windows starting in each shard, on this epoch's grid o + T * k
                return windows.shard_offsets(windows.offset(seed, epoch, True))

        return {
            "shuffle": "shards",
            "offsets": offsets,
            "window": window if window is not None else self._default_window(),
        }

    def _default_window(self) -> int:
        n = max(1, self.shards.num_shards)
        remote = self.shards if isinstance(self.shards, RemoteShardSet) else None
        if remote is None or remote.cache.limit is None:
            return min(n, 16)
        limit = remote.cache.limit
        biggest = int(remote.shard_bytes(self.fields).max(initial=1)) or 1
        return max(1, min(n, (limit // biggest) // 2))

    def _check_cache_limit(self) -> None:
        """Refuse a cache limit that cannot hold the files of the batches of one epoch's order."""
        if self.sources is not None:
            self._check_mixture_cache_limit()
            return
        if not isinstance(self.shards, RemoteShardSet):
            return
        if self.windows is not None:
            if self._streamed:
                self._check_window_cache_limit()
            return  # packed windows pin the whole stream (checked as it was pinned)
        limit = self.shards.cache.limit
        if limit is None:
            return
        need = max_shard_bytes_per_run(
            self.sampler.order(),
            self.shards.offsets,
            self.batch_size,
            self.shards.shard_bytes(self.fields),
        )
        if need > limit:
            raise ConfigError(
                f"cache_limit={limit} bytes cannot hold the files one batch of {self.batch_size} "
                f"reads from {self.shards.url}: the epoch's order needs {need} bytes at once. "
                f"Raise cache_limit to at least {need}, or lower batch_size or shuffle_window.",
                field="cache_limit",
            )

    def _check_window_cache_limit(self) -> None:
        """Refuse a cache limit that cannot hold the token shards of the batches of one
        epoch's window order (a window may run into the next shards: they count too)."""
        assert isinstance(self.shards, RemoteShardSet) and isinstance(self.windows, TokenWindows)
        limit = self.shards.cache.limit
        if limit is None:
            return
        windows, sampler = self.windows, self.sampler
        first, last = windows.shard_span(
            windows.offset(sampler.seed, sampler.epoch, bool(sampler.shuffle)), sampler.order()
        )
        need = _max_span_bytes_per_run(
            first, last, self.batch_size, self.shards.shard_bytes([self.token_field])
        )
        if need > limit:
            raise ConfigError(
                f"cache_limit={limit} bytes cannot hold the token shards one batch of "
                f"{self.batch_size} windows reads from {self.shards.url}: the epoch's order "
                f"needs {need} bytes at once. Raise cache_limit to at least {need}, or lower "
                "batch_size or shuffle_window.",
                field="cache_limit",
            )

    def _begin_remote(
        self, plan: Sequence[tuple[int, int]], order: np.ndarray, epoch: int
    ) -> RemotePass | MixturePass | None:
        """A remote set's pass: the shards each of this rank's batches reads, in order,
        then those of the next epoch's batches (its order is known too): the cache keeps
        and prefetches what the next epoch starts with instead of guessing."""
        if self.sources is not None:
            return self._begin_mixture_remote(plan, order)
        if not isinstance(self.shards, RemoteShardSet) or (
            self.windows is not None and not self._streamed
        ):
            return None
        plans = [(plan, order), (self.sampler.plan(0), self.sampler.order(epoch + 1))]
        if self.windows is None:
            per_batch = BatchShards.of_plans(plans, self.shards.offsets)
        else:  # token windows: the shards of each window's tokens [s, s + T]
            windows, sampler = self.windows, self.sampler
            assert isinstance(windows, TokenWindows)
            spans = [
                functools.partial(
                    windows.shard_span, windows.offset(sampler.seed, e, bool(sampler.shuffle))
                )
                for e in (epoch, epoch + 1)
            ]
            per_batch = BatchShards.of_plans(plans, windows.stream.shard_starts, spans)
        return self.shards.begin_pass(per_batch, self.fields)

    def _begin_mixture_remote(
        self, plan: Sequence[tuple[int, int]], order: np.ndarray
    ) -> MixturePass | None:
        """A mixture's remote sources: a pass each over the rows (or the token shards of
        the windows) this rank's batches take from it (the mixture's order is known ahead
        as a single set's is), so each source's cache prefetches in batch order and
        evicts the file needed farthest ahead."""
        assert self.sources is not None
        sets = list(self.sources.values())
        passes = {
            i: sets[i].begin_pass(per_batch, self.fields)  # type: ignore[attr-defined]
            for i, per_batch in self._mixture_batch_shards(plan, order).items()
        }
        return MixturePass(passes) if passes else None

    def _mixture_batch_shards(
        self, plan: Sequence[tuple[int, int]], order: np.ndarray
    ) -> dict[int, BatchShards]:
        """Per remote source of a mixture: the shards each batch of ``plan`` reads (a
        window's: those of its tokens ``[s, s + T]``)."""
        assert self.mixture is not None and self.sources is not None
        mixture, windows = self.mixture, self._mix_windows
        out: dict[int, BatchShards] = {}
        for i, shards in enumerate(self.sources.values()):
            if not isinstance(shards, RemoteShardSet):
                continue

            def pick(positions: np.ndarray, i: int = i) -> np.ndarray:
                src, sample, passes = mixture.samples(positions)
                if windows is None:
                    return np.where(src == i, sample, -1)
                mine = src == i  # token windows: their starts (each source pass's grid)
                picked = np.full(src.size, -1, np.int64)
                picked[mine] = self._mixture_starts(i, sample[mine], passes[mine])
                return picked

            # (the next epoch starts where this one ends, so only this one's batches)
            if windows is None:
                out[i] = BatchShards.of_plans([(plan, order)], shards.offsets, pick=pick)
            else:
                w = windows[i]
                out[i] = BatchShards.of_plans(
                    [(plan, order)], w.stream.shard_starts, [w.start_span], pick=pick
                )
        return out

    def _check_mixture_cache_limit(self) -> None:
        """Refuse cache limits that cannot hold the files one batch of the first epoch reads
        from the remote sources that share the cache (counted per source: a file two
        sources share counts twice, so the check errs on the safe side)."""
        assert self.sources is not None
        sets = list(self.sources.values())
        if not any(isinstance(x, RemoteShardSet) and x.cache.limit is not None for x in sets):
            return  # nothing to check: no order is walked
        need: dict[Any, np.ndarray] = {}
        where: dict[Any, list[str]] = {}
        limits: dict[Any, int] = {}
        names = list(self.sources)
        for i, bs in self._mixture_batch_shards(self.sampler.plan(), self.sampler.order()).items():
            shards = sets[i]
            assert isinstance(shards, RemoteShardSet)
            if shards.cache.limit is None:
                continue
            sizes = np.concatenate([[0], np.cumsum(shards.shard_bytes(self.fields)[bs.shard])])
            # (token windows: self.fields is the token field, whose shards bs.shard are)
            per_batch = sizes[bs.ptr[1:]] - sizes[bs.ptr[:-1]]
            key = shards.cache.root.resolve()
            need[key] = need.get(key, 0) + per_batch
            where.setdefault(key, []).append(names[i])
            limits[key] = shards.cache.limit
        for key, per_batch in need.items():
            limit = limits[key]
            most = int(np.max(per_batch)) if np.size(per_batch) else 0
            if most > limit:
                raise ConfigError(
                    f"cache_limit={limit} bytes cannot hold the files one batch of "
                    f"{self.batch_size} reads from the mixture's remote sources {where[key]} "
                    f"(cache {key}): the first epoch's order needs {most} bytes at once. Raise "
                    f"cache_limit to at least {most}, or lower batch_size.",
                    field="cache_limit",
                )

    def _use_token_windows(
        self, token_field: str, seq_len: int, fields: Sequence[str] | None
    ) -> tuple[int, str]:
        """A sample is a ``seq_len`` window of the token stream; its count and sampler kind."""
        if fields is not None:
            raise ConfigError(
                "fields= selects row fields; with seq_len= the batch is the token field "
                f"{token_field!r}. Pass one of them."
            )
        #: a remote set's token windows stream through the cache (each batch pins the
        #: shards it reads); packed windows read the whole stream, pinned for good
        self._streamed = isinstance(self.shards, RemoteShardSet) and self.documents != "pack"
        if self._streamed:
            assert isinstance(self.shards, RemoteShardSet)
            stream = self.shards.lazy_token_stream(token_field)
        else:
            stream = self.shards.token_stream(token_field)
        windows = (PackedWindows if self.documents == "pack" else TokenWindows)(stream, seq_len)
        self.windows = windows
        self.fields = [token_field]
        self._raw_spec = {token_field: (stream.dtype, (windows.length,))}
        if self.documents:
            # the per-window document fields; cu_seqlens and max_seqlen are per batch
            self._raw_spec["position_ids"] = (np.dtype(np.int64), (seq_len,))
            self._raw_spec["loss_mask"] = (np.dtype(np.bool_), (seq_len,))
        return len(windows), f"{windows.kind_prefix}:{token_field}:{seq_len}"

    def _use_mixture(
        self,
        weights: Mapping[str, float] | Schedule | None,
        num_samples: int | None,
        seq_len: int | None,
        fields: Sequence[str] | None,
        shuffle: Any,
        window: int | None = None,
    ) -> tuple[int, str]:
        """A sample is a position of the mixture's global order; the epoch's budget and kind."""
        assert self.sources is not None
        if weights is None:
            raise ConfigError(
                f"a mixture of sources {sorted(self.sources)} needs weights={{name: weight}}.",
                field="weights",
            )
        if self.documents == "pack":
            raise ConfigError(
                "a mixture cannot pack documents (documents='pack'): packing places each "
                "source's whole documents into windows of its own, which the mixture's "
                "per-position order does not index; use documents=True (the same windows "
                "as without, with their document fields), or load each source on its own.",
                field="documents",
            )
        if seq_len is not None:
            sizes, mode = (
                self._mixture_windows(seq_len, fields),
                f"windows:{self.token_field}:{seq_len}",
            )
        else:
            sizes, mode = self._mixture_rows(fields), "rows"
        self.mixture = Mixture(
            sizes,
            weights,
            seed=self.seed,
            shuffle=bool(shuffle),
            shards=self._mixture_blocks(shuffle, window),
        )
        self._mix_counts = np.zeros(len(self.mixture.names), np.int64)
        budget = sum(sizes.values()) if num_samples is None else num_samples
        check_int("num_samples", budget)
        return budget, f"mixture:{mode}:{self.mixture.fingerprint}"

    def _mixture_blocks(
        self, shuffle: Any, window: int | None
    ) -> dict[str, tuple[Callable[[int], np.ndarray], int]] | None:
        """The sources' shard blocks (``Mixture(shards=)``): every source's, under
        ``shuffle="shards"`` or when a source is remote (a full permutation would read
        about one shard per sample of each batch); ``None`` for the full permutation.

        A source's block width is ``shuffle_window``, else: for a remote source with a
        ``cache_limit``, the shards of its largest size that half the limit holds, split
        evenly between the remote sources that share the cache (the other half is room
        to prefetch); else 16. Never more than its shards."""
        assert self.sources is not None
        _check_shuffle(shuffle, window)
        remote = [x for x in self.sources.values() if isinstance(x, RemoteShardSet)]
        if shuffle != "shards" and not (shuffle is True and remote):
            if window is not None:
                raise ConfigError(
                    "shuffle_window is for shuffle='shards' (or the default order of a mixture "
                    f"with a remote source); got shuffle={shuffle!r}.",
                    field="shuffle_window",
                )
            return None
        share: dict[Any, int] = {}  # remote sources with a limit, per cache
        for x in remote:
            if x.cache.limit is not None:
                root = x.cache.root.resolve()
                share[root] = share.get(root, 0) + 1
        windows = dict(zip(sorted(self.sources), self._mix_windows or [], strict=False))
        out: dict[str, tuple[Callable[[int], np.ndarray], int]] = {}
        for name, shards in self.sources.items():
            n = max(1, shards.num_shards)
            w = min(n, 16) if window is None else window
            if window is None and isinstance(shards, RemoteShardSet) and shards.cache.limit:
                biggest = int(shards.shard_bytes(self.fields).max(initial=1)) or 1
                room = shards.cache.limit // biggest // (2 * share[shards.cache.root.resolve()])
                w = max(1, min(n, room))
            tw = windows.get(name)
            out[name] = (_row_offsets(shards.offsets) if tw is None else _window_offsets(tw), w)
        return out

    def _mixture_windows(self, seq_len: int, fields: Sequence[str] | None) -> dict[str, int]:
        """Every source as token windows of ``seq_len``; each one's window count."""
        assert self.sources is not None
        if fields is not None:
            raise ConfigError(
                "fields= selects row fields; with seq_len= the batch is the token field "
                f"{self.token_field!r}. Pass one of them."
            )
        self._mix_windows = []
        dtype = np.dtype(np.uint16)
        for name, shards in self.sources.items():
            try:
                # a remote source streams: each batch pins the token shards it reads
                # (its pass, _begin_mixture_remote), not the whole field
                stream = (
                    shards.lazy_token_stream(self.token_field)
                    if isinstance(shards, RemoteShardSet)
                    else shards.token_stream(self.token_field)
                )
            except DatafuelError as exc:
                raise ConfigError(
                    f"mixture source {name!r} has no token field {self.token_field!r} to cut "
                    f"seq_len={seq_len} windows from (its fields: {dict(shards.fields)}); the "
                    "sources of a mixture must all be token sets, or all rows.",
                    field=name,
                ) from exc
            windows = TokenWindows(stream, seq_len)
            self._mix_windows.append(windows)
            dtype = np.promote_types(dtype, stream.dtype)
        self.fields = [self.token_field]
        self._raw_spec = {self.token_field: (dtype, (seq_len + 1,))}
        if self.documents:
            # as for one token set; cu_seqlens is padded to the most segments any
            # source's window can hold, so that its length is the same every batch
            self._raw_spec["position_ids"] = (np.dtype(np.int64), (seq_len,))
            self._raw_spec["loss_mask"] = (np.dtype(np.bool_), (seq_len,))
            self._mix_segments = max(w.max_segments for w in self._mix_windows)
        return {n: len(w) for n, w in zip(self.sources, self._mix_windows, strict=True)}

    def _mixture_rows(self, fields: Sequence[str] | None) -> dict[str, int]:
        """Every source as rows of the same fields; each one's row count."""
        assert self.sources is not None
        names = list(self.sources)
        first = self.sources[names[0]]
        self.shards = first
        self._use_rows(fields)
        want = {f: first.fields[f] for f in self.fields}
        for name in names[1:]:
            have = self.sources[name].fields
            differ = {
                f: (str(want[f]), str(have.get(f)))
                for f in self.fields
                if f not in have
                or have[f].kind != want[f].kind
                or have[f].dtype != want[f].dtype
                or have[f].shape != want[f].shape
            }
            if differ:
                raise ConfigError(
                    f"mixture source {name!r} does not have the fields of source {names[0]!r} "
                    f"({differ}, as {names[0]!r} vs {name!r}); the sources of a mixture must all "
                    "be rows of the same fields, or all token sets (seq_len=).",
                    field=name,
                )
        return {n: len(sh) for n, sh in self.sources.items()}

    def _use_rows(self, fields: Sequence[str] | None) -> tuple[int, str]:
        """A sample is a row of ``fields`` (all by default); its count and sampler kind."""
        self.fields = list(self.shards.fields) if fields is None else list(fields)
        for f in self.fields:
            self.shards._check_field(f)
        self._raw_spec = {
            f: (spec.np_dtype, spec.shape)
            for f, spec in self.shards.fields.items()
            if f in self.fields and spec.kind == "fixed"
        }
        return len(self.shards), "rows"

    def _batch_spec(
        self, transform: Transform | None
    ) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
        """What a batch holds: the transform's declared output, or the fixed-shape fields."""
        if transform is not None:
            return _spec_from_transform(transform)
        loose = [f for f in self.fields if f not in self._raw_spec]
        if loose:
            kinds = {f: self.shards.fields[f].kind for f in loose}
            raise ConfigError(
                f"field(s) {kinds} hold variable-length data that cannot be collated into a tensor; "
                "pass a transform= that consumes them (e.g. the vision stage's JPEG decoder) "
                "or leave them out with fields=[...]."
            )
        return dict(self._raw_spec)

    # -- public API ------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch on this rank."""
        return self.sampler.num_batches()

    @property
    def epoch(self) -> int:
        """The epoch the next pass starts (or, after :meth:`load_state_dict`, resumes)."""
        return self.sampler.epoch

    @property
    def drop_last(self) -> bool:
        return self.sampler.drop_last

    @functools.cached_property
    def dataset(self) -> ShardDataset:
        """The same samples as a map-style ``torch`` dataset (``len(loader.dataset)``)."""
        from ._dataset import ShardDataset

        if self.mixture is not None:
            raise ConfigError(
                "a mixture has no single map-style dataset; iterate the Loader itself "
                f"(sources {self.mixture.names})."
            )
        if self.windows is not None:
            return ShardDataset(self.shards, seq_len=self._seq_len, token_field=self.token_field)
        return ShardDataset(self.shards, fields=self.fields)

    def set_epoch(self, epoch: int) -> None:
        """Run the next pass over ``epoch``'s order (``DistributedSampler.set_epoch``).

        A position just restored by :meth:`load_state_dict` still applies to that pass
        (as in StatefulDataLoader); passes already running keep their epoch.
        """
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[Batch]:
        return _LoaderIter(self)

    def resume(self) -> None:
        """Make the next pass continue where the latest one stopped (e.g. after a ``break``).

        The same as ``loader.load_state_dict(loader.state_dict())``.
        """
        self.load_state_dict(self.state_dict())

    def close(self) -> None:
        """Stop the worker threads of every pass in progress (also on ``break``/``del``)."""
        live = getattr(self, "_live", None)  # None when __init__ raised early
        for it in list(live or ()):
            it.close()

    def __enter__(self) -> Loader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to stop
            return

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position of the latest pass: its epoch and how much of it the
        loop consumed (before any pass: the start, or the state just loaded)."""
        state = self.sampler.state_dict()
        if self._progress is not None:
            state["epoch"], state["position"] = self._progress.epoch, self._progress.position
            if self.mixture is not None:
                state["base"] = self._progress.base
        elif self._pending is not None:
            state["position"] = self._pending
        return {"format": _STATE_FORMAT, "version": _STATE_VERSION, **state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``; refuses a state of another order, seed or data size."""
        if state.get("format") != _STATE_FORMAT or state.get("version") != _STATE_VERSION:
            raise ConfigError(
                f"not a datafuel loader state (format {_STATE_FORMAT!r} version {_STATE_VERSION}); "
                f"got format={state.get('format')!r} version={state.get('version')!r}."
            )
        self.sampler.load_state_dict(state)
        self._pending, self.sampler.position = self.sampler.position, 0
        self._progress = None

    def stats(self) -> StarvationReport:
        """Starvation report over every batch handed out since construction or :meth:`reset_stats`.

        For a mixture it also holds the realised mix: ``mix`` (each source's share of
        the samples handed out on this rank), ``mix_counts`` and ``mix_target`` (the
        weights used).
        """
        if self._meter is None:
            raise ConfigError("this loader was built with meter=False; there are no stats.")
        report = self._meter.report()
        if self._spans is not None:
            report = dataclasses.replace(
                report,
                **attribute(
                    self._spans,
                    starvation=report.starvation,
                    workers=self.num_workers,
                    running=bool(self._live),
                ),
            )
        if self.mixture is None or self._mix_counts is None:
            return report
        with self._lock:
            counts = [int(c) for c in self._mix_counts]
        total = sum(counts)
        names = self.mixture.names
        return dataclasses.replace(
            report,
            mix={k: (c / total if total else 0.0) for k, c in zip(names, counts, strict=True)},
            mix_counts=dict(zip(names, counts, strict=True)),
            mix_target=dict(self.mixture.weights),
        )

    def _record_mix(self, counts: np.ndarray) -> None:
        with self._lock:
            if self._mix_counts is not None:
                self._mix_counts += counts

    def reset_stats(self) -> None:
        if self._meter is not None:
            self._meter.reset()
        if self._spans is not None:
            self._spans.reset()

    def trace(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The recorded spans as a Chrome/Perfetto JSON trace, written to ``path`` if given.

        One track per worker thread, one for the training loop (its waits in
        ``next()``), each batch a slice with its stages nested inside, and a flow arrow
        from each batch's production to its consumption. Open it in
        https://ui.perfetto.dev or ``chrome://tracing``. Covers the last 8,192 batches.

        Examples
        --------
        >>> import json, numpy as np, tempfile, os
        >>> from datafuel.loaders import Loader, write_shards
        >>> d = tempfile.mkdtemp()
        >>> _ = write_shards(d, x=np.ones((8, 2), np.float32))
        >>> loader = Loader(d, batch_size=4)
        >>> _ = list(loader)
        >>> t = loader.trace(os.path.join(d, "trace.json"))
        >>> sorted({e["name"] for e in t["traceEvents"] if e["ph"] == "X"} & {"gather", "wait"})
        ['gather', 'wait']
        """
        if self._spans is None:
            raise ConfigError("this loader was built with spans=False; there is no trace.")
        return chrome_trace(self._spans, path)

    def plot(self, path: str | os.PathLike[str], *, title: str | None = None) -> dict[str, Any]:
        """Draw the recorded spans into a PNG at ``path``: the heartbeat (the loop busy or
        waiting over time), throughput over time and each thread's time per stage, titled
        with the bottleneck and its advice; 1200 x 900 pixels. Needs matplotlib
        (``pip install 'datafuel[plot]'``). Returns ``{"path", "width", "height", "title"}``.
        """
        from ._plot import profile_plot

        return profile_plot(self, path, title=title)

    def metrics(self, prefix: str = "loader/") -> dict[str, float | str]:
        """A flat dict for experiment trackers: ``wandb.log(loader.metrics())``.

        Keys (after ``prefix``): ``starvation`` (the loop's wait share), ``samples_per_s``,
        ``bytes_per_s``, ``wait_p50_ms``, ``wait_p95_ms``, ``stage_ms/<stage>`` and
        ``wait_share/<stage>`` per stage, ``bottleneck`` (the stage's name, ``"none"``)
        and ``bottleneck_id`` (its index in ``("none", *stages, "handoff")``).
        """
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a string. Got {prefix!r} instead.", field="prefix")
        r = self.stats()
        out: dict[str, float | str] = {
            f"{prefix}{k}": float(getattr(r, k))
            for k in ("starvation", "samples_per_s", "bytes_per_s", "wait_p50_ms", "wait_p95_ms")
        }
        if r.stages is not None and r.bottleneck is not None:
            for stage, v in r.stages.items():
                out[f"{prefix}stage_ms/{stage}"] = v["ms_per_batch"]
                out[f"{prefix}wait_share/{stage}"] = v["wait_share"]
            out[f"{prefix}bottleneck"] = r.bottleneck
            out[f"{prefix}bottleneck_id"] = float(BOTTLENECK_IDS.index(r.bottleneck))
        return out

    def log_to(self, writer: Any, step: int, prefix: str = "loader/") -> dict[str, float | str]:
        """Write :meth:`metrics` as scalars through a TensorBoard ``SummaryWriter``.

        Any object with ``add_scalar(tag, value, global_step)`` works; the
        ``bottleneck`` name is not a scalar and is written as ``bottleneck_id``.
        Returns the metrics.
        """
        add = getattr(writer, "add_scalar", None)
        if not callable(add):
            raise ConfigError(
                "writer must have add_scalar(tag, value, step), e.g. "
                f"torch.utils.tensorboard.SummaryWriter. Got {type(writer).__name__}."
            )
        check_int("step", step, low=0)
        m = self.metrics(prefix)
        for tag, value in m.items():
            if not isinstance(value, str):
                add(tag, value, step)
        return m
        if self._mix_counts is not None:
            with self._lock:
                self._mix_counts[:] = 0

    def __repr__(self) -> str:
        if self.mixture is not None:
            return (
                f"Loader({self.mixture!r}, batch_size={self.batch_size}, "
                f"seq_len={self._seq_len}, num_samples={self.sampler.num_samples}, "
                f"rank={self.rank}/{self.world_size}, device={self.device}, workers={self.num_workers})"
            )
        mode = (
            f"seq_len={self.windows.seq_len}"
            if self.windows is not None
            else f"fields={self.fields}"
        )
        return (
            f"Loader({str(self.shards.directory)!r}, batch_size={self.batch_size}, {mode}, "
            f"rank={self.rank}/{self.world_size}, device={self.device}, workers={self.num_workers})"
        )

    # -- worker side --------------------------------------------------------------
    def _take_ring(self) -> _Ring | None:
        """A pass's pinned ring: the spare one (reused across passes), else a new one."""
        if not self.pin_memory:
            return None
        with self._lock:
            ring, self._ring = self._ring, None
        if ring is not None:
            return ring
        slots = self.prefetch + self.num_workers + 1
        return _Ring(
            [
                {
                    name: torch.empty(
                        (self.batch_size, *shape),
                        dtype=torch.from_numpy(np.empty(0, dt)).dtype,
                        pin_memory=True,
                    )
                    for name, (dt, shape) in self.spec.items()
                }
                for _ in range(slots)
            ]
        )

    def _give_back_ring(self, ring: _Ring) -> None:
        with self._lock:
            self._ring = ring

    def _copy_stream_for(self) -> Any:
        if self._copy_stream is None:
            with self._lock:
                if self._copy_stream is None:
                    self._copy_stream = torch.cuda.Stream(device=self.device)
        return self._copy_stream

    def _make_batch(
        self,
        job: int,
        indices: np.ndarray,
        epoch: int,
        batch_index: int,
        starts: np.ndarray | None,
        ring: _Ring | None,
        marks: Any = None,
        remote: RemotePass | MixturePass | None = None,
    ) -> _Batch:
        """Batch ``job``: gather, transform, finite check, collate, copy (``marks`` each stage)."""
        if marks is not None:
            marks.stamp(GATHER)  # sample order done; gather (and waiting for a free pinned slot)
        if remote is None:
            return self._make_pinned(job, indices, epoch, batch_index, starts, ring, marks)
        # a remote set: the batch's files pinned in batch order (downloaded unless prefetched),
        # inside the gather span
        keys: Any = remote.acquire(job)  # (a mixture's: each source pass's keys)
        try:
            return self._make_pinned(job, indices, epoch, batch_index, starts, ring, marks)
        finally:
            remote.release(job, keys)

    def _make_pinned(
        self,
        job: int,
        indices: np.ndarray,
        epoch: int,
        batch_index: int,
        starts: np.ndarray | None,
        ring: _Ring | None,
        marks: Any,
    ) -> _Batch:
        """:meth:`_make_batch` once the batch's files are there."""
        b = len(indices)
        sample_ids = indices if starts is None else starts
        slot = _ring_slot(ring, job, b)
        arrays: dict[str, np.ndarray | torch.Tensor]
        if self.transform is None:
            arrays, nbytes = self._read_batch(indices, starts, slot)
            if marks is not None:
                marks.stamp(TRANSFORM, FINITE)  # no transform
        else:
            info = BatchInfo(
                indices=sample_ids, epoch=epoch, seed=self.seed, batch_index=batch_index
            )
            arrays, nbytes = self._transform_batch(indices, starts, info, marks), -1
        if self.check_finite:
            self._finite(arrays, sample_ids)
        if marks is not None:
            marks.stamp(COLLATE)  # finite check done: collate
        made = self._collate(arrays, slot, job, b, nbytes, ring, marks)
        if self.mixture is not None:
            made.mix = np.bincount(np.asarray(arrays["source"]), minlength=len(self.mixture.names))
        return made

    def _collate(
        self,
        arrays: dict[str, np.ndarray | torch.Tensor],
        slot: dict[str, np.ndarray] | None,
        job: int,
        b: int,
        nbytes: int,
        ring: _Ring | None,
        marks: Any,
    ) -> _Batch:
        """Host tensors (a transform's output copied into the pinned slot), then the H2D copy."""
        if slot is not None and self.transform is not None:
            for k, v in arrays.items():
                if isinstance(v, np.ndarray):  # device tensors (DALI on the GPU) stay put
                    np.copyto(slot[k], v)
                    arrays[k] = slot[k]
        if nbytes < 0:
            nbytes = sum(_nbytes(a) for a in arrays.values())
        if not self._cuda:
            tensors = Batch([(k, self._host_tensor(k, a)) for k, a in arrays.items()])
            if marks is not None:
                marks.stamp(COPY, END)  # no copy
            return _Batch(tensors, nbytes, b)
        if marks is not None:
            marks.stamp(COPY)  # H2D copy
        made = self._to_device(arrays, job, b, nbytes, ring, timed=marks is not None)
        if marks is not None:
            marks.stamp(END)
        return made

    def _read_batch(
        self, indices: np.ndarray, starts: np.ndarray | None, slot: dict[str, np.ndarray] | None
    ) -> tuple[dict[str, np.ndarray | torch.Tensor], int]:
        """The batch without a transform, into ``slot`` when there is one; its bytes (-1: count them)."""
        if self.mixture is not None:
            return self._read_mixture(indices, slot)
        if self.windows is None:
            return dict(self.shards.gather(indices, self.fields, out=slot)), -1
        assert starts is not None
        b = len(indices)
        if slot is not None:
            dst = slot[self.token_field]
        elif not self._cuda:
            dst = np.empty((b, self.windows.length), np.int64)  # widened as copied
        else:
            dst = None
        nbytes = b * self.windows.length * self.windows.stream.dtype.itemsize
        if not self.documents:
            return {self.token_field: self.windows.read(starts, out=dst)}, nbytes
        tokens, doc = self.windows.read_documents(starts, out=dst, fields=slot)
        arrays: dict[str, np.ndarray | torch.Tensor] = {self.token_field: tokens}
        for k in DOCUMENT_FIELDS:
            arrays[k] = a = doc[k]
            nbytes += a.nbytes
        return arrays, nbytes

    def _read_mixture(
        self, positions: np.ndarray, slot: dict[str, np.ndarray] | None
    ) -> tuple[dict[str, np.ndarray | torch.Tensor], int]:
        """Global positions of the mixture: each source's samples gathered into batch order."""
        assert self.mixture is not None and self.sources is not None
        src, sample, passes = self.mixture.samples(positions)
        b = len(positions)
        out: dict[str, np.ndarray] = {}
        for name, (dt, shape) in self.spec.items():
            if slot is not None:
                out[name] = slot[name]
            elif self._seq_len is not None and name == self.token_field and not self._cuda:
                out[name] = np.empty((b, *shape), np.int64)  # widened as copied
            else:
                out[name] = np.empty((b, *shape), dt)
        out["source"][:] = src
        if self._mix_windows is not None:
            return self._read_mixture_windows(src, sample, passes, out)
        shard_sets = list(self.sources.values())
        for s in np.unique(src).tolist():
            sel = np.flatnonzero(src == s)
            got = shard_sets[s].gather(sample[sel], self.fields)
            for f in self.fields:
                out[f][sel] = got[f]
        return dict(out), sum(a.nbytes for a in out.values())

    def _read_mixture_windows(
        self,
        src: np.ndarray,
        sample: np.ndarray,
        passes: np.ndarray,
        out: dict[str, np.ndarray],
    ) -> tuple[dict[str, np.ndarray | torch.Tensor], int]:
        """A token mixture's batch: its windows ordered by source (one stable sort), each
        source's read in one call into its contiguous run of a staging buffer (its
        document fields beside them), then one scatter into batch order. A handful of
        numpy calls a batch whatever the sources, not a dozen per source: the batch is
        made under the GIL, which the workers share with the loop."""
        assert self._mix_windows is not None and self._seq_len is not None
        t, b = self._seq_len, src.size
        order = np.argsort(src, kind="stable")
        counts = np.bincount(src, minlength=len(self._mix_windows))
        ends = np.cumsum(counts)
        starts = self._mixture_starts_all(src[order], sample[order], passes[order])
        tok = out[self.token_field]
        stage = np.empty(tok.shape, tok.dtype)
        pos = mask = None
        if self.documents:
            pos = np.empty((b, t), np.int64)
            mask = np.empty((b, t), np.bool_)
        segments: list[np.ndarray] = []
        longest = 0
        for s_ in np.flatnonzero(counts).tolist():
            a, z = int(ends[s_] - counts[s_]), int(ends[s_])
            w = self._mix_windows[s_]
            if pos is None or mask is None:
                w.read(starts[a:z], out=stage[a:z])
                continue
            _, doc = w.read_documents(
                starts[a:z],
                out=stage[a:z],
                fields={"position_ids": pos[a:z], "loss_mask": mask[a:z]},
            )
            cu = doc["cu_seqlens"]
            real = cu[cu < (z - a) * t].astype(np.int64)  # the run's flat segment starts
            rows = order[a + real // t]  # their rows in the batch
            segments.append(rows * t + real % t)
            longest = max(longest, int(doc["max_seqlen"]))
        tok[order] = stage
        itemsize = self._raw_spec[self.token_field][0].itemsize
        nbytes = b * (t + 1) * itemsize + out["source"].nbytes
        if pos is None or mask is None:
            return dict(out), nbytes
        out["position_ids"][order] = pos
        out["loss_mask"][order] = mask
        cu_all = np.full(b * self._mix_segments + 1, b * t, np.int32)
        flat = np.sort(np.concatenate(segments))
        cu_all[: flat.size] = flat
        arrays: dict[str, np.ndarray | torch.Tensor] = {
            self.token_field: tok,
            "position_ids": out["position_ids"],
            "cu_seqlens": cu_all,
            "max_seqlen": np.array(longest, np.int32),
            "loss_mask": out["loss_mask"],
            "source": out["source"],
        }
        return arrays, nbytes + sum(arrays[k].nbytes for k in DOCUMENT_FIELDS)

    def _mixture_starts_all(
        self, src: np.ndarray, windows: np.ndarray, passes: np.ndarray
    ) -> np.ndarray:
        """:meth:`_mixture_starts` of windows of every source at once: one offset per
        (source, pass) pair of the batch (a few), looked up by one ``np.unique``."""
        assert self.mixture is not None and self._mix_windows is not None
        m = self.mixture
        width = int(passes.max()) + 1 if passes.size else 1
        pairs, inverse = np.unique(src.astype(np.int64) * width + passes, return_inverse=True)
        offs = np.array(
            [
                self._mix_windows[int(k // width)].offset(
                    m.pass_key(int(k // width), int(k % width)), 0, m.shuffle
                )
                for k in pairs.tolist()
            ],
            np.int64,
        )
        return self._seq_len * windows.astype(np.int64) + offs[inverse.reshape(-1)]  # type: ignore[operator]

    def _mixture_raw(self, positions: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """A transform's input for global positions of the mixture: each source's gather (or
        windows) put into batch order, variable-length fields as lists, with ``source``."""
        assert self.mixture is not None and self.sources is not None
        src, sample, passes = self.mixture.samples(positions)
        b = len(positions)
        shard_sets = list(self.sources.values())
        parts: list[tuple[np.ndarray, Mapping[str, Any]]] = []
        for s in np.unique(src).tolist():
            sel = np.flatnonzero(src == s)
            if self._mix_windows is not None:
                starts = self._mixture_starts(s, sample[sel], passes[sel])
                parts.append((sel, {self.token_field: self._mix_windows[s].read(starts)}))
            else:
                parts.append((sel, shard_sets[s].gather(sample[sel], self.fields)))
        raw: dict[str, Any] = {}
        for f in self.fields:
            pieces = [(sel, got[f]) for sel, got in parts]
            if isinstance(pieces[0][1], np.ndarray):
                dtype = np.result_type(*(p.dtype for _, p in pieces))
                a = np.empty((b, *pieces[0][1].shape[1:]), dtype)
                for sel, p in pieces:
                    a[sel] = p
                raw[f] = a
            else:  # bytes or ragged fields: one list in batch order
                items: list[Any] = [None] * b
                for sel, p in pieces:
                    for i, v in zip(sel.tolist(), p, strict=True):
                        items[i] = v
                raw[f] = items
        source = src.astype(np.int64)
        raw["source"] = source
        return raw, source

    def _mixture_starts(self, s: int, windows: np.ndarray, passes: np.ndarray) -> np.ndarray:
        """Token starts of source ``s``'s windows: each pass cuts the stream at its own offset."""
        return self._mixture_starts_all(np.full(windows.size, s, np.int64), windows, passes)

    def _transform_batch(
        self,
        indices: np.ndarray,
        starts: np.ndarray | None,
        info: BatchInfo,
        marks: Any = None,
    ) -> dict[str, np.ndarray | torch.Tensor]:
        """The transform's checked output (the caller copies host arrays into the pinned slot)."""
        assert self.transform is not None
        source = None
        if self.mixture is not None:
            raw, source = self._mixture_raw(indices)
        elif self.windows is not None:
            assert starts is not None
            raw = {self.token_field: self.windows.read(starts)}
        else:
            raw = dict(self.shards.gather(indices, self.fields))
        if marks is not None:
            marks.stamp(TRANSFORM)  # gather done: transform
        result = self.transform(raw, info)
        if source is not None and isinstance(result, Mapping) and "source" not in result:
            result = {**result, "source": source}  # each batch carries its sources
        out = self._check_output(result, len(indices))
        if marks is not None:
            marks.stamp(FINITE)  # finite check
        return out

    def _host_tensor(self, name: str, a: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(a, torch.Tensor):  # a transform's device tensor: device=None means the host
            return a.to(self.device if self.device is not None else "cpu")
        if self._seq_len is not None and name == self.token_field and a.dtype.kind == "u":
            return torch.from_numpy(a.astype(np.int64))  # widen tokens after the gather
        if not a.flags.writeable:  # e.g. a transform returned a view of a memmap
            a = a.copy()
        return torch.from_numpy(a)

    def _to_device(
        self,
        arrays: Mapping[str, np.ndarray | torch.Tensor],
        job: int,
        b: int,
        nbytes: int,
        ring: _Ring | None,
        timed: bool = False,
    ) -> _Batch:
        stream = self._copy_stream_for()
        with torch.cuda.stream(stream):
            start = None
            if timed:  # the copy's device time, read later once done (never a sync here)
                start = torch.cuda.Event(enable_timing=True)
                start.record(stream)
            out = Batch()
            for k, a in arrays.items():
                if isinstance(a, torch.Tensor):  # already on a GPU (a transform put it there)
                    out[k] = a.to(self.device, non_blocking=True)
                    continue
                if self.documents and k == "max_seqlen":
                    out[k] = torch.from_numpy(a)  # stays on the CPU: int() never waits on the GPU
                    continue
                pinned = ring.slots[job % len(ring.slots)].get(k) if ring is not None else None
                host = (
                    pinned[:b]
                    if pinned is not None
                    else torch.from_numpy(np.ascontiguousarray(a))  # cu_seqlens: not per sample
                )
                dev = host.to(self.device, non_blocking=pinned is not None)
                if self._seq_len is not None and k == self.token_field:
                    dev = _widen(dev)  # uint16/uint32 crossed the bus; int64 made on the GPU
                out[k] = dev
            event = torch.cuda.Event(enable_timing=timed)
            event.record(stream)
        if ring is not None:
            ring.events[job % len(ring.slots)] = event
        return _Batch(out, nbytes, b, event, None if start is None else (start, event))

    def _check_output(
        self, result: Mapping[str, Any], b: int
    ) -> dict[str, np.ndarray | torch.Tensor]:
        """Each declared field as a numpy array, or as a tensor where it lives on a device.

        Host tensors become arrays (no copy); a device tensor (e.g. the DALI backend's
        nvJPEG output) is checked for dtype and shape and kept on its device.
        """
        if not isinstance(result, Mapping):
            raise SchemaError(
                f"transform must return a dict of arrays. Got {type(result).__name__} instead."
            )
        extra = sorted(set(result) - set(self.spec))
        missing = sorted(set(self.spec) - set(result))
        if extra or missing:
            raise SchemaError(
                f"transform returned fields {sorted(result)} but its output_spec declares {sorted(self.spec)} "
                f"(missing {missing}, undeclared {extra})."
            )
        out: dict[str, np.ndarray | torch.Tensor] = {}
        for name, (dt, shape) in self.spec.items():
            v = result[name]
            a: np.ndarray | torch.Tensor
            if isinstance(v, torch.Tensor) and v.device.type != "cpu":
                a, got_dt, got_shape = v, str(v.dtype).removeprefix("torch."), tuple(v.shape)
            else:
                a = v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
                got_dt, got_shape = a.dtype.name, a.shape
            if got_dt != np.dtype(dt).name or got_shape != (b, *shape):
                raise SchemaError(
                    f"transform output {name!r} is {got_dt} {got_shape}; output_spec declares "
                    f"{dt} {(b, *shape)} for a batch of {b}.",
                    field=name,
                )
            out[name] = a
        return out

    @staticmethod
    def _finite(arrays: Mapping[str, np.ndarray | torch.Tensor], sample_ids: np.ndarray) -> None:
        for name, a in arrays.items():
            if isinstance(a, torch.Tensor):  # on a device: one reduction there, rows only if bad
                if not a.is_floating_point() or a.numel() == 0 or bool(torch.isfinite(a).all()):
                    continue
                rows = (~torch.isfinite(a.reshape(len(a), -1)).all(dim=1)).cpu().numpy()
            elif a.dtype.kind != "f" or a.size == 0 or np.isfinite(a).all():
                continue
            else:
                rows = ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
            bad = [int(i) for i in np.asarray(sample_ids)[rows]]
            raise NonFiniteError(
                f"field {name!r} holds NaN or inf in {len(bad)} sample(s) of this batch, "
                f"sample indices {bad[:20]}{' ...' if len(bad) > 20 else ''}; "
                "clean the data (datafuel.clean) or pass check_finite=False.",
                field=name,
                indices=bad,
            )


def _open_set(
    source: Any, cache_dir: str | os.PathLike[str] | None, cache_limit: int | None
) -> ShardSet:
    """A :class:`ShardSet` (a :class:`RemoteShardSet` for a bucket URL) from a source argument."""
    if isinstance(source, ShardSet):
        return source
    if is_remote(source):
        return RemoteShardSet(source, cache_dir=cache_dir, cache_limit=cache_limit)
    if cache_dir is not None or cache_limit is not None:
        raise ConfigError(
            f"cache_dir= and cache_limit= are for a remote set (s3://, gs://, az://, https://); "
            f"{source!r} is local and is read in place, never cached or evicted.",
            field="cache_limit",
        )
    return ShardSet(source)


def _check_shuffle(shuffle: Any, window: int | None) -> None:
    """``shuffle`` is True, False or ``"shards"``; ``shuffle_window`` an int >= 1 or None."""
    if shuffle not in (True, False, "shards") or (
        isinstance(shuffle, (int, float)) and not isinstance(shuffle, bool)
    ):
        raise ConfigError(
            f"shuffle must be True, False or 'shards'. Got {shuffle!r} instead.",
            field="shuffle",
        )
    if window is not None:
        check_int("shuffle_window", window)


def _row_offsets(offsets: np.ndarray) -> Callable[[int], np.ndarray]:
    """A row source's shard offsets for any pass (``Mixture(shards=)``)."""
    fixed = np.asarray(offsets, np.int64)

    def of(pass_key: int) -> np.ndarray:
        return fixed

    return of


def _window_offsets(windows: TokenWindows) -> Callable[[int], np.ndarray]:
    """A token source's window offsets per shard on a pass's grid (``Mixture(shards=)``):
    the grid's offset drawn from the pass key, as its windows' starts are."""

    def of(pass_key: int) -> np.ndarray:
        return windows.shard_offsets(windows.offset(pass_key, 0, True))

    return of


def _open_sources(
    source: Mapping[Any, Any],
    cache_dir: str | os.PathLike[str] | None = None,
    cache_limit: int | None = None,
) -> dict[str, ShardSet]:
    """A mixture's sources by sorted name, each opened as a :class:`ShardSet`."""
    if not source:
        raise ConfigError("a mixture needs at least one source; got an empty mapping.")
    out: dict[str, ShardSet] = {}
    for name in sorted(source, key=str):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"mixture source names must be non-empty strings. Got {name!r}.")
        value = source[name]
        if isinstance(value, ShardSet):
            out[name] = value
        elif isinstance(value, (str, os.PathLike)):
            try:
                out[name] = (
                    RemoteShardSet(str(value), cache_dir=cache_dir, cache_limit=cache_limit)
                    if is_remote(value)
                    else ShardSet(value)
                )
            except DatafuelError as exc:
                exc.message = f"mixture source {name!r}: {exc.message}"
                exc.args = (exc.message,)
                raise
        else:
            raise ConfigError(
                f"mixture source {name!r} must be a shard directory, URL or ShardSet. "
                f"Got {type(value).__name__} instead.",
                field=name,
            )
    return out


def _ring_slot(ring: _Ring | None, job: int, b: int) -> dict[str, np.ndarray] | None:
    """Job ``job``'s pinned ring slot as arrays of ``b`` rows, once its last copy is done."""
    if ring is None:
        return None
    s = job % len(ring.slots)
    ev = ring.events[s]
    if ev is not None:
        ev.synchronize()  # the previous copy out of this slot has finished
    return {k: t[:b].numpy() for k, t in ring.slots[s].items()}


def _check_documents(value: Any, seq_len: int | None, transform: Any) -> bool | str:
    """``documents=``: False, True or ``"pack"``, only with ``seq_len`` and no transform."""
    if not (value is False or value is True or value == "pack"):
        raise ConfigError(
            f"documents must be False, True or 'pack'. Got {value!r} instead.", field="documents"
        )
    if value and seq_len is None:
        raise ConfigError(
            f"documents={value!r} adds document fields to token windows; it needs seq_len= "
            "(and a ragged token field, token_field=).",
            field="documents",
        )
    if value and transform is not None:
        raise ConfigError(
            f"documents={value!r} cannot be combined with transform=: the document fields "
            "describe the windows as read; compute them in the transform instead.",
            field="documents",
        )
    return value  # type: ignore[no-any-return]


def _check_trace_path(value: Any, spans: bool) -> str | os.PathLike[str] | None:
    """``trace=``: None, or a file path (not a directory) that needs ``spans=True``."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(
            f"trace must be a file path or None. Got {value!r} instead.", field="trace"
        )
    if not spans:
        raise ConfigError("trace= writes the per-stage spans; it needs spans=True.", field="trace")
    if os.path.isdir(value):
        raise ConfigError(
            f"trace={str(value)!r} is a directory; name a file such as trace.json.", field="trace"
        )
    return value  # type: ignore[no-any-return]


def _check_switch_interval(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(
            f"switch_interval must be a number of seconds in (0, 1] or None. Got {value!r} instead."
        )
    return float(value)


def _check_stall_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            f"stall_timeout must be a positive number of seconds or None. Got {value!r} instead."
        )
    return float(value)


def _dump_stacks() -> str:
    """Every thread's stack via ``faulthandler``: to stderr, else to a temporary file; where."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced by an in-memory stream
        fd = -1
    if fd >= 0:
        sys.stderr.flush()
        faulthandler.dump_traceback(fd, all_threads=True)
        return "stderr"
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"datafuel-stall-{os.getpid()}-", suffix=".txt", delete=False
    ) as f:
        faulthandler.dump_traceback(f, all_threads=True)
    return f.name  # named in the WorkerError (a warning might be turned into an error)


def _nbytes(a: np.ndarray | torch.Tensor) -> int:
    return int(a.numel() * a.element_size()) if isinstance(a, torch.Tensor) else int(a.nbytes)


def _widen(t: torch.Tensor) -> torch.Tensor:
    """Unsigned 16/32-bit token ids to int64 using only signed ops (well supported on GPUs)."""
    if t.dtype == torch.uint16:
        return t.view(torch.int16).to(torch.int64).bitwise_and_(0xFFFF)
    if t.dtype == torch.uint32:
        return t.view(torch.int32).to(torch.int64).bitwise_and_(0xFFFFFFFF)
    return t.to(torch.int64)


class _LoaderIter:
    """One pass over the current epoch (from a restored position, once); owns its threads."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        sampler = loader.sampler
        self._epoch = sampler.epoch
        start = loader._pending or 0
        loader._pending = None  # a restored position is used by this pass only
        self._base = sampler.base if isinstance(sampler, MixtureSampler) else 0
        self._progress = loader._progress = _Progress(self._epoch, start, self._base)
        self._plan = sampler.plan(start)
        self._order = sampler.order()
        self._step = sampler.world_size
        self._first_batch = start // (sampler.world_size * sampler.batch_size)
        self._starts = (
            loader.windows.starts(sampler.seed, self._epoch, bool(sampler.shuffle))
            if loader.windows is not None
            else None
        )
        self._j = 0
        self._closed = False
        self._ended = False
        self._meter = loader._meter
        self._spans = loader._spans
        self._pass = next(loader._pass_ids)
        self._last = time.perf_counter_ns()
        #: the loop's record of a batch in one C call, the spans' wait row and the meter
        #: both (w(j, t0, t1, samples, nbytes)), where the native store and rings are built
        self._fused = self._loop_recorder()
        #: else the spans' wait record, the pass's key bound once: w(j, t0, t1)
        self._span_wait = (
            None
            if self._spans is None or self._fused is not None
            else self._spans.waiter(self._pass, self._epoch, self._first_batch)
        )
        self._ring: _Ring | None = None
        self._remote: RemotePass | MixturePass | None = None
        self._prefetcher: Prefetcher[_Batch] | None = None
        if not self._plan:  # restored at the epoch's end, or fewer samples than ranks
            self._handed_out_epoch()
            return
        self._ring = loader._take_ring()
        self._remote = loader._begin_remote(self._plan, self._order, self._epoch)
        if self._spans is not None:
            self._spans.sample_cpu()
        # the closure holds the loader and the plan, never this iterator, so dropping the
        # iterator (break) runs __del__ and stops the threads at once
        produce = _producer(
            loader,
            self._plan,
            self._order,
            self._starts,
            self._epoch,
            self._first_batch,
            self._ring,
            self._spans,
            self._pass,
            self._remote,
        )
        self._prefetcher = Prefetcher(
            produce,
            len(self._plan),
            num_workers=loader.num_workers,
            depth=loader.prefetch,
            switch_interval=loader.switch_interval,
        )
        if self._spans is not None:
            self._spans.name_threads(self._prefetcher.threads)
        loader._live.add(self)

    def __iter__(self) -> _LoaderIter:
        return self

    def __len__(self) -> int:
        return len(self._plan) - self._j

    def _handed_out_epoch(self) -> None:
        """The epoch's last batch is out: a fresh pass starts the next epoch (unless one was set)."""
        sampler = self._loader.sampler
        if sampler.epoch == self._epoch and self._loader._pending is None:
            sampler.epoch = self._epoch + 1
            if isinstance(sampler, MixtureSampler):  # the next epoch continues the mixed order
                sampler.base = self._base + self._progress.position

    def _stop(self) -> None:
        """The loop saw the end of the pass: its saved place becomes the next epoch's start."""
        if not self._ended:
            self._ended = True
            self._move_to(self._epoch + 1, 0, self._base + self._progress.position)
        self.close()

    def _move_to(self, epoch: int, position: int, base: int | None = None) -> None:
        """This pass's new place; also the loader's, while this is its latest pass."""
        new = _Progress(epoch, position, self._base if base is None else base)
        if self._loader._progress is self._progress:
            self._loader._progress = new
        self._progress = new

    def __next__(self) -> Batch:
        t0 = time.perf_counter_ns()
        j = self._j
        if j >= len(self._plan):
            self._stop()
            raise StopIteration
        if self._closed or self._prefetcher is None:
            raise StopIteration
        batch = (
            self._wait_profiled(j, t0)
            if self._spans is not None and PROFILER_FLAG._is_profiler_enabled and profiling()
            else None
        )  # the module flag first: a profiler that is off costs one attribute read a batch
        if batch is None:
            batch = self._wait_for(j, t0)
        if batch.event is not None:
            current = torch.cuda.current_stream(self._loader.device)
            current.wait_event(batch.event)
            for t in batch.tensors.values():
                if t.is_cuda:  # max_seqlen of documents= stays on the CPU
                    t.record_stream(current)
        t1 = time.perf_counter_ns()
        self._j = j + 1
        self._move_to(self._epoch, self._progress.position + self._step * self._plan[j][1])
        self._record(j, t0, t1, batch)
        if self._j >= len(self._plan):
            self._handed_out_epoch()
            self.close()  # the epoch is done: free the threads before the loop asks again
        return batch.tensors

    def _loop_recorder(self) -> Any:
        """The meter's native recorder, with the spans' wait ring bound in if they are on
        (``None``: no meter, or the pure-Python meter or rings)."""
        if self._meter is None:
            return None
        if self._spans is None:
            return self._meter.recorder(self._last)
        if self._meter.tally is None or not self._spans.native:
            return None
        return self._spans.waiter(
            self._pass, self._epoch, self._first_batch, self._meter.tally, self._last
        )

    def _record(self, j: int, t0: int, t1: int, batch: _Batch) -> None:
        """The loop's wait ``[t0, t1]`` (ns) for batch ``j``: into the spans and the meter."""
        if self._fused is not None:
            self._fused(j, t0, t1, batch.size, batch.nbytes)
        else:
            if self._span_wait is not None:
                self._span_wait(j, t0, t1)
            if self._meter is not None:
                self._meter.record(
                    wait=(t1 - t0) / 1e9,
                    wall=(t1 - self._last) / 1e9,
                    samples=batch.size,
                    nbytes=batch.nbytes,
                )
            self._last = t1
        if batch.mix is not None and self._meter is not None:
            self._loader._record_mix(batch.mix)

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._loader._live.discard(self)
        if self._spans is not None:
            self._spans.sample_cpu()
        stuck = self._prefetcher is not None and self._prefetcher.close(timeout)
        if self._remote is not None:
            self._remote.close()
        if self._ring is not None and not stuck:
            # a worker still in a job may yet write into its pinned ring slot: then the
            # ring is dropped, and the next pass gets a fresh one
            self._loader._give_back_ring(self._ring)
        self._ring = None
        if self._loader._trace_path is not None and self._prefetcher is not None:
            self._loader.trace(self._loader._trace_path)

    def _wait_profiled(self, j: int, t0: int) -> _Batch:
        """:meth:`_wait_for` inside a ``record_function`` range (a torch profiler is on)."""
        from torch.profiler import record_function

        with record_function("datafuel.wait"):
            return self._wait_for(j, t0)

    def _wait_for(self, j: int, t0: int) -> _Batch:
        """Batch ``j`` from the workers; a stall, a worker's error or a close, as one error."""
        assert self._prefetcher is not None
        try:
            ok, value = self._prefetcher.get(j, self._loader.stall_timeout)
        except TimeoutError:
            raise self._stalled(j, (time.perf_counter_ns() - t0) / 1e9) from None
        except RuntimeError as exc:  # closed under us (another thread), or the workers died
            if self._closed:
                raise StopIteration from None
            self.close()
            ids = self._sample_ids(j)
            raise WorkerError(
                f"batch {self._first_batch + j} of epoch {self._epoch} (sample indices "
                f"{ids[:20]}{' ...' if len(ids) > 20 else ''}) could not be made: {exc}",
                indices=ids,
            ) from exc
        if not ok:
            self.close()
            if isinstance(value, NonFiniteError):
                raise value
            raise _as_loader_error(value, self._epoch) from (
                value.exc if isinstance(value, _Failure) else value
            )
        return value  # type: ignore[no-any-return]

    def _sample_ids(self, j: int) -> list[int]:
        """The sample indices of this pass's batch ``j`` (for errors)."""
        off, b = self._plan[j]
        idx = self._order[off : off + b]
        return [int(i) for i in (idx if self._starts is None else self._starts[idx])]

    def _stalled(self, j: int, waited: float) -> WorkerError:
        """Dump every stack, stop the workers (without waiting on the stuck one), name it all."""
        assert self._prefetcher is not None
        busy = self._prefetcher.busy()
        dumped = _dump_stacks()
        ids = self._sample_ids(j)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the error says it all
            self.close(timeout=0.0)
        where = "; ".join(f"{name} in {place}" for name, place in busy.items()) or "none busy"
        return WorkerError(
            f"loader stalled: batch {self._first_batch + j} of epoch {self._epoch} "
            f"(sample indices {ids[:20]}{' ...' if len(ids) > 20 else ''}) was not ready after "
            f"{waited:.1f} s (stall_timeout={self._loader.stall_timeout:g}); workers: {where}; "
            f"every thread's stack was dumped to {dumped}.",
            indices=ids,
            waited=waited,
            batch_index=self._first_batch + j,
            stuck=busy,
        )

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            return


def _producer(
    loader: Loader,
    plan: list[tuple[int, int]],
    order: np.ndarray,
    starts: np.ndarray | None,
    epoch: int,
    first_batch: int,
    ring: _Ring | None,
    spans: SpanRecorder | None = None,
    pass_id: int = 0,
    remote: RemotePass | MixturePass | None = None,
) -> Any:
    # a C ring's plain marks are in the ring already: nothing to call at the batch's end
    plain = RING_MARKS if spans is not None and spans.native else None

    def produce(j: int) -> _Batch:
        marks = None if spans is None else spans.begin(pass_id, j, epoch, first_batch + j)
        off, b = plan[j]
        idx = order[off : off + b]
        st = None if starts is None else starts[idx]
        try:
            made = loader._make_batch(j, idx, epoch, first_batch + j, st, ring, marks, remote)
        except NonFiniteError:
            if marks is not None:
                close_marks(marks)
            raise
        except Exception as exc:
            if marks is not None:
                close_marks(marks)
            raise _Failure(exc, idx if st is None else st, first_batch + j) from exc
        if (
            marks is not None
            and spans is not None
            and (made.gpu is not None or type(marks) is not plain)
        ):
            spans.batch(marks, made.gpu)  # ends a profiled batch's open range, keeps its events
        return made

    return produce


def _as_loader_error(exc: Exception, epoch: int) -> Exception:
    if isinstance(exc, NonFiniteError):
        return exc
    if isinstance(exc, _Failure):
        inner = exc.exc
        ids = [int(i) for i in exc.indices]
        shown = f"{ids[:20]}{' ...' if len(ids) > 20 else ''}"
        return WorkerError(
            f"loader worker failed on batch {exc.batch_index} of epoch {epoch} "
            f"(sample indices {shown}): {type(inner).__name__}: {inner}",
            indices=ids,
        )
    return WorkerError(f"loader worker failed: {type(exc).__name__}: {exc}")
