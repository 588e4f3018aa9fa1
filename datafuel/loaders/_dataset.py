"""``ShardDataset``: a map-style ``torch.utils.data.Dataset`` over a shard set.

For code that wants ``torch.utils.data.DataLoader`` (its samplers, its process
workers). The :class:`Loader` is faster; this exists so that nobody has to choose
between datafuel's shards and an existing training script.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from datafuel.errors import ConfigError

from ._reader import ShardSet
from ._windows import TokenWindows

__all__ = ["ShardDataset"]


class ShardDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Row ``i`` of a shard set as a dict of tensors (or token window ``i``).

    The shard set is opened lazily in each process, so the dataset pickles as a
    directory path (``DataLoader`` workers started with spawn or forkserver).

    Parameters
    ----------
    source
        A shard directory or a :class:`ShardSet`.
    fields
        Fields to return (default: all). Fixed fields come back as tensors, bytes
        fields as ``bytes``, ragged fields as 1-D tensors.
    seq_len, token_field
        Token-window mode: item ``i`` is ``{token_field: int64 tensor (seq_len + 1,)}``,
        the window starting at token ``i * seq_len`` (no epoch offset: a map-style
        dataset has no epochs; shuffle with the DataLoader's sampler).

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datafuel.loaders import write_shards
    >>> d = tempfile.mkdtemp()
    >>> _ = write_shards(d, x=np.ones((6, 2), np.float32), y=np.arange(6))
    >>> ds = ShardDataset(d)
    >>> len(ds), int(ds[4]["y"])
    (6, 4)
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | ShardSet,
        *,
        fields: Sequence[str] | None = None,
        seq_len: int | None = None,
        token_field: str = "tokens",
    ) -> None:
        shards = source if isinstance(source, ShardSet) else ShardSet(source)
        self.directory = shards.directory
        self.seq_len = seq_len
        self.token_field = token_field
        if seq_len is not None and fields is not None:
            raise ConfigError("pass fields= (rows) or seq_len= (token windows), not both.")
        self.fields = list(shards.fields) if fields is None else list(fields)
        for f in self.fields:
            shards._check_field(f)
        self._shards: ShardSet | None = shards
        self._windows: TokenWindows | None = None
        self._len = len(self._open_windows()) if seq_len is not None else len(shards)

    def _open(self) -> ShardSet:
        if self._shards is None:
            self._shards = ShardSet(self.directory)
        return self._shards

    def _open_windows(self) -> TokenWindows:
        if self._windows is None:
            assert self.seq_len is not None
            self._windows = TokenWindows(self._open().token_stream(self.token_field), self.seq_len)
        return self._windows

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_shards"] = None
        state["_windows"] = None
        return state

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self._len <= index < self._len:
            raise IndexError(
                f"index {index} out of range for {self._len} samples in {self.directory}."
            )
        index = index % self._len
        if self.seq_len is not None:
            w = self._open_windows()
            win = w.stream.read(index * self.seq_len, w.length)
            return {self.token_field: torch.from_numpy(win.astype(np.int64))}
        row = self._open().gather([index], self.fields)
        out: dict[str, Any] = {}
        for name, value in row.items():
            v = value[0]
            out[name] = (
                torch.from_numpy(np.array(v)) if isinstance(v, (np.ndarray, np.generic)) else v
            )
        return out
