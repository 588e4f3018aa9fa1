"""``Mixture``: the order of a weighted mixture of named sources, as a pure function.

A mixture is one endless *global order* of positions ``g = 0, 1, 2, ...``. Position
``g`` takes one sample of one source, decided in two independent steps, each a pure
function of ``(seed, g)`` that costs O(number of sources) and holds no per-sample
array:

1. **Which source.** The sources sit at the leaves of a small binary tree (built once
   from the weights: sorted heaviest first, each node split into two groups of mass as
   even as possible). Every node hands its own consecutive positions ``m = 0, 1, ...``
   to its two children by Bresenham's rule: position ``m`` goes left iff
   ``floor(((m + 1) * A + phi) / T) > floor((m * A + phi) / T)``, with ``A`` the left
   child's integer weight, ``T`` the node's and ``phi`` a seeded phase. The left child's
   count among the node's first ``m`` positions is ``floor((m * A + phi) / T)`` in
   closed form, so descending the tree gives the source *and* how many earlier
   positions chose it (its local count ``k``) in one step per level.
2. **Which sample.** Source ``s`` of ``n`` samples serves its local count ``k`` from
   its pass ``k // n``, item ``k % n`` of that pass's permutation: a keyed Feistel
   bijection over ``range(n)`` (cycle-walking), keyed by ``(seed, s, pass)``. A source
   that runs out starts its next pass with a fresh permutation; each source has its
   own pass counter, and no source is restarted by anything else.

**Smoothness.** In any run of ``L`` consecutive positions, wherever it starts, a node's
Bresenham split gives its child a count within ``(L q - 1, L q + 1)`` of the node's own
count in that run (``q`` the child's share), so a source's count ``c`` satisfies
``|c - L w| < D`` with ``D = 1 + q * D(parent)`` (``D = 0`` at the root).
:attr:`Mixture.deviation_bound` is the largest ``D``: below 2 for any weights of up to
three sources, and for most weights of more (a balanced tree keeps ``q`` near 1/2);
counts are integers, so a bound of 2 means "within +-2" (the issue's requirement)
exactly when ``deviation_bound <= 2``. The weights used are the given ones as exact
fractions (``Fraction(w).limit_denominator(10**6)``, normalised) when their common
denominator is at most 2**22, else rounded to multiples of 2**-20 (largest
remainder); :attr:`Mixture.weights` holds them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

__all__ = ["Mixture", "check_weights", "feistel_permute"]

_MAX_DENOMINATOR = 2**22
_FALLBACK_DENOMINATOR = 2**20
_U64 = 0xFFFFFFFFFFFFFFFF
#: positions computed at once when a small request misses the look-ahead cache
_CHUNK = 2048
_ROUNDS = 4


def _splitmix(*words: int) -> int:
    """A 64-bit hash of a few integers (splitmix64 over each in turn)."""
    z = 0x9E3779B97F4A7C15
    for w in words:
        z = (z + (int(w) & _U64) + 0x9E3779B97F4A7C15) & _U64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
        z ^= z >> 31
    return z


def _mix_array(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * np.uint64(0xBF58476D1CE4E5B9)
    z = z ^ (z >> np.uint64(27))
    z = z * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _encrypt(v: np.ndarray, half: np.ndarray, mask: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """One Feistel pass per element, each with its own half width, mask and round keys
    (``keys[i, r]``): the vectorised form of ``feistel_permute``'s ``encrypt``."""
    left, right = v >> half, v & mask
    for r in range(keys.shape[1]):
        left, right = right, left ^ (_mix_array(right ^ keys[:, r]) & mask)
    return (left << half) | right


def feistel_permute(x: np.ndarray, n: int, key: int, rounds: int = 4) -> np.ndarray:
    """``perm(x)`` for a keyed bijection ``perm`` of ``range(n)``, with no index array.

    A balanced Feistel network over the smallest even number of bits holding ``n - 1``
    (at least 2), cycle-walking values that land at or above ``n`` (fewer than 4
    steps on average). Deterministic in ``(n, key)``.

    Examples
    --------
    >>> import numpy as np
    >>> p = feistel_permute(np.arange(10), 10, key=7)
    >>> sorted(p.tolist()) == list(range(10))
    True
    """
    y = np.asarray(x, dtype=np.int64).astype(np.uint64)
    if n <= 1 or y.size == 0:
        return y.astype(np.int64)
    bits = max(2, (n - 1).bit_length())
    bits += bits & 1
    half = np.uint64(bits // 2)
    mask = np.uint64((1 << (bits // 2)) - 1)
    keys = [np.uint64(_splitmix(key, r)) for r in range(rounds)]

    def encrypt(v: np.ndarray) -> np.ndarray:
        left, right = v >> half, v & mask
        for k in keys:
            left, right = right, left ^ (_mix_array(right ^ k) & mask)
        return (left << half) | right

    y = encrypt(y)
    out = y >= np.uint64(n)
    while out.any():
        y[out] = encrypt(y[out])
        out = y >= np.uint64(n)
    return y.astype(np.int64)


def check_weights(names: Sequence[str], weights: Any) -> dict[str, float]:
    """``weights`` as ``{name: float}`` over exactly ``names``; refuse anything else, naming it."""
    if not isinstance(weights, Mapping):
        raise ConfigError(
            "weights must be a mapping {source name: weight} over the mixture's sources "
            f"{sorted(names)}. Got {type(weights).__name__} instead.",
            field="weights",
        )
    unknown = sorted(str(k) for k in weights if k not in names)
    missing = sorted(k for k in names if k not in weights)
    if unknown or missing:
        raise ConfigError(
            f"weights name source(s) {unknown} that are not in the mixture and lack source(s) "
            f"{missing}; the sources are {sorted(names)}.",
            field="weights",
        )
    out: dict[str, float] = {}
    for name in names:
        w = weights[name]
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise ConfigError(
                f"weight of source {name!r} must be a number. Got {w!r} instead.", field=name
            )
        if not math.isfinite(float(w)) or float(w) < 0:
            raise ConfigError(
                f"weight of source {name!r} must be a finite number >= 0. Got {w!r} instead.",
                field=name,
            )
        out[name] = float(w)
    if sum(out.values()) <= 0:
        raise ConfigError(
            f"weights must not all be zero; got {out}. Give at least one source a positive weight.",
            field="weights",
        )
    return out


def _integer_weights(weights: Sequence[float]) -> list[int]:
    """Integer weights in the given proportions (exact where the denominator is small)."""
    fr = [Fraction(w).limit_denominator(10**6) for w in weights]
    total = sum(fr)
    q = [f / total for f in fr]
    den = math.lcm(*(x.denominator for x in q))
    if den <= _MAX_DENOMINATOR:
        return [int(x * den) for x in q]
    # largest remainder onto multiples of 2**-20 (positive weights keep at least one unit)
    scaled = [x * _FALLBACK_DENOMINATOR for x in q]
    base = [max(1, math.floor(s)) if s > 0 else 0 for s in scaled]
    order = sorted(range(len(q)), key=lambda i: (-(scaled[i] - math.floor(scaled[i])), i))
    short = _FALLBACK_DENOMINATOR - sum(base)
    for i in order:
        if short <= 0:
            break
        if scaled[i] > 0:
            base[i] += 1
            short -= 1
    g = math.gcd(*base)
    return [b // g for b in base]


class _Node:
    __slots__ = ("leaf", "left", "phase", "right", "wl", "wt")

    def __init__(
        self, leaf: int | None, wt: int, left: _Node | None = None, right: _Node | None = None
    ) -> None:
        self.leaf = leaf
        self.wt = wt
        self.left = left
        self.right = right
        self.wl = left.wt if left is not None else 0
        self.phase = 0


def _build(items: list[tuple[int, int]]) -> _Node:
    """A tree over ``(integer weight, source)`` sorted heaviest first: even splits of mass."""
    if len(items) == 1:
        return _Node(items[0][1], items[0][0])
    total = sum(w for w, _ in items)
    acc, best, cut = 0, None, 1
    for i in range(1, len(items)):
        acc += items[i - 1][0]
        gap = abs(2 * acc - total)
        if best is None or gap < best:
            best, cut = gap, i
    left, right = _build(items[:cut]), _build(items[cut:])
    return _Node(None, left.wt + right.wt, left, right)


class Mixture:
    """Global order of a weighted mixture: position -> (source, local count, sample).

    Parameters
    ----------
    sizes
        Samples per source (rows, or token windows), by source name. Sources are
        numbered in sorted name order (the ``source`` field of a batch).
    weights
        Non-negative weight per source (normalised; a zero weight never samples it).
    seed
        Seeds the interleave's phases and every source's per-pass permutations.
    shuffle
        ``False``: every pass of a source in storage order, phases 0.

    Examples
    --------
    >>> m = Mixture({"a": 10, "b": 10}, {"a": 3, "b": 1}, shuffle=False)
    >>> m.sources(np.arange(8)).tolist()
    [1, 0, 0, 0, 1, 0, 0, 0]
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        weights: Mapping[str, float],
        *,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        self.names = sorted(sizes)
        w = check_weights(self.names, weights)
        self.sizes = [int(sizes[k]) for k in self.names]
        for name, n in zip(self.names, self.sizes, strict=True):
            if n <= 0 and w[name] > 0:
                raise ConfigError(
                    f"mixture source {name!r} has no samples but weight {w[name]}; "
                    "give it weight 0 or leave it out.",
                    field=name,
                )
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.int_weights = _integer_weights([w[k] for k in self.names])
        total = sum(self.int_weights)
        #: the weights used, normalised (exact fractions of the given ones; see module doc)
        self.weights = {k: iw / total for k, iw in zip(self.names, self.int_weights, strict=True)}
        items = sorted(
            ((iw, i) for i, iw in enumerate(self.int_weights) if iw > 0),
            key=lambda t: (-t[0], t[1]),
        )
        self._root = _build(items)
        self.deviation_bound = 0.0
        self._setup(self._root, 0.0, 1)
        #: largest position this order can address with int64 arithmetic
        self.max_position = (2**62) // max(1, total, len(self.names))
        self._flatten()

    def _flatten(self) -> None:
        """The tree as flat node arrays for the vectorised descent (a leaf loops onto
        itself with ``wl = wt = 1``, so every position takes ``depth`` steps), and the
        per-source Feistel widths."""
        nodes: list[_Node] = []
        depth = 0

        def visit(node: _Node, d: int) -> None:
            nonlocal depth
            nodes.append(node)
            depth = max(depth, d)
            if node.left is not None and node.right is not None:
                visit(node.left, d + 1)
                visit(node.right, d + 1)

        visit(self._root, 0)
        at = {id(node): i for i, node in enumerate(nodes)}
        k = len(nodes)
        self._depth = depth
        self._wl, self._wt = np.ones(k, np.int64), np.ones(k, np.int64)
        self._ph, self._leaf = np.zeros(k, np.int64), np.zeros(k, np.int64)
        self._left, self._right = np.arange(k), np.arange(k)
        for i, node in enumerate(nodes):
            if node.left is None or node.right is None:
                assert node.leaf is not None
                self._leaf[i] = node.leaf
                continue
            self._wl[i], self._wt[i], self._ph[i] = node.wl, node.wt, node.phase
            self._left[i], self._right[i] = at[id(node.left)], at[id(node.right)]
        self._n = np.array(self.sizes, np.int64)
        bits = [max(2, (max(n, 1) - 1).bit_length()) for n in self.sizes]
        bits = [b + (b & 1) for b in bits]
        self._half = np.array([b // 2 for b in bits], np.uint64)
        self._mask = np.array([(1 << (b // 2)) - 1 for b in bits], np.uint64)
        self._keys: dict[tuple[int, int], list[int]] = {}
        #: look-ahead cache: (first position, source, sample, pass) of one chunk
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def _setup(self, node: _Node, dev: float, node_id: int) -> None:
        """Seeded phases, and the window-deviation bound ``D`` at every leaf."""
        if node.leaf is not None:
            self.deviation_bound = max(self.deviation_bound, dev)
            return
        assert node.left is not None and node.right is not None
        node.phase = _splitmix(self.seed, node_id, 0x313) % node.wt if self.shuffle else 0
        self._setup(node.left, 1 + node.left.wt / node.wt * dev, 2 * node_id)
        self._setup(node.right, 1 + node.right.wt / node.wt * dev, 2 * node_id + 1)

    @functools.cached_property
    def fingerprint(self) -> str:
        """12 hex digits naming the order (names, sizes, weights, shuffle), for resume checks."""
        blob = json.dumps([self.names, self.sizes, self.int_weights, self.shuffle])
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _positions(self, positions: Any) -> np.ndarray:
        g = np.asarray(positions, dtype=np.int64).reshape(-1)
        if g.size and (int(g.min()) < 0 or int(g.max()) > self.max_position):
            raise ConfigError(
                f"mixture positions must be in [0, {self.max_position}]; got "
                f"[{int(g.min())}, {int(g.max())}]."
            )
        return g

    def locate(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(source, local count)`` per global position: which source it takes and how many
        earlier positions took that source (O(tree depth) per position, vectorised: a few
        numpy calls per tree level for the whole array)."""
        return self._locate(self._positions(positions))

    def _locate(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = g.copy()
        if self._depth == 0:
            return np.full(g.size, self._leaf[0], np.int64), m
        # the root: one node for every position, so scalars instead of gathers
        wl, wt, ph = int(self._wl[0]), int(self._wt[0]), int(self._ph[0])
        x = m * wl + ph
        before = x // wt
        go = (x + wl) // wt > before
        m = np.where(go, before, m - before)
        cur = np.where(go, self._left[0], self._right[0])
        for _ in range(self._depth - 1):
            wl_, wt_ = self._wl[cur], self._wt[cur]
            x = m * wl_ + self._ph[cur]
            before = x // wt_
            go = (x + wl_) // wt_ > before
            m = np.where(go, before, m - before)
            cur = np.where(go, self._left[cur], self._right[cur])
        return self._leaf[cur], m

    def samples(self, positions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(source, sample, pass)`` per global position.

        ``sample`` indexes the source's own samples (rows, or its windows in stream
        order); ``pass`` is the source's pass that served it. Vectorised over the whole
        array (every source and pass at once), and a small request (a batch) computes
        the next ``_CHUNK`` positions at once and serves later batches from them.
        """
        g = self._positions(positions)
        if g.size == 0:
            e = np.zeros(0, np.int64)
            return e, e.copy(), e.copy()
        lo, hi = int(g.min()), int(g.max())
        cache = self._cache
        if cache is not None and lo >= cache[0] and hi < cache[0] + cache[1].size:
            i = g - cache[0]
            return cache[1][i], cache[2][i], cache[3][i]
        if hi - lo >= _CHUNK:
            return self._samples(g)
        stop = min(lo + _CHUNK, self.max_position + 1)
        src, sample, passes = self._samples(np.arange(lo, stop, dtype=np.int64))
        self._cache = (lo, src, sample, passes)
        i = g - lo
        return src[i], sample[i], passes[i]

    def _samples(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src, local = self._locate(g)
        n = self._n[src]
        passes = local // n
        j = local - passes * n
        if not self.shuffle:
            return src, j, passes
        return src, self._permute(src, passes, j, n), passes

    def _round_keys(self, source: int, pass_: int) -> list[int]:
        """``feistel_permute``'s round keys of one source's pass (memoised, bounded)."""
        got = self._keys.get((source, pass_))
        if got is None:
            key = self.pass_key(source, pass_)
            got = [_splitmix(key, r) for r in range(_ROUNDS)]
            if len(self._keys) >= 4096:
                self._keys.clear()
            self._keys[(source, pass_)] = got
        return got

    def _permute(
        self, src: np.ndarray, passes: np.ndarray, j: np.ndarray, n: np.ndarray
    ) -> np.ndarray:
        """``feistel_permute(j, n, pass_key(src, pass))`` elementwise, in one vectorised walk."""
        nsrc = len(self.names)
        group = passes * nsrc + src  # passes <= max_position <= 2**62 // nsrc
        uniq, inv = np.unique(group, return_inverse=True)
        table = np.array(
            [self._round_keys(int(u) % nsrc, int(u) // nsrc) for u in uniq.tolist()], np.uint64
        )
        keys = table[inv.reshape(-1)]
        half, mask, nn = self._half[src], self._mask[src], n.astype(np.uint64)
        y = _encrypt(j.astype(np.uint64), half, mask, keys)
        out = np.flatnonzero(y >= nn)
        while out.size:
            y[out] = _encrypt(y[out], half[out], mask[out], keys[out])
            out = out[y[out] >= nn[out]]
        return y.astype(np.int64)

    def _locate_reference(self, positions: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`locate` by the definition: a recursive descent that splits the positions
        at every node (kept as the reference the fast path is tested against)."""
        g = self._positions(positions)
        src = np.empty(g.size, np.int64)
        local = np.empty(g.size, np.int64)
        stack: list[tuple[_Node, np.ndarray, np.ndarray]] = [(self._root, g, np.arange(g.size))]
        while stack:
            node, m, sel = stack.pop()
            if node.leaf is not None:
                src[sel] = node.leaf
                local[sel] = m
                continue
            assert node.left is not None and node.right is not None
            before = (m * node.wl + node.phase) // node.wt
            go_left = (m * node.wl + node.wl + node.phase) // node.wt > before
            stack.append((node.left, before[go_left], sel[go_left]))
            right = ~go_left
            stack.append((node.right, (m - before)[right], sel[right]))
        return src, local

    def sources(self, positions: Any) -> np.ndarray:
        """The source index of each global position."""
        return self.locate(positions)[0]

    def counts(self, position: int) -> list[int]:
        """How many of the positions ``0 .. position - 1`` each source took (closed form)."""
        out = [0] * len(self.names)
        stack = [(self._root, int(position))]
        while stack:
            node, m = stack.pop()
            if node.leaf is not None:
                out[node.leaf] = m
                continue
            assert node.left is not None and node.right is not None
            left = (m * node.wl + node.phase) // node.wt - node.phase // node.wt
            stack += [(node.left, left), (node.right, m - left)]
        return out

    def _samples_reference(self, positions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`samples` by the definition: one Feistel call per (source, pass) group
        (kept as the reference the fast path is tested against)."""
        src, local = self._locate_reference(positions)
        sample = np.empty_like(local)
        passes = np.empty_like(local)
        for s in np.unique(src).tolist():
            sel = np.flatnonzero(src == s)
            n = self.sizes[s]
            k = local[sel]
            p = k // n
            j = k - p * n
            passes[sel] = p
            if not self.shuffle:
                sample[sel] = j
                continue
            for q in np.unique(p).tolist():
                at = p == q
                sample[sel[at]] = feistel_permute(j[at], n, self.pass_key(s, q))
        return src, sample, passes

    def pass_key(self, source: int, pass_: int) -> int:
        """The seed of source ``source``'s pass ``pass_`` (its permutation, its window offset)."""
        return _splitmix(self.seed, source, pass_, 0x5EED)

    def __repr__(self) -> str:
        mix = ", ".join(f"{k}={w:.4g}" for k, w in self.weights.items())
        return f"Mixture({mix}; sizes={self.sizes}, seed={self.seed})"
