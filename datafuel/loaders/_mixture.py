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

   **Shard blocks** (``shards=``, what a mixture with a remote source takes): a full
   permutation reads about one shard per sample of every batch, which a cache smaller
   than the source cannot serve. A source given its shard offsets and a width ``w``
   instead permutes its shards per pass, cuts that permutation into blocks of ``w``
   consecutive shards, serves the blocks one after another and each block's samples
   in a keyed Feistel order of their own. A run of ``R`` consecutive local counts of a
   source then reads at most ``2 w`` shards while ``R`` fits in a block, and the item
   is still a pure function of ``(seed, s, pass, k)``, computed from per-shard tables
   (O(shards) per pass, memoised; still no per-sample array).

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

import bisect
import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np

from datafuel.errors import ConfigError

__all__ = ["Mixture", "Schedule", "check_weights", "feistel_permute"]

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
            f"{sorted(names)}, or a schedule [(position, {{source name: weight}}), ...]. "
            f"Got {type(weights).__name__} {weights!r:.80} instead.",
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


def _tree_counts(root: _Node, m: int, nsrc: int) -> list[int]:
    """How many of a tree's first ``m`` positions each leaf took (closed form)."""
    out = [0] * nsrc
    stack = [(root, int(m))]
    while stack:
        node, k = stack.pop()
        if node.leaf is not None:
            out[node.leaf] = k
            continue
        assert node.left is not None and node.right is not None
        left = (k * node.wl + node.phase) // node.wt - node.phase // node.wt
        stack += [(node.left, left), (node.right, k - left)]
    return out


class Schedule:
    """Mixture weights that change piecewise-linearly with the samples consumed.

    ``points`` is ``[(position, {source: weight}), ...]``: the weights at global
    positions ``0 = p0 < p1 < ...``, linearly interpolated in between and held after the
    last point. A bare list of such pairs may be passed as ``weights=`` instead.

    Examples
    --------
    >>> s = Schedule([(0, {"web": 1, "code": 0}), (1000, {"web": 0.5, "code": 0.5})])
    >>> s.positions
    [0, 1000]
    """

    def __init__(self, points: Any) -> None:
        if isinstance(points, (str, bytes, Mapping)) or not isinstance(points, Sequence):
            raise ConfigError(
                "a weight schedule is a list [(position, {source: weight}), ...]. "
                f"Got {type(points).__name__} instead.",
                field="weights",
            )
        if not points:
            raise ConfigError(
                "a weight schedule needs at least one point; got none.", field="weights"
            )
        self.positions: list[int] = []
        self.weights: list[Mapping[str, float]] = []
        for k, point in enumerate(points):
            if (
                not isinstance(point, Sequence)
                or isinstance(point, (str, bytes))
                or len(point) != 2
                or not isinstance(point[1], Mapping)
            ):
                raise ConfigError(
                    f"weight schedule point {k} must be a pair (position, {{source: weight}}). "
                    f"Got {point!r} instead.",
                    field="weights",
                )
            p = point[0]
            if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or int(p) < 0:
                raise ConfigError(
                    f"weight schedule point {k}: the position must be an integer >= 0 "
                    f"(samples consumed). Got {p!r} instead.",
                    field="weights",
                )
            if k == 0 and int(p) != 0:
                raise ConfigError(
                    f"weight schedule point 0 must be at position 0 (the weights the run starts "
                    f"with). Got position {int(p)}.",
                    field="weights",
                )
            if k and int(p) <= self.positions[-1]:
                raise ConfigError(
                    f"weight schedule positions must be strictly increasing: point {k} is at "
                    f"{int(p)}, after point {k - 1} at {self.positions[-1]}.",
                    field="weights",
                )
            self.positions.append(int(p))
            self.weights.append(point[1])

    def __repr__(self) -> str:
        return f"Schedule({list(zip(self.positions, self.weights, strict=True))!r})"


def _schedule_points(
    names: Sequence[str], weights: Any
) -> tuple[Schedule | None, list[tuple[int, dict[str, float]]]]:
    """The schedule (``None``: constant weights) and its checked ``(position, weights)``."""
    if isinstance(weights, Schedule):
        schedule: Schedule = weights
    elif (
        isinstance(weights, Sequence)
        and not isinstance(weights, (str, bytes))
        and len(weights) > 0
        and all(isinstance(p, Sequence) and not isinstance(p, (str, bytes)) for p in weights)
    ):
        schedule = Schedule(weights)
    else:
        return None, [(0, check_weights(names, weights))]
    points = []
    for k, (p, w) in enumerate(zip(schedule.positions, schedule.weights, strict=True)):
        try:
            points.append((p, check_weights(names, w)))
        except ConfigError as exc:
            exc.message = f"weight schedule point {k} (position {p}): {exc.message}"
            exc.args = (exc.message,)
            raise
    return schedule, points


class Mixture:
    """Global order of a weighted mixture: position -> (source, local count, sample).

    Parameters
    ----------
    sizes
        Samples per source (rows, or token windows), by source name. Sources are
        numbered in sorted name order (the ``source`` field of a batch).
    weights
        Non-negative weight per source (normalised; a zero weight never samples it), or
        a :class:`Schedule` (or its list of ``(position, {source: weight})`` points).
    seed
        Seeds the interleave's phases and every source's per-pass permutations.
    shuffle
        ``False``: every pass of a source in storage order, phases 0.
    shards
        Sources to serve in shard blocks (module doc): ``{name: (offsets_of, w)}``, with
        ``offsets_of(pass_key)`` the first sample of each of the source's shards in that
        pass, then its size (row sets: ``ShardSet.offsets``; token windows: the shard of
        each window's start on the pass's grid), and ``w`` the shards per block. Other
        sources take the full permutation. Needs ``shuffle``.

    **Schedules.** Each schedule point ``k`` has its own Bresenham tree ``M_k`` over its
    (normalised) weights ``v_k``; equal consecutive points share one. A position in the
    ramp from point ``i`` (at ``p_i``) to ``i + 1`` (``Lam`` positions on) at offset
    ``u`` goes to ``M_{i+1}`` iff ``floor(((u+1)**2 + phi) / (2 Lam)) > floor((u**2 + phi)
    / (2 Lam))``, else to ``M_i``; every tree hands out its own positions in order, so a
    position is still a pure function of ``(seed, g)`` in O(sources + points) memory.
    ``M_{i+1}``'s count in the ramp is then ``(u1**2 - u0**2) / (2 Lam)`` within 1, the
    integral of the linear share ``u / Lam``: a run of consecutive positions holds each
    source within :meth:`window_bound` of :meth:`expected` (the integral of the
    interpolated weights over it): the trees' bounds ``D_k`` plus, for each ramp it
    touches, the largest weight change ``max_s |v_{i+1,s} - v_{i,s}|``.
    :attr:`deviation_bound` is the worst such bound for a run inside one segment.

    Examples
    --------
    >>> m = Mixture({"a": 10, "b": 10}, {"a": 3, "b": 1}, shuffle=False)
    >>> m.sources(np.arange(8)).tolist()
    [1, 0, 0, 0, 1, 0, 0, 0]
    """

    def __init__(
        self,
        sizes: Mapping[str, int],
        weights: Mapping[str, float] | Schedule | Sequence[tuple[int, Mapping[str, float]]],
        *,
        seed: int = 0,
        shuffle: bool = True,
        shards: Mapping[str, tuple[Callable[[int], np.ndarray], int]] | None = None,
    ) -> None:
        self.names = sorted(sizes)
        self.sizes = [int(sizes[k]) for k in self.names]
        self.seed = int(seed)
        self._pass_keys: dict[tuple[int, int], int] = {}
        self.shuffle = bool(shuffle)
        nsrc = len(self.names)
        schedule, points = _schedule_points(self.names, weights)
        #: the schedule (``None``: constant weights)
        self.schedule = schedule
        for name, n in zip(self.names, self.sizes, strict=True):
            top = max(w[name] for _, w in points)
            if n <= 0 and top > 0:
                raise ConfigError(
                    f"mixture source {name!r} has no samples but weight {top}; "
                    "give it weight 0 or leave it out.",
                    field=name,
                )
        #: schedule point positions, and the integer weights of each point's tree
        self._points = [p for p, _ in points]
        point_weights = [_integer_weights([w[k] for k in self.names]) for _, w in points]
        # one tree per run of equal consecutive (normalised) points
        self._tree_of: list[int] = []
        tree_weights: list[list[int]] = []
        for iw in point_weights:
            if tree_weights and iw == tree_weights[-1]:
                self._tree_of.append(len(tree_weights) - 1)
            else:
                self._tree_of.append(len(tree_weights))
                tree_weights.append(iw)
        self._tree_weights = tree_weights
        self._v = [[x / sum(iw) for x in iw] for iw in tree_weights]  # normalised, per tree
        self._build_trees()
        self._root = self._roots[0]
        #: the integer weights of the (last) point, and the weights used, normalised (exact
        #: fractions of the given ones; see module doc). Under a schedule: the last point's.
        self.int_weights = tree_weights[-1]
        self.weights = dict(zip(self.names, self._v[-1], strict=True))
        #: largest position this order can address with int64 arithmetic
        self.max_position = (2**62) // max(1, nsrc, *(sum(iw) for iw in tree_weights))
        self._segments()
        self.deviation_bound = max(self._bound_of(i) for i in range(len(self._points)))
        self._flatten()
        #: source index -> (offsets_of, shards per block) for the sources in shard blocks
        self._blocked: dict[int, tuple[Callable[[int], np.ndarray], int]] = {}
        for name, (offsets_of, w) in (shards or {}).items():
            if name not in self.names:
                raise ConfigError(f"shards= names {name!r}, which is not a source of the mixture.")
            if not self.shuffle:
                raise ConfigError(
                    "shards= orders shuffled passes; shuffle=False reads storage order."
                )
            if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1:
                raise ConfigError(
                    f"shards= gives source {name!r} {w!r} shards per block; it needs an int >= 1.",
                    field="shuffle_window",
                )
            self._blocked[self.names.index(name)] = (offsets_of, int(w))
        #: shards per block, by source name (only the sources in shard blocks)
        self.windows = {self.names[i]: w for i, (_, w) in sorted(self._blocked.items())}
        self._tables: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def _build_trees(self) -> None:
        """One seeded Bresenham tree per distinct point, and its deviation bound."""
        self._roots: list[_Node] = []
        self._bounds: list[float] = []
        for t, iw in enumerate(self._tree_weights):
            items = sorted(((x, i) for i, x in enumerate(iw) if x > 0), key=lambda q: (-q[0], q[1]))
            root = _build(items)
            self.deviation_bound = 0.0
            self._setup(root, 0.0, 1, t)
            self._roots.append(root)
            self._bounds.append(self.deviation_bound)

    def _setup(self, node: _Node, dev: float, node_id: int, tree: int = 0) -> None:
        """Seeded phases, and the window-deviation bound ``D`` at every leaf."""
        if node.leaf is not None:
            self.deviation_bound = max(self.deviation_bound, dev)
            return
        assert node.left is not None and node.right is not None
        words = (self.seed, node_id, 0x313) if tree == 0 else (self.seed, node_id, 0x313, tree)
        node.phase = _splitmix(*words) % node.wt if self.shuffle else 0
        self._setup(node.left, 1 + node.left.wt / node.wt * dev, 2 * node_id, tree)
        self._setup(node.right, 1 + node.right.wt / node.wt * dev, 2 * node_id + 1, tree)

    def _segments(self) -> None:
        """Per segment (ramp ``i -> i + 1``, or the hold after the last point): its trees,
        phase and the trees' positions handed out before it (all Python ints)."""
        nsrc, ntree = len(self.names), len(self._roots)
        npt = len(self._points)
        used = [0] * ntree  # positions each tree has handed out before the segment
        self._seg_a, self._seg_b, self._seg_phi, self._seg_den = [], [], [], []
        self._seg_base_a, self._seg_base_b, self._seg_const = [], [], []
        for i in range(npt):
            ta = self._tree_of[i]
            tb = self._tree_of[i + 1] if i + 1 < npt else ta
            ramp = ta != tb
            lam = self._points[i + 1] - self._points[i] if i + 1 < npt else 0
            if ramp and lam > 2**31:
                raise ConfigError(
                    f"weight schedule points {i} and {i + 1} are {lam} samples apart; a ramp "
                    "between different weights may span at most 2**31 samples (add a point).",
                    field="weights",
                )
            phi = _splitmix(self.seed, i, 0xB1E) % (2 * lam) if ramp and self.shuffle else 0
            const = [0] * nsrc
            for t in range(ntree):
                if t not in (ta, tb) and used[t]:
                    for s, c in enumerate(_tree_counts(self._roots[t], used[t], nsrc)):
                        const[s] += c
            self._seg_a.append(ta)
            self._seg_b.append(tb)
            self._seg_phi.append(phi)
            self._seg_den.append(2 * lam if ramp else 2**62)
            self._seg_base_a.append(used[ta])
            self._seg_base_b.append(used[tb] if ramp else 0)
            self._seg_const.append(const)
            if i + 1 < npt:
                nb = (lam * lam + phi) // (2 * lam) if ramp else 0
                used[ta] += lam - nb
                used[tb] += nb

    def _bound_of(self, i: int) -> float:
        """The deviation bound of a run inside segment ``i``."""
        ta, tb = self._seg_a[i], self._seg_b[i]
        if ta == tb:
            return self._bounds[ta]
        step = max(abs(a - b) for a, b in zip(self._v[ta], self._v[tb], strict=True))
        return self._bounds[ta] + self._bounds[tb] + step

    def window_bound(self, start: int, stop: int) -> float:
        """A bound on ``|count - expected|`` of every source over positions ``start ..
        stop - 1``: each touched tree's ``D`` once, plus each touched ramp's largest weight
        change (see the class doc)."""
        if stop <= start:
            return 0.0
        first = bisect.bisect_right(self._points, start) - 1
        last = bisect.bisect_right(self._points, stop - 1) - 1
        trees = {self._seg_a[i] for i in range(first, last + 1)}
        trees |= {self._seg_b[i] for i in range(first, last + 1)}
        out = sum(self._bounds[t] for t in trees)
        for i in range(first, last + 1):
            ta, tb = self._seg_a[i], self._seg_b[i]
            if ta != tb:
                out += max(abs(a - b) for a, b in zip(self._v[ta], self._v[tb], strict=True))
        return out

    def _integral(self, position: int) -> np.ndarray:
        """``integral_0^position`` of the interpolated weights, per source."""
        out = np.zeros(len(self.names))
        x = int(position)
        for i, p in enumerate(self._points):
            if x <= p:
                break
            va = np.array(self._v[self._seg_a[i]])
            vb = np.array(self._v[self._seg_b[i]])
            end = self._points[i + 1] if i + 1 < len(self._points) else x
            u = min(x, end) - p
            lam = max(1, end - p)
            out += va * u + (vb - va) * (u * u / (2 * lam))
        return out

    def expected(self, start: int, stop: int) -> dict[str, float]:
        """The target count of each source over positions ``start .. stop - 1``: the
        integral of the (interpolated) weights over ``[start, stop)``."""
        got = self._integral(stop) - self._integral(start)
        return dict(zip(self.names, got.tolist(), strict=True))

    def weights_at(self, position: int) -> dict[str, float]:
        """The (interpolated) weights at global position ``position``."""
        i = bisect.bisect_right(self._points, int(position)) - 1
        va, vb = self._v[self._seg_a[i]], self._v[self._seg_b[i]]
        t = 0.0
        if i + 1 < len(self._points):
            t = (int(position) - self._points[i]) / (self._points[i + 1] - self._points[i])
        return {k: a + (b - a) * t for k, a, b in zip(self.names, va, vb, strict=True)}

    def _flatten(self) -> None:
        """Every tree as flat node arrays for the vectorised descent (a leaf loops onto
        itself with ``wl = wt = 1``, so every position takes ``depth`` steps), each
        (tree, leaf) path for closed-form counts, the segment tables, and the per-source
        Feistel widths."""
        nodes: list[_Node] = []
        depth = 0
        paths: dict[tuple[int, int], list[tuple[int, bool]]] = {}

        def visit(node: _Node, d: int, tree: int, path: list[tuple[int, bool]]) -> None:
            nonlocal depth
            nodes.append(node)
            me = len(nodes) - 1
            depth = max(depth, d)
            if node.left is not None and node.right is not None:
                visit(node.left, d + 1, tree, [*path, (me, True)])
                visit(node.right, d + 1, tree, [*path, (me, False)])
            else:
                assert node.leaf is not None
                paths[(tree, node.leaf)] = path

        roots = []
        for t, root in enumerate(self._roots):
            roots.append(len(nodes))
            visit(root, 0, t, [])
        at = {id(node): i for i, node in enumerate(nodes)}
        k = len(nodes)
        self._depth = depth
        self._tree_root = np.array(roots, np.int64)
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
        self._path_tables(paths)
        self._starts = np.array(self._points, np.int64)

    def _path_tables(self, paths: dict[tuple[int, int], list[tuple[int, bool]]]) -> None:
        """The segment arrays, each (tree, leaf) path as node and direction arrays, and the
        per-source Feistel widths."""
        depth = self._depth
        nsrc, ntree = len(self.names), len(self._roots)
        # a (tree, leaf) path padded with a leaf node (the identity step); absent leaf: 0
        pad = int(np.flatnonzero(self._wt == 1)[0]) if depth else 0
        self._path_node = np.full((ntree * nsrc, max(depth, 1)), pad, np.int64)
        self._path_left = np.ones((ntree * nsrc, max(depth, 1)), bool)
        self._path_ok = np.zeros(ntree * nsrc, bool)
        for (t, s), path in paths.items():
            self._path_ok[t * nsrc + s] = True
            for lvl, (node_at, left) in enumerate(path):
                self._path_node[t * nsrc + s, lvl] = node_at
                self._path_left[t * nsrc + s, lvl] = left
        self._sa, self._sb = np.array(self._seg_a, np.int64), np.array(self._seg_b, np.int64)
        self._sphi, self._sden = (
            np.array(self._seg_phi, np.int64),
            np.array(self._seg_den, np.int64),
        )
        self._sbase_a = np.array(self._seg_base_a, np.int64)
        self._sbase_b = np.array(self._seg_base_b, np.int64)
        self._sconst = np.array(self._seg_const, np.int64).reshape(len(self._points), nsrc)
        self._sramp = self._sa != self._sb
        self._n = np.array(self.sizes, np.int64)
        bits = [max(2, (max(n, 1) - 1).bit_length()) for n in self.sizes]
        bits = [b + (b & 1) for b in bits]
        self._half = np.array([b // 2 for b in bits], np.uint64)
        self._mask = np.array([(1 << (b // 2)) - 1 for b in bits], np.uint64)
        self._keys: dict[tuple[int, int], list[int]] = {}
        #: look-ahead cache: (first position, source, sample, pass) of one chunk
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """12 hex digits naming the order (names, sizes, weights, shuffle), for resume checks."""
        parts: list[Any] = [self.names, self.sizes, self.int_weights, self.shuffle]
        if len(self._points) > 1:
            parts.append([self._points, self._tree_of, self._tree_weights])
        if self.windows:
            parts.append({"shard_blocks": self.windows})
        blob = json.dumps(parts)
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
        if len(self._points) == 1:
            return self._descend(g.copy(), None)
        nsrc = len(self.names)
        seg = np.searchsorted(self._starts, g, side="right") - 1
        u = g - self._starts[seg]
        uu = np.where(self._sramp[seg], u, 0)  # a hold segment never squares its offset
        phi, den = self._sphi[seg], self._sden[seg]
        nb = (uu * uu + phi) // den
        go_b = ((uu + 1) * (uu + 1) + phi) // den > nb
        la = self._sbase_a[seg] + u - nb
        lb = self._sbase_b[seg] + nb
        ta, tb = self._sa[seg], self._sb[seg]
        src, mine = self._descend(np.where(go_b, lb, la), self._tree_root[np.where(go_b, tb, ta)])
        # the other tree of the ramp: its count of the same source so far (closed form)
        pid = np.where(go_b, ta, tb) * nsrc + src
        m = np.where(go_b, la, lb)
        for lvl in range(self._depth):
            node = self._path_node[pid, lvl]
            wl, wt, ph = self._wl[node], self._wt[node], self._ph[node]
            left = (m * wl + ph) // wt - ph // wt
            m = np.where(self._path_left[pid, lvl], left, m - left)
        other = np.where(self._path_ok[pid], m, 0)
        return src, self._sconst[seg, src] + mine + other

    def _descend(self, m: np.ndarray, roots: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Leaf and leaf count of local positions ``m`` of trees rooted at ``roots``
        (``None``: the one tree, whose root's parameters are scalars)."""
        if self._depth == 0:
            return self._leaf[np.zeros(m.size, np.int64) if roots is None else roots], m
        levels = self._depth
        if roots is None:
            wl, wt, ph = int(self._wl[0]), int(self._wt[0]), int(self._ph[0])
            x = m * wl + ph
            before = x // wt
            go = (x + wl) // wt > before
            m = np.where(go, before, m - before)
            cur = np.where(go, self._left[0], self._right[0])
            levels -= 1
        else:
            cur = roots
        for _ in range(levels):
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
        if not self._blocked:
            return src, self._permute(src, passes, j, n), passes
        blocked = np.isin(src, list(self._blocked))
        full = np.flatnonzero(~blocked)
        sample = np.empty_like(j)
        if full.size:
            sample[full] = self._permute(src[full], passes[full], j[full], n[full])
        for s in np.unique(src[blocked]).tolist():
            sel = np.flatnonzero(src == s)
            ps = passes[sel]
            for q in np.unique(ps).tolist():
                at = sel[ps == q]
                sample[at] = self._block_permute(s, q, j[at])
        return src, sample, passes

    def _block_tables(self, source: int, pass_: int) -> tuple[np.ndarray, ...]:
        """Shard blocks of one source's pass (memoised, bounded): ``(Q, L, first)`` with
        ``Q`` each block's first layout place (then the size), ``L`` each shard's in the
        pass's shard permutation (then the size), ``first`` its first sample."""
        got = self._tables.get((source, pass_))
        if got is not None:
            return got
        offsets_of, w = self._blocked[source]
        key = self.pass_key(source, pass_)
        offsets = np.asarray(offsets_of(key), dtype=np.int64)
        n = self.sizes[source]
        if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or offsets[-1] != n:
            raise ConfigError(
                f"mixture source {self.names[source]!r}: its shard offsets must run from 0 to "
                f"its {n} samples; got {offsets.size} values ending at "
                f"{int(offsets[-1]) if offsets.size else None}."
            )
        sizes = np.diff(offsets)
        if (sizes < 0).any():
            raise ConfigError(
                f"mixture source {self.names[source]!r}: shard offsets must not decrease."
            )
        pi = np.random.default_rng([key & 0xFFFFFFFF, key >> 32, 0xB10C]).permutation(sizes.size)
        layout = np.concatenate([[0], np.cumsum(sizes[pi])])
        blocks = np.concatenate([layout[: sizes.size : w], [n]])
        got = (blocks, layout, offsets[:-1][pi])
        if len(self._tables) >= 64:
            self._tables.clear()
        self._tables[(source, pass_)] = got
        return got

    def _block_permute(self, source: int, pass_: int, j: np.ndarray) -> np.ndarray:
        """Items ``j`` of one source's pass in shard blocks: the block of ``j``'s layout
        place, a keyed Feistel bijection inside it (its own key per block), then the
        layout place's sample."""
        blocks, layout, first = self._block_tables(source, pass_)
        b = np.searchsorted(blocks, j, side="right") - 1
        ub, inv = np.unique(b, return_inverse=True)
        inv = inv.reshape(-1)
        key = self.pass_key(source, pass_)
        nb = (blocks[ub + 1] - blocks[ub]).tolist()
        bits = [max(2, (x - 1).bit_length()) for x in nb]
        bits = [x + (x & 1) for x in bits]
        half = np.array([x // 2 for x in bits], np.uint64)[inv]
        mask = np.array([(1 << (x // 2)) - 1 for x in bits], np.uint64)[inv]
        keys = np.array(
            [
                [_splitmix(_splitmix(key, bb, 0xB10C), r) for r in range(_ROUNDS)]
                for bb in ub.tolist()
            ],
            np.uint64,
        ).reshape(-1, _ROUNDS)[inv]
        nn = np.array(nb, np.uint64)[inv]
        y = _encrypt((j - blocks[b]).astype(np.uint64), half, mask, keys)
        out = np.flatnonzero(y >= nn)
        while out.size:
            y[out] = _encrypt(y[out], half[out], mask[out], keys[out])
            out = out[y[out] >= nn[out]]
        x = blocks[b] + y.astype(np.int64)  # the layout place
        i = np.searchsorted(layout, x, side="right") - 1  # its shard (never an empty one)
        return first[i] + (x - layout[i])

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
        at every node (kept as the reference the fast path is tested against; constant
        weights only)."""
        if self.schedule is not None:
            raise ConfigError("the reference descent is for constant weights only")
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
        x = int(position)
        nsrc = len(self.names)
        i = bisect.bisect_right(self._points, x) - 1
        u = x - self._points[i]
        ta, tb = self._seg_a[i], self._seg_b[i]
        out = list(self._seg_const[i])
        if ta == tb:
            got = _tree_counts(self._roots[ta], self._seg_base_a[i] + u, nsrc)
        else:
            nb = (u * u + self._seg_phi[i]) // self._seg_den[i]
            got = _tree_counts(self._roots[ta], self._seg_base_a[i] + u - nb, nsrc)
            more = _tree_counts(self._roots[tb], self._seg_base_b[i] + nb, nsrc)
            got = [a + b for a, b in zip(got, more, strict=True)]
        return [a + b for a, b in zip(out, got, strict=True)]

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
                if s in self._blocked:
                    sample[sel[at]] = self._block_order_reference(s, q)[j[at]]
                    continue
                sample[sel[at]] = feistel_permute(j[at], n, self.pass_key(s, q))
        return src, sample, passes

    def _block_order_reference(self, source: int, pass_: int) -> np.ndarray:
        """A shard-blocked pass by the definition, whole: the shards in the pass's
        permutation, cut into blocks of ``w``; each block's samples (shards in that order,
        each shard's ascending) permuted by ``feistel_permute`` with the block's key."""
        offsets_of, w = self._blocked[source]
        key = self.pass_key(source, pass_)
        offsets = np.asarray(offsets_of(key), dtype=np.int64)
        num = offsets.size - 1
        pi = np.random.default_rng([key & 0xFFFFFFFF, key >> 32, 0xB10C]).permutation(num)
        out = []
        for b, lo in enumerate(range(0, num, w)):
            parts = [np.arange(offsets[k], offsets[k + 1]) for k in pi[lo : lo + w]]
            rows = np.concatenate(parts).astype(np.int64)
            perm = feistel_permute(np.arange(rows.size), rows.size, _splitmix(key, b, 0xB10C))
            out.append(rows[perm])
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def pass_key(self, source: int, pass_: int) -> int:
        """The seed of source ``source``'s pass ``pass_`` (its permutation, its window offset)."""
        key = (source, pass_)
        got = self._pass_keys.get(key)
        if got is None:  # remembered: asked for every batch, ~3 us of Python each time
            got = _splitmix(self.seed, source, pass_, 0x5EED)
            if len(self._pass_keys) >= 1024:
                self._pass_keys.clear()
            self._pass_keys[key] = got
        return got

    def __repr__(self) -> str:
        mix = ", ".join(f"{k}={w:.4g}" for k, w in self.weights.items())
        return f"Mixture({mix}; sizes={self.sizes}, seed={self.seed})"
