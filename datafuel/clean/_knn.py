"""K-nearest-neighbour imputation with sklearn's nan-euclidean semantics, fast.

Same donors, weights and output as :class:`sklearn.impute.KNNImputer`, computed in
blocks: one matrix product per block of receivers (BLAS through torch, on the GPU when
there is one) gives approximate distances, a select keeps a few more candidates than
needed, and the candidates are re-ranked with exact float64 distances (direct
differences, no cancellation). A rigorous error bound on the matrix product decides
whether the candidates hold every true neighbour; the receivers for which they might
not (exact ties at the edge of the candidate set, as duplicated rows give, or too few
candidates with the column) are searched again, all at once, every donor within the
exact k-th distance plus the bound, or with four times as many candidates, until the
bound holds or every donor is a candidate. Memory is bounded by
``block_size x donor_block``, never ``n x n``.

The screening product's precision is chosen per transform, on its first block.
float32 halves the product's and the select's cost, and on standardised or
similar-scale features its bound holds for nearly every receiver. On raw features
(values up to 1e4 next to values of 1e-3), the cancellation in
``|r|^2 - 2 r.d + |d|^2`` exceeds the gaps between neighbours in float32 (breast
cancer raw: the bound failed for 1,106 of 1,748 entries), and in float64 it fails only
on true ties. So block 0 runs in float32, and the rest does too only if float32's
rounding (not a tie) left at most 10% of block 0's entries unproven; otherwise float64.
Either way every entry ends proven or searched again: the choice changes the time,
never the donors.

On the CPU the screen and the re-rank run in a C extension, ``_knnselect`` (optional:
without it, torch's top-k and numpy compute the same donors, ~2x slower): the select
reads each product tile once, compares 16 entries at a time against the row's current
bound and keeps a buffer for the few that pass, and the exact distances are computed
from the donor rows in place, equal to numpy's bit for bit.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch

from datafuel._checks import check_int

try:  # the native screening select (optional C extension, see _knnselect.c)
    from . import _knnselect
except ImportError:  # pragma: no cover - exercised by the fallback test's monkeypatch
    _knnselect = None  # type: ignore[assignment]
from datafuel._transformer import DatafuelTransformer, column_name, require_finite
from datafuel.errors import ConfigError, InputDataError, NonFiniteError, SchemaError

__all__ = ["KNNImputer"]

_EPS64 = float(np.finfo(np.float64).eps)
#: the largest value each int parameter accepts (fit and a loaded recipe alike)
_MAX = {"n_neighbors": 65_536, "block_size": 65_536, "donor_block": 1_048_576}
_MAX_PRODUCT = 2**26
#: float64 elements of the exact re-rank of one block (receivers x candidates x features)
_EXACT_BUDGET = 2**21
#: candidates kept per receiver in the first pass, and the growth factor of a retry
_GROWTH = 4
#: receivers x donors up to which one block holds every receiver (8 MiB of distances)
_SMALL = 2**20
#: sorted candidates looked at first for a column's k donors (a multiple of 8, <= 64)
_PREFIX = 64
_EPS32 = float(np.finfo(np.float32).eps)
#: codes of an entry in the unsafe arrays: its candidates may miss a neighbour (a tie at
#: the edge, too few with the column), or they may only because of the screening
#: product's precision (safe had the product been float64)
_MISS, _MISS_PRECISION = 1, 2
#: the re-rank in C (_knnselect.rank) where it applies; False: the numpy path always
_NATIVE_RANK = True
#: the largest centred magnitude a float32 screen takes: squares stay below 1e32, sums of
#: them (x 3 per feature) far below float32's 3.4e38 for any realistic width
_F32_MAX_VALUE = 1e16
#: bytes of products per slice of the native screen (both outputs in a core's L2)
_L2_BYTES = 512 * 1024
_TILE_ROWS = 64


class _Counter:
    """Receivers done, reported to an ``on_rows(done, total)`` callback (None: nobody)."""

    def __init__(self, on_rows: Callable[[int, int], None] | None, total: int) -> None:
        self.on_rows, self.total, self.done = on_rows, total, 0
        if on_rows is not None:
            on_rows(0, total)

    def add(self, n: int) -> None:
        self.done += n
        if self.on_rows is not None:
            self.on_rows(self.done, self.total)


@contextmanager
def _single_threaded(dev: torch.device) -> Iterator[None]:
    """torch on one thread for the block pipeline (CPU only; process-wide while it runs).

    Its intra-op pool costs more than it saves on these small products (a top-k over
    256 x 569 takes 9 ms on two threads, 0.2 ms on one), and under the pipeline's own
    threads it would oversubscribe the cores; the blocks run in parallel instead (see
    ``KNNImputer._run_blocks``). Every product of the pipeline is torch's for this
    reason: numpy's OpenBLAS cannot be held to one thread cheaply.
    """
    if dev.type == "cuda":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()


def _block_pool(workers: int) -> ThreadPoolExecutor:
    """A thread pool kept across transforms (of at least ``workers`` threads).

    A fresh pool per transform cost ~4 ms on 5,000 x 20 (a tenth of the transform):
    each new thread's first matrix product and first large allocations (MKL's
    per-thread buffers, a new malloc arena) are slow. Replaced after a fork, whose child
    inherits the pool's bookkeeping but not its threads.
    """
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datafuel-knn")
            _pool_size = workers
        return _pool


def _forget_pool() -> None:
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _c64(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous float64 array (no copy when it is one)."""
    return np.ascontiguousarray(a, dtype=np.float64)


def _exact_dist(r: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """nan-euclidean squared distance / present count (inf where nothing in common)."""
    sq = donors - r
    np.multiply(sq, sq, out=sq)
    missing = np.isnan(sq)
    # the count as a float32 product (exact for integers < 2**24): a boolean sum along a
    # short last axis is several times slower
    cnt = sq.shape[-1] - missing.astype(np.float32) @ np.ones(sq.shape[-1], np.float32)
    np.fmax(sq, 0.0, out=sq)  # NaN -> 0 (squares are >= 0); far faster than a masked copy
    num = sq.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / cnt
    out[cnt == 0] = np.inf
    return out


def _topk_smallest(
    num: torch.Tensor, kk: int, group: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kk`` smallest entries of each row (NaN counts as inf), unsorted, as a top-k.

    A top-k over thousands of columns costs as much as the matrix product; this one
    takes the minimum of each group of ``group`` columns, the ``kk`` groups with the
    smallest minima, and a top-k over their columns only. Exact: ``kk`` distinct
    entries are at most the ``kk``-th smallest group minimum, and every column left
    out lies in a group whose minimum, hence every entry, is at least that.
    Overwrites NaN in ``num`` with inf.
    """
    num = torch.nan_to_num_(num, nan=float("inf"))
    b, n = num.shape
    n_groups = n // group
    if n_groups < 8 * kk:
        return torch.topk(num, kk, dim=1, largest=False, sorted=False)
    m = n_groups * group
    mins = num[:, :m].reshape(b, n_groups, group).amin(dim=2)
    gi = torch.topk(mins, kk, dim=1, largest=False, sorted=False).indices
    offs = torch.arange(group, device=num.device)
    idx = (gi[:, :, None] * group + offs).reshape(b, kk * group)
    if m < n:
        tail = torch.arange(m, n, device=num.device).expand(b, n - m)
        idx = torch.cat([idx, tail], dim=1)
    v, sel = torch.topk(torch.gather(num, 1, idx), kk, dim=1, largest=False, sorted=False)
    return v, torch.gather(idx, 1, sel)


class KNNImputer(DatafuelTransformer):
    """Impute missing values from the k nearest rows of the training data.

    Distances are sklearn's nan-euclidean ones: over the coordinates both rows have,
    ``sqrt(n_features / n_present * sum((x - y)**2))``. For each missing entry, the
    donors are the ``n_neighbors`` nearest fitted rows that have that column; rows with
    no comparable donor get the column's training mean. Infinities are treated as
    missing. Donors come only from the data given to ``fit`` (the train split).

    Parameters
    ----------
    n_neighbors : int, default 5
        Number of donors averaged per missing value, in [1, 65536]. More than there
        are donors is allowed (all comparable donors are averaged, as in sklearn).
    weights : {"uniform", "distance"} or callable, default "uniform"
        As in sklearn: equal weights, inverse distance (a zero-distance donor takes all
        the weight), or a function of the distance array returning weights.
    block_size : int, default 256
        Receivers per matrix product (memory ~ ``block_size x donor_block`` floats),
        in [1, 65536].
    donor_block : int, default 4096
        Donors per matrix product, in [1, 1048576]; ``block_size x donor_block`` is
        at most 2**26 (512 MiB of float64 distances), so that no parameter set, a
        loaded recipe's included, can ask for unbounded memory.
    device : str, default "auto"
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when ``torch.cuda.is_available()``).

    Attributes
    ----------
    fit_X_ : ndarray of shape (n_donors, n_features)
        The training rows (NaN where missing): the donors.
    col_means_ : ndarray of shape (n_features,)
        Training mean of each column (fallback when no donor is comparable).

    Notes
    -----
    Ties (donors at exactly the same distance) are broken by the lower donor row
    index; sklearn's choice among exact ties depends on ``np.argpartition``. A column
    with no value at all in the training data is refused (sklearn silently drops it).

    Examples
    --------
    >>> import numpy as np
    >>> from datafuel.clean import KNNImputer
    >>> X = np.array([[1.0, 2.0], [np.nan, 3.0], [7.0, 6.0], [1.5, np.nan]])
    >>> KNNImputer(n_neighbors=1).fit_transform(X)[1]
    array([1., 3.])
    """

    _fitted_attrs: ClassVar[tuple[str, ...]] = ("fit_X_", "col_means_")
    _array_attrs: ClassVar[tuple[str, ...]] = ("fit_X_",)

    def __init__(
        self,
        n_neighbors: int = 5,
        *,
        weights: str | Callable[[np.ndarray], np.ndarray] = "uniform",
        block_size: int = 256,
        donor_block: int = 4096,
        device: str = "auto",
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.block_size = block_size
        self.donor_block = donor_block
        self.device = device

    def _validate_params(self) -> None:
        for name in ("n_neighbors", "block_size", "donor_block"):
            v = getattr(self, name)
            check_int(name, int(v) if isinstance(v, np.integer) else v, high=_MAX[name])
        if int(self.block_size) * int(self.donor_block) > _MAX_PRODUCT:
            raise ConfigError(
                f"block_size x donor_block must be at most {_MAX_PRODUCT} (the distances of one "
                f"block, in float64, stay under 512 MiB). Got {self.block_size} x "
                f"{self.donor_block} instead."
            )
        if not (
            callable(self.weights)
            or (isinstance(self.weights, str) and self.weights in ("uniform", "distance"))
        ):
            raise ConfigError(
                f"weights must be 'uniform', 'distance' or a callable. Got {self.weights!r} instead."
            )
        if not isinstance(self.device, str) or self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                f"device must be 'auto', 'cpu' or 'cuda'. Got {self.device!r} instead."
            )

    def _check_fitted_state(self) -> None:
        donors = self.fit_X_
        if np.isinf(donors).any():
            i, j = (int(v) for v in np.argwhere(np.isinf(donors))[0])
            raise NonFiniteError(
                f"fitted.fit_X_[{i}, {j}] must be a finite value or NaN (missing); fit turns "
                f"infinities into NaN. Found {donors[i, j].item()!r}.",
                field="fit_X_",
            )
        empty = np.isnan(donors).all(axis=0)
        if empty.any():
            j = int(np.flatnonzero(empty)[0])
            raise SchemaError(
                f"fitted.fit_X_ column {j} must hold at least one value (fit refuses an "
                "empty column). Found only NaN.",
                field="fit_X_",
            )
        require_finite(self, "col_means_", " (the training mean of each column)")

    def fit(self, X: Any, y: Any = None) -> KNNImputer:
        """Keep the training rows as donors."""
        self._validate_params()
        X = self._validate(X, reset=True)
        empty = np.isnan(X).all(axis=0)
        if X.shape[0] and empty.any():
            j = int(np.flatnonzero(empty)[0])
            raise InputDataError(
                f"column {column_name(self, j)} has no value in the training data; "
                "nothing can be imputed from it (drop the column).",
                field=str(j),
            )
        self.fit_X_ = X
        self.col_means_ = np.nanmean(X, axis=0) if X.shape[0] else np.zeros(X.shape[1])
        self._prepare()
        return self

    def _after_load(self) -> None:
        self._prepare()

    # -- donor-side precomputation ---------------------------------------------
    def _device(self) -> torch.device:
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "device is 'cuda', but torch finds no CUDA device here (use 'auto' or 'cpu')."
            )
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            return torch.device("cuda")
        return torch.device("cpu")

    def _prepare(self) -> None:
        F = np.asarray(self.fit_X_, dtype=np.float64)
        present = ~np.isnan(F)
        F0 = np.where(present, F - self.col_means_, 0.0)  # centring shrinks the rounding error
        dev = self._device()
        Pf = present.astype(np.float64)
        self._dev = dev
        self._donor_num = torch.from_numpy(np.concatenate([Pf, F0, F0 * F0], axis=1)).to(dev)
        self._donor_cnt = torch.from_numpy(Pf).to(dev)
        # float32 copies for the screening product where the bound allows it (see transform)
        self._donor_num32 = self._donor_num.float()
        self._donor_cnt32 = self._donor_cnt.float()
        self._abs_max = float(np.abs(F0).max(initial=0.0))
        s = (F0 * F0).sum(axis=1)
        self._partial: dict[bool, tuple[torch.Tensor, ...]] = {}
        if dev.type == "cpu" and _knnselect is not None:
            # the partial product's donor side (see _candidates_native), per dtype:
            # [Pf, F0], and per donor sum(F0**2), count, F0**2 and Pf by feature
            for f32 in (False, True):
                dt = torch.float32 if f32 else torch.float64
                parts = (
                    np.concatenate([Pf, F0], axis=1),
                    s[None, :],
                    Pf.sum(axis=1)[None, :],
                    np.ascontiguousarray((F0 * F0).T),
                    np.ascontiguousarray(Pf.T),
                )
                self._partial[f32] = tuple(torch.from_numpy(a).to(dt) for a in parts)
        # the donors with the largest norms (outliers) are always re-ranked exactly, so
        # the error bound of the matrix product only has to cover the rest
        n_special = min(len(s), 16)
        order = np.argsort(-s, kind="stable")
        self._special = np.sort(order[:n_special])
        self._s_max = float(s[order[n_special]]) if len(s) > n_special else 0.0
        self._present_fit = present
        self._fit_c = _c64(self.fit_X_)
        self._means_row = _c64(self.col_means_).reshape(1, -1)

    # -- transform --------------------------------------------------------------
    def fit_transform(
        self, X: Any, y: Any = None, *, on_rows: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` (``on_rows`` as there)."""
        return self.fit(X, y).transform(X, on_rows=on_rows)

    def transform(self, X: Any, *, on_rows: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Fill every missing (NaN or infinite) entry of ``X`` from its nearest donors.

        ``on_rows(done, total)``, when given, is called from this thread as blocks of
        receivers (rows with a missing value) finish their first pass, ``total`` being
        the number of receivers; the few rows searched again afterwards are not counted.
        """
        self._check_fitted()
        X = self._validate(X, reset=False)
        if not hasattr(self, "_donor_num"):
            self._prepare()
        mask = np.isnan(X)
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return X
        fit_X = self.fit_X_
        if fit_X.shape[0] == 0:
            raise InputDataError("KNNImputer was fitted on zero rows: there are no donors.")
        out = X.copy()
        n_donors, n_features = fit_X.shape
        # work: (receivers, entries to impute, candidates per receiver, thresholds)
        work: list[tuple[np.ndarray, np.ndarray, int, np.ndarray | None]] = [
            (rows, mask, 2 * int(self.n_neighbors) + 16, None)
        ]
        screen: torch.dtype | None = None  # the screening product's dtype, chosen on block 0
        progress = None if on_rows is None else _Counter(on_rows, rows.size)
        while work:
            rows, todo, n_cand, thr = work.pop()
            if thr is None:
                # rows per block: the exact re-rank holds block x candidates x features
                width = min(n_cand, n_donors) + len(self._special)
                step = max(1, min(int(self.block_size), _EXACT_BUDGET // (width * n_features)))
                if rows.size * n_donors <= _SMALL:  # one block: the per-block costs once
                    step = max(step, min(rows.size, _EXACT_BUDGET // (width * n_features)))
            else:  # a retry within a threshold: any number of candidates per row
                step = max(1, min(int(self.block_size), _EXACT_BUDGET // n_donors))
            sel = [np.arange(s, min(s + step, rows.size)) for s in range(0, rows.size, step)]
            unsafe, retry, screen = self._run_blocks(
                X, rows, sel, todo, out, n_cand, thr, screen, progress
            )
            progress = None  # the first pass only
            # entries whose candidates might miss a neighbour (a tie at the edge, too few
            # donors with the column) are searched again: every donor within the exact
            # k-th distance found plus the error bound when there is one, else with 4x
            # the candidates; once every donor is a candidate the answer is exact
            bad = unsafe.any(axis=1)
            if not bad.any() or n_cand >= n_donors:
                continue
            again = np.zeros_like(mask)
            again[rows[bad]] = unsafe[bad]
            grow = bad & ~(np.isfinite(retry) if thr is None else np.zeros_like(bad))
            if grow.any():
                todo_g = np.zeros_like(mask)
                todo_g[rows[grow]] = again[rows[grow]]
                work.append((rows[grow], todo_g, min(n_cand * _GROWTH, n_donors), None))
            near = bad & ~grow
            if near.any():
                todo_n = np.zeros_like(mask)
                todo_n[rows[near]] = again[rows[near]]
                work.append((rows[near], todo_n, n_cand, retry[near]))
        return out

    def _run_blocks(
        self,
        X: np.ndarray,
        rows: np.ndarray,
        sel: list[np.ndarray],
        todo: np.ndarray,
        out: np.ndarray,
        n_cand: int,
        thr: np.ndarray | None,
        screen: torch.dtype | None,
        progress: _Counter | None = None,
    ) -> tuple[np.ndarray, np.ndarray, torch.dtype | None]:
        """Impute ``rows`` in blocks (positions ``sel``).

        Returns the unsafe entries (``_MISS`` codes), the retry thresholds and the
        screening dtype: ``screen`` as given or, when it is None (the first pass of a
        transform), the one block 0 chose. ``progress`` hears each block as it ends.
        """
        progress = progress or _Counter(None, 0)
        unsafe = np.zeros((rows.size, X.shape[1]), dtype=np.int8)
        retry = np.zeros(rows.size)

        def one(pos: np.ndarray, dtype: torch.dtype | None) -> int:
            u, r = self._impute_block(
                X, rows[pos], todo, out, n_cand, None if thr is None else thr[pos], dtype
            )
            unsafe[pos], retry[pos] = u, r
            return pos.size

        if thr is None and screen is None:
            # the first pass of a transform: block 0 in float32 (where the bound can hold
            # at all), and float32 for the rest only if it served block 0 (deterministic:
            # the same blocks for the same input, whatever the threads do)
            screen = torch.float64
            if len(sel) > 1 and self._float32_ok():
                with _single_threaded(self._dev):
                    progress.add(one(sel[0], torch.float32))
                head = unsafe[sel[0]]
                if (head == _MISS_PRECISION).sum() <= 0.1 * max(1, int(todo[rows[sel[0]]].sum())):
                    screen = torch.float32
                sel = sel[1:]
        workers = min(len(sel), os.cpu_count() or 1)
        small = rows.size * self.fit_X_.shape[0] < 2**21  # a pool costs more than it saves
        serial = self._dev.type == "cuda" or workers <= 1 or small
        with _single_threaded(self._dev):
            if serial:
                for pos in sel:
                    progress.add(one(pos, screen))
            else:
                # One single-threaded pipeline per core, on separate blocks: torch and BLAS
                # release the GIL, and unlike one multi-threaded matmul per block there is
                # no barrier to spin on, which collapses on a machine shared with other jobs.
                pool = _block_pool(workers)
                futures = [pool.submit(one, pos, screen) for pos in sel]
                try:
                    for f in futures:
                        progress.add(f.result())  # in order, from this thread
                except BaseException:  # an error or an interrupt: no block left running
                    for f in futures:
                        f.cancel()
                    wait(futures)
                    raise
        return unsafe, retry, screen

    def _f32_range(self, R: np.ndarray) -> bool:
        """Whether the centred values of ``R`` and of the donors square safely in float32."""
        with np.errstate(invalid="ignore"):
            r_max = float(np.nanmax(np.abs(R - self.col_means_), initial=0.0))
        return max(r_max, self._abs_max) < _F32_MAX_VALUE

    def _float32_ok(self) -> bool:
        """Whether a float32 product is true float32 here (no TF32 or bfloat16 shortcut).

        The error bound of the screening product assumes IEEE float32 arithmetic with
        float32 accumulation; a lowered matmul precision would void it.
        """
        if torch.get_float32_matmul_precision() != "highest":
            return False
        return not (self._dev.type == "cuda" and torch.backends.cuda.matmul.allow_tf32)

    def _receiver_factors(self, R: np.ndarray, f32: bool) -> tuple[np.ndarray, np.ndarray]:
        """The receivers' factors of the numerator and count products (float32 or 64)."""
        Pr = ~np.isnan(R)
        R0 = np.where(Pr, R - self.col_means_, 0.0)
        a_num = np.concatenate([R0 * R0, -2.0 * R0, Pr.astype(np.float64)], axis=1)
        if f32:
            return a_num.astype(np.float32), Pr.astype(np.float32)
        return a_num, Pr.astype(np.float64)

    def _receiver_side(self, R: np.ndarray, f32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_receiver_factors` as tensors on the device."""
        a_num, a_cnt = self._receiver_factors(R, f32)
        return torch.from_numpy(a_num).to(self._dev), torch.from_numpy(a_cnt).to(self._dev)

    def _donor_side(self, f32: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if f32:
            return self._donor_num32, self._donor_cnt32
        return self._donor_num, self._donor_cnt

    def _within(self, R: np.ndarray, thr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every donor whose approximate distance is at most ``thr`` (per receiver).

        Returns (indices padded with -1, ``thr``): every donor left out is approximately
        farther than ``thr``. Used on a retry, where ``thr`` is the exact k-th distance
        found plus twice the error bound, so that a tie of any size is taken whole.
        """
        a_num, a_cnt = self._receiver_side(R)
        n = self._donor_num.shape[0]
        t = torch.from_numpy(thr).to(self._dev)[:, None]
        rows, cols = [], []
        for d0 in range(0, n, self.donor_block):
            d1 = min(n, d0 + self.donor_block)
            num = a_num @ self._donor_num[d0:d1].T
            num.div_(a_cnt @ self._donor_cnt[d0:d1].T)  # NaN (nothing in common) never <= t
            r, c = (num <= t).nonzero(as_tuple=True)
            rows.append(r.cpu().numpy())
            cols.append(c.cpu().numpy() + d0)
        r_all, c_all = np.concatenate(rows), np.concatenate(cols)
        counts = np.bincount(r_all, minlength=len(R))
        out = np.full((len(R), max(1, int(counts.max(initial=0)))), -1, dtype=np.int64)
        order = np.argsort(r_all, kind="stable")
        r_all, c_all = r_all[order], c_all[order]
        pos = np.arange(r_all.size) - (np.cumsum(counts) - counts)[r_all]
        out[r_all, pos] = c_all
        return out, thr

    def _candidates(
        self, R: np.ndarray, n_cand: int, f32: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``n_cand`` donors of each receiver; returns (indices, kth value).

        ``f32``: the product in float32, half the memory traffic of the top-k; the
        caller's bound then uses float32's unit roundoff.
        """
        dev = self._dev
        n = self._donor_num.shape[0]
        if dev.type == "cpu" and _knnselect is not None:
            return self._candidates_native(R, n_cand, f32)
        if dev.type == "cpu" and n <= self.donor_block:
            return self._candidates_numpy(R, n_cand, f32)
        a_num, a_cnt = self._receiver_side(R, f32)
        d_num, d_cnt = self._donor_side(f32)
        best_v: torch.Tensor | None = None
        best_i: torch.Tensor | None = None
        for d0 in range(0, n, self.donor_block):
            d1 = min(n, d0 + self.donor_block)
            num = a_num @ d_num[d0:d1].T
            cnt = a_cnt @ d_cnt[d0:d1].T
            num.div_(cnt)  # 0/0 -> NaN: no common coordinate; topk ranks NaN last
            if best_v is None or best_i is None:
                kk = min(n_cand, d1 - d0)
                best_v, best_i = _topk_smallest(num, kk)
                best_i = best_i + d0
                continue
            # Later chunks: only entries below the current n_cand-th best can enter, and
            # there are few of them, so gather those instead of a full top-k per chunk.
            b, w0 = best_v.shape
            thr = best_v.max(dim=1).values
            if w0 < n_cand:
                thr.fill_(float("inf"))
            thr = torch.nan_to_num(thr, nan=float("inf"))
            r, c = (num < thr[:, None]).nonzero(as_tuple=True)
            if r.numel() == 0:
                continue
            counts = torch.bincount(r, minlength=b)
            width = int(counts.max())
            pos = torch.arange(r.numel(), device=dev) - (torch.cumsum(counts, 0) - counts)[r]
            pv = torch.full((b, w0 + width), float("inf"), dtype=num.dtype, device=dev)
            pi = torch.zeros((b, w0 + width), dtype=best_i.dtype, device=dev)
            pv[:, :w0] = best_v
            pi[:, :w0] = best_i
            pv[r, w0 + pos] = num[r, c]
            pi[r, w0 + pos] = c + d0
            kk = min(n_cand, w0 + width)
            best_v, sel = torch.topk(pv, kk, dim=1, largest=False, sorted=False)
            best_i = torch.gather(pi, 1, sel)
        if best_v is None or best_i is None:  # pragma: no cover - n > 0 checked by caller
            raise InputDataError("no donors")
        kth = best_v.max(dim=1).values.double().cpu().numpy()
        kth[np.isnan(kth)] = np.inf  # fewer finite candidates than asked: all are in
        if best_v.shape[1] == n:
            kth[:] = np.inf  # every donor is a candidate
        return best_i.cpu().numpy(), kth

    def _candidates_native(
        self, R: np.ndarray, n_cand: int, f32: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_candidates` on the CPU with the native select (``_knnselect``).

        Where the receivers miss few features (at most half on average), the product
        is the partial one, ``[R0**2, -2 R0] @ [Pf, F0].T``: half the inner width of
        the full numerator and count products. The select rebuilds each row's
        numerators and counts from it and the donors' totals, less the terms of the
        row's missing features (numerator = partial + sum(F0**2) - the F0**2 of the
        missing features; count = the donor's count - their presence): the same
        quantities, with rounding errors within the same bound (see _rank_block).

        The products run on tiles of at most 64 receivers x ``_L2_BYTES`` worth of
        donors, so that the outputs are still in the core's L2 cache when the select
        reads them right after. torch's matmul (MKL, one thread here) writes them:
        numpy's OpenBLAS cannot be held to one thread cheaply (each threadpoolctl
        round trip restarts its pool, ~3 ms).
        """
        mask = np.isnan(R)
        n_features = R.shape[1]
        partial = float(mask.sum(axis=1).mean()) <= n_features / 2
        a_num, a_cnt = self._receiver_side(R, f32)
        if partial:
            a_num = a_num[:, : 2 * n_features].contiguous()
            d_num, *totals = self._partial[f32]
            sd, cd, qt, pt = (t.numpy() for t in totals)
            width = max(1, int(mask.sum(axis=1).max()))
            order = np.argsort(~mask, axis=1, kind="stable")[:, :width]
            miss = np.where(np.take_along_axis(mask, order, axis=1), order, -1)
        else:
            d_num, d_cnt = self._donor_side(f32)
        n = d_num.shape[0]
        b = len(R)
        kk = min(n_cand, n)
        dt = np.dtype(np.float32 if f32 else np.float64)
        heap_v = np.full((b, kk), np.inf, dtype=dt)
        heap_i = np.full((b, kk), -1, dtype=np.int64)
        rb = min(b, _TILE_ROWS)
        step = max(256, min(int(self.donor_block), _L2_BYTES // (2 * rb * dt.itemsize)))
        tiles: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for r0 in range(0, b, rb):
            r1 = min(b, r0 + rb)
            hv, hi = heap_v[r0:r1], heap_i[r0:r1]
            for d0 in range(0, n, step):
                d1 = min(n, d0 + step)
                shape = (r1 - r0, d1 - d0)
                if shape not in tiles:  # outputs reused across tiles of one shape
                    tiles[shape] = (np.empty(shape, dt), np.empty(shape, dt))
                num, cnt = tiles[shape]
                torch.matmul(a_num[r0:r1], d_num[d0:d1].T, out=torch.from_numpy(num))
                if partial:
                    _knnselect.update_partial(num, miss[r0:r1], sd, cd, qt, pt, hv, hi, d0)
                else:
                    torch.matmul(a_cnt[r0:r1], d_cnt[d0:d1].T, out=torch.from_numpy(cnt))
                    _knnselect.update(num, cnt, hv, hi, d0)
        kth = heap_v[:, 0].astype(np.float64)  # +inf: fewer finite candidates than kk
        if kk == n:
            kth[:] = np.inf  # every donor is a candidate
        return heap_i, kth

    def _candidates_numpy(
        self, R: np.ndarray, n_cand: int, f32: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_candidates` for one donor block on the CPU, in numpy.

        On small tables torch's per-call costs dominate (a top-k over 545 x 569 takes
        3 ms, ``np.argpartition`` 0.5 ms); the candidates' order does not matter, as
        they are re-ranked exactly.
        """
        a_num, a_cnt = self._receiver_factors(R, f32)
        d_num, d_cnt = self._donor_side(f32)
        num = a_num @ d_num.numpy().T
        with np.errstate(invalid="ignore", divide="ignore"):
            num /= a_cnt @ d_cnt.numpy().T  # 0/0 -> NaN: argpartition puts it last
        n = num.shape[1]
        kk = min(n_cand, n)
        if kk < n:
            idx = np.argpartition(num, kk - 1, axis=1)[:, :kk]
            kth = np.take_along_axis(num, idx, axis=1).max(axis=1).astype(np.float64)
            kth[np.isnan(kth)] = np.inf  # fewer finite candidates than asked: all are in
        else:
            idx = np.broadcast_to(np.arange(n), num.shape).copy()
            kth = np.full(len(R), np.inf)  # every donor is a candidate
        return idx, kth

    def _impute_block(
        self,
        X: np.ndarray,
        blk: np.ndarray,
        todo: np.ndarray,
        out: np.ndarray,
        n_cand: int,
        thr: np.ndarray | None = None,
        screen: torch.dtype | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Impute the entries ``todo`` of the receivers ``blk``.

        Candidates are the approximate top ``n_cand`` donors by a ``screen`` (float32
        or float64) product, or, when ``thr`` is given, every donor approximately
        within ``thr`` by a float64 product. Returns the entries whose candidates might
        miss a neighbour (a block of ``todo``'s shape, in ``_MISS`` codes) and, per
        receiver, the threshold to retry them with (inf: unknown, grow ``n_cand``).
        """
        R = X[blk]
        if thr is None:
            # float32 only where no square can overflow it (then the bound could fail
            # without notice: inf - inf is NaN, which the top-k ranks last)
            f32 = screen == torch.float32 and self._f32_range(R)
            cand, kth = self._candidates(R, n_cand, f32)
            return self._rank_block(X, blk, todo, out, cand, kth, f32)
        cand, kth = self._within(R, thr)
        # the donors within the threshold are as many as a tie holds (hundreds of zero
        # distances on discrete columns with half the values missing, a few on others),
        # left-aligned and padded with -1: re-rank the receivers in groups of similar
        # width (within 2x), not each padded to the widest of the block
        width = (cand >= 0).sum(axis=1)
        group = np.ceil(np.log2(np.maximum(width, 1))).astype(np.int64)
        unsafe = np.zeros((len(blk), X.shape[1]), dtype=np.int8)
        retry = np.full(len(blk), -np.inf)
        for g in np.unique(group):
            idx = np.flatnonzero(group == g)
            w = max(1, int(width[idx].max()))
            unsafe[idx], retry[idx] = self._rank_block(
                X, blk[idx], todo, out, cand[idx, :w], kth[idx]
            )
        return unsafe, retry

    def _rank_block(
        self,
        X: np.ndarray,
        blk: np.ndarray,
        todo: np.ndarray,
        out: np.ndarray,
        cand: np.ndarray,
        kth: np.ndarray,
        f32: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Re-rank the candidates ``cand`` (-1: padding) exactly and impute from them.

        ``kth`` is each receiver's screening distance that every donor left out
        exceeds, up to the rounding of the screening product (float32 if ``f32``).
        """
        fit_X = self.fit_X_
        k = int(self.n_neighbors)
        n_features = X.shape[1]
        R = X[blk]
        native = (
            _NATIVE_RANK
            and _knnselect is not None
            and n_features <= 8192
            and self.weights in ("uniform", "distance")
            and X.dtype == out.dtype == np.float64  # float32 data: the numpy path
            and X.flags.c_contiguous
            and out.flags.c_contiguous
        )
        if native:
            return self._rank_native(X, blk, todo, out, cand, kth, f32)
        cand = np.concatenate(
            [cand, np.broadcast_to(self._special, (len(blk), len(self._special)))], axis=1
        )
        cand.sort(axis=1)
        # drop duplicates (a special donor also found by top-k) and the -1 padding
        dup = cand < 0
        dup[:, 1:] |= cand[:, 1:] == cand[:, :-1]
        cand[dup] = 0
        exact = np.empty(cand.shape)
        if _knnselect is not None and n_features <= 8192:
            # native: no gathered (b, w, d) copy; the same distances bit for bit
            _knnselect.exact(_c64(R), _c64(fit_X), cand, exact)
        else:
            step = max(1, _EXACT_BUDGET // (len(blk) * n_features))
            for j in range(0, cand.shape[1], step):
                exact[:, j : j + step] = _exact_dist(R[:, None, :], fit_X[cand[:, j : j + step]])
        exact[dup] = np.inf
        order = np.lexsort((cand, exact), axis=1)  # by distance, ties by donor index
        cand = np.take_along_axis(cand, order, axis=1)
        exact = np.take_along_axis(exact, order, axis=1)
        dup = np.take_along_axis(dup, order, axis=1)
        bound, bound64, tol = self._bounds(R, kth, f32)
        unsafe = np.zeros((len(blk), n_features), dtype=np.int8)
        retry = np.full(len(blk), -np.inf)
        width = cand.shape[1]
        # every entry to impute at once (not a column at a time: that was ~15 numpy
        # calls per column and block), in chunks of at most 2**20 candidate slots
        ei, ec = np.nonzero(todo[blk])
        parts = [(np.arange(ei.size), width)]
        if width > _PREFIX:
            # a wide retry (a tie of hundreds) holds its k donors with the column near
            # the front: work on a prefix of 64 (a multiple of 8 within numpy's first
            # pairwise-summation block, so the sums below are bit for bit those over the
            # whole width) and on the whole width only for the entries it does not serve
            okp = self._present_fit[cand[ei, :_PREFIX], ec[:, None]] & ~dup[ei, :_PREFIX]
            okp &= np.isfinite(exact[ei, :_PREFIX])
            short = okp.sum(axis=1) < k
            parts = [(np.flatnonzero(~short), _PREFIX), (np.flatnonzero(short), width)]
        for idx, w in parts:
            chunk = max(1, 2**20 // w)
            for j in range(0, idx.size, chunk):
                self._take_donors(
                    blk,
                    ei[idx[j : j + chunk]],
                    ec[idx[j : j + chunk]],
                    w,
                    cand,
                    exact,
                    dup,
                    (kth, bound, bound64, tol),
                    out,
                    unsafe,
                    retry,
                )
        return unsafe, retry

    def _bounds(
        self, R: np.ndarray, kth: np.ndarray, f32: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bound, bound64, tol) of the receivers ``R`` whose screening k-th values are ``kth``.

        Every donor outside the candidates is at least ``bound`` far (the screening
        product's rounding, float32's if ``f32``), and would be at least ``bound64`` with a
        float64 product; ``tol`` bounds the float64 product's error per receiver.
        """
        # error bound of the float64 product (distance units num/count, count >= 1):
        # |error| <= gamma_3d * sum |terms| <= 2 gamma_3d (s_r + s_d), generously
        n_features = R.shape[1]
        Rc = np.where(np.isnan(R), 0.0, R - self.col_means_)
        s_r = (Rc * Rc).sum(axis=1)
        tol = 8.0 * (n_features + 4) * _EPS64 * (s_r + self._s_max) + 1e-300
        bound64 = kth - tol
        if f32:  # float32's unit roundoff, and an absolute term per product for underflow
            tiny = float(np.finfo(np.float32).tiny)
            bound = kth - tol * (_EPS32 / _EPS64) - 4.0 * (n_features + 2) * tiny
        else:
            bound = bound64
        return bound, bound64, tol

    def _rank_native(
        self,
        X: np.ndarray,
        blk: np.ndarray,
        todo: np.ndarray,
        out: np.ndarray,
        cand: np.ndarray,
        kth: np.ndarray,
        f32: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_rank_block` in one GIL-free call (``_knnselect.rank``).

        The same donors, bounds and codes as the numpy path: each receiver's candidates
        and the special donors, once each, ranked by exact distance (ties by donor
        index), the first k with the column taken. It ranks lazily (a heap popped only
        as far as a column needs) and writes ``out`` in place: the numpy path's gathers,
        sorts and masks over every candidate were ~25% of a transform's time and held
        the GIL, which the other blocks' threads then waited for.
        """
        bound, bound64, tol = self._bounds(X[blk], kth, f32)
        b, d = len(blk), X.shape[1]
        bounds = np.stack([np.asarray(kth, np.float64), bound, bound64, tol])
        unsafe = np.zeros((b, d), dtype=np.int8)
        retry = np.full((1, b), -np.inf)
        _knnselect.rank(
            X,
            np.ascontiguousarray(blk, dtype=np.int64)[None, :],
            self._fit_c,
            self._present_fit,
            np.ascontiguousarray(cand, dtype=np.int64),
            self._special[None, :],
            todo,
            bounds,
            self._means_row,
            out,
            unsafe,
            retry,
            int(self.n_neighbors),
            self.weights == "distance",
        )
        return unsafe, retry[0]

    def _take_donors(
        self,
        blk: np.ndarray,
        recv: np.ndarray,
        cols: np.ndarray,
        w: int,
        cand: np.ndarray,
        exact: np.ndarray,
        dup: np.ndarray,
        bounds: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        out: np.ndarray,
        unsafe: np.ndarray,
        retry: np.ndarray,
    ) -> None:
        """Impute the entries (``blk[recv]``, ``cols``) from the first ``w`` ranked candidates.

        Marks in ``unsafe`` (and raises ``retry`` to the threshold for) the entries whose
        k-th donor is not provably nearer than every donor left out of the candidates.
        """
        if recv.size == 0:
            return
        kth, bound, bound64, tol = bounds
        k = int(self.n_neighbors)
        cw, ew = cand[recv, :w], exact[recv, :w]
        ok = self._present_fit[cw, cols[:, None]] & ~dup[recv, :w] & np.isfinite(ew)
        taken = ok & (np.cumsum(ok, axis=1) <= k)
        n_taken = taken.sum(axis=1)
        last = np.where(n_taken > 0, np.max(np.where(taken, ew, -np.inf), axis=1), -np.inf)
        full = n_taken >= k
        safe = np.where(full, last < bound[recv], np.isinf(kth[recv]))
        values = np.where(taken, self.fit_X_[cw, cols[:, None]], 0.0)
        out[blk[recv], cols] = self._average_rows(ew, values, taken, out.shape[1], cols)
        prec = full & ~safe & (last < bound64[recv])
        unsafe[recv[~safe], cols[~safe]] = _MISS
        unsafe[recv[prec], cols[prec]] = _MISS_PRECISION
        # the k taken are real donors, so the true k-th distance is at most `last`:
        # every true neighbour is approximately within last + tol
        want = np.where(full, last + 2.0 * tol[recv], np.inf)
        np.maximum.at(retry, recv[~safe], want[~safe])

    def _average_rows(
        self,
        dist: np.ndarray,
        values: np.ndarray,
        taken: np.ndarray,
        n_features: int,
        c: np.ndarray,
    ) -> np.ndarray:
        """Weighted mean of the taken donors' values per row (the mean of the row's column
        ``c`` when none)."""
        n_taken = taken.sum(axis=1)
        if self.weights == "uniform":
            w = taken.astype(np.float64)
        else:
            d = np.sqrt(np.where(taken, dist, 1.0) * n_features)
            if self.weights == "distance":
                with np.errstate(divide="ignore"):
                    w = np.where(taken, 1.0 / d, 0.0)
                zero = taken & (d == 0)
                has_zero = zero.any(axis=1)
                w[has_zero] = zero[has_zero]
            else:
                w = np.zeros_like(d)
                for j in np.flatnonzero(n_taken):
                    sel = taken[j]
                    w_j = np.asarray(self.weights(d[j][sel][None, :]), dtype=np.float64)  # type: ignore[operator]
                    w[j, sel] = np.where(np.isnan(w_j), 0.0, w_j)[0]
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            res = (w * values).sum(axis=1) / total
        return np.where(n_taken > 0, res, self.col_means_[c])
