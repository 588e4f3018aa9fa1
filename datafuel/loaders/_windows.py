"""``TokenWindows``: the token windows of one epoch for causal-LM training.

Sampling (also in FORMAT.md, "Sampling"): an epoch of a stream of ``N`` tokens with
``seq_len = T`` has ``n = (N - 1) // T`` windows of ``T + 1`` tokens whose starts are
``o + T * k`` for ``k`` in ``range(n)``. Consecutive windows share one token (the
last target of one is the first input of the next), so every token but at most ``T``
at the ends is a target exactly once per epoch. The offset ``o`` is drawn per
``(seed, epoch)`` in ``[0, N - 1 - n * T]`` (0 without shuffling), so epochs cut the
stream at different places; the loader then shuffles the order of the ``n`` windows
like rows (a full permutation per epoch, without replacement).
"""

from __future__ import annotations

import numpy as np

from datafuel._checks import check_int

from ._tokens import TokenStream

__all__ = ["TokenWindows"]


class TokenWindows:
    """Window starts of a :class:`TokenStream` per epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.loaders import TokenStream
    >>> ts = TokenStream([np.arange(11, dtype=np.uint16)], [np.array([0, 11], np.uint64)], np.dtype("uint16"))
    >>> w = TokenWindows(ts, seq_len=4)
    >>> len(w), w.starts(seed=0, epoch=0, shuffle=False).tolist()
    (2, [0, 4])
    """

    def __init__(self, stream: TokenStream, seq_len: int) -> None:
        check_int("seq_len", seq_len)
        self.stream = stream
        self.seq_len = seq_len
        self.length = seq_len + 1
        n_tok = stream.num_tokens
        self.num_windows = max(0, (n_tok - 1) // seq_len)
        #: how far the first window may move without losing a window
        self.slack = max(0, n_tok - 1 - self.num_windows * seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def offset(self, seed: int, epoch: int, shuffle: bool) -> int:
        """Where the epoch's first window starts (0 without shuffling)."""
        if not shuffle or self.slack == 0:
            return 0
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch), 0x70C5])
        return int(rng.integers(0, self.slack + 1))

    def starts(self, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
        """Start token of every window of the epoch, in stream order."""
        o = self.offset(seed, epoch, shuffle)
        return o + self.seq_len * np.arange(self.num_windows, dtype=np.int64)

    def read(self, starts: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The windows ``[s, s + seq_len + 1)``: a ``(len(starts), seq_len + 1)`` array."""
        return self.stream.windows(starts, self.length, out=out)
