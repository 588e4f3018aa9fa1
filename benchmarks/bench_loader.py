"""datafuel Loader vs torch DataLoader vs a nanoGPT-style get_batch loop.

    python3 benchmarks/bench_loader.py [--quick]

Workloads (same bytes on disk for every contender, page cache warm):

- tokens: batches of 64 windows of 1024+1 uint16 tokens from a flat token corpus,
  delivered as int64 tensors (B, 1025).
- tabular: batches of 1024 shuffled rows of 64 float32 features + an int64 label.

Contenders:

(a) ``datafuel.loaders.Loader`` (2 worker threads, prefetch 4);
(b) ``torch.utils.data.DataLoader`` with 2 worker processes (persistent, timed after a
    warm-up epoch start) over a map-style ``Dataset`` reading the same np.memmap;
(c) a nanoGPT-style ``get_batch`` loop in the training thread (np.memmap opened per
    batch, one slice per sample, ``torch.stack``).

Also: starvation with a 20 ms simulated step (target < 1%), starvation-meter
overhead (meter on vs off, target < 2%), per-stage spans overhead (spans on vs off in
one run, target < 2%), and gather bandwidth vs single-thread memcpy
(target >= 50%). Medians over repeats; ratios are datafuel / peer.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datafuel.loaders import Loader, ShardSet, ShardWriter, fixed, ragged

T = 1024  # context length: windows of T + 1 tokens (inputs w[:-1], targets w[1:])
B_TOK = 64
B_TAB = 1024
D_TAB = 64


# -- data ------------------------------------------------------------------------------
def make_tokens(root: Path, n_tokens: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    flat = rng.integers(0, 50257, size=n_tokens, dtype=np.uint16)  # GPT-2 vocab fits uint16
    flat_path = root / "tokens.bin"
    flat.tofile(flat_path)  # what nanoGPT's prepare.py writes
    shard_dir = root / "tokens"
    # documents of ~2k tokens, as a text stage would write them
    cuts = np.arange(0, n_tokens, 2048)
    with ShardWriter(shard_dir, {"tokens": ragged("uint16")}, shard_bytes=32 << 20) as w:
        for s in range(0, len(cuts), 512):
            w.write({"tokens": [flat[c : c + 2048] for c in cuts[s : s + 512]]})
    return flat_path, shard_dir


def make_table(root: Path, rows: int) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(rows, D_TAB)).astype(np.float32)
    y = rng.integers(0, 10, size=rows).astype(np.int64)
    x_path, y_path = root / "x.f32", root / "y.i64"
    x.tofile(x_path)
    y.tofile(y_path)
    shard_dir = root / "table"
    with ShardWriter(
        shard_dir, {"x": fixed("float32", (D_TAB,)), "y": fixed("int64")}, shard_bytes=32 << 20
    ) as w:
        for s in range(0, rows, 65536):
            w.write({"x": x[s : s + 65536], "y": y[s : s + 65536]})
    return x_path, y_path, shard_dir


# -- peers -----------------------------------------------------------------------------
class TokenWindowDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Window i = tokens [i*T, i*T + T + 1) of the flat memmap (the usual torch recipe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.n = (path.stat().st_size // 2 - 1) // T
        self.data: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.data is None:
            self.data = np.memmap(self.path, dtype=np.uint16, mode="r")
        return torch.from_numpy(self.data[i * T : i * T + T + 1].astype(np.int64))


class TableDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, x_path: Path, y_path: Path) -> None:
        self.x_path, self.y_path = x_path, y_path
        self.n = y_path.stat().st_size // 8
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.x is None:
            self.x = np.memmap(self.x_path, dtype=np.float32, mode="r").reshape(-1, D_TAB)
            self.y = np.memmap(self.y_path, dtype=np.int64, mode="r")
        assert self.y is not None
        return torch.from_numpy(np.array(self.x[i])), torch.tensor(self.y[i])


def nanogpt_tokens(path: Path) -> Iterator[torch.Tensor]:
    while True:
        # nanoGPT recreates the memmap every batch to avoid a memory leak
        data = np.memmap(path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - T - 1, (B_TOK,))
        yield torch.stack([torch.from_numpy(data[i : i + T + 1].astype(np.int64)) for i in ix])


def nanogpt_table(x_path: Path, y_path: Path) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        x = np.memmap(x_path, dtype=np.float32, mode="r").reshape(-1, D_TAB)
        y = np.memmap(y_path, dtype=np.int64, mode="r")
        ix = torch.randint(len(y), (B_TAB,))
        xb = torch.stack([torch.from_numpy(np.array(x[i])) for i in ix])
        yield xb, torch.from_numpy(y[ix.numpy()])


# -- timing ----------------------------------------------------------------------------
def endless(make: Callable[[], Any]) -> Iterator[Any]:
    src = make()
    while True:
        got = False
        for b in src:
            got = True
            yield b
        if not got:
            raise RuntimeError("empty epoch")


def once(it: Iterator[Any], batches: int) -> float:
    """Seconds per batch over one run of ``batches``."""
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - t0) / batches


def per_batch(it: Iterator[Any], batches: int, repeats: int, step_s: float = 0.0) -> float:
    """Median seconds per batch over ``repeats`` runs of ``batches`` (after a warm-up run)."""
    times = []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
            if step_s:
                time.sleep(step_s)
        if r:
            times.append((time.perf_counter() - t0) / batches)
    return statistics.median(times)


def head_to_head(
    name: str,
    contenders: dict[str, Callable[[], Iterator[Any]]],
    samples_per_batch: int,
    batches: int,
    repeats: int,
) -> dict[str, float]:
    """Contenders measured in alternating rounds (shared-machine noise hits all alike).

    Each round first takes 8 batches untimed, so the batches a contender prefetched
    while the others ran (DataLoader: 2 workers x prefetch 4; Loader: 4) are not
    counted; the timed batches are steady-state throughput.
    """
    its = {label: make() for label, make in contenders.items()}
    times: dict[str, list[float]] = {label: [] for label in its}
    for r in range(repeats + 1):
        for label, it in its.items():
            for _ in range(8):
                next(it)
            t = once(it, batches)
            if r:  # round 0 is the warm-up
                times[label].append(t)
    for it in its.values():
        close = getattr(it, "close", None)
        if close is not None:
            close()
    res = {label: statistics.median(ts) for label, ts in times.items()}
    base = res["datafuel Loader"]
    print(f"{name}:")
    for label, t in res.items():
        print(
            f"  {label:<28} {t * 1e3:8.2f} ms/batch  {samples_per_batch / t:12,.0f} samples/s"
            + ("" if label == "datafuel Loader" else f"   datafuel is {t / base:5.2f}x faster")
        )
    return res


def paired(
    shard_dir: Path, batches: int, repeats: int, kw_a: dict[str, Any], kw_b: dict[str, Any]
) -> tuple[float, float, float]:
    """Seconds per batch of loaders a and b, and the median ratio b/a over paired rounds.

    Rounds alternate which loader goes first (shared-machine noise hits both alike).
    """
    a = Loader(shard_dir, B_TOK, seq_len=T, num_workers=2, **kw_a)
    b = Loader(shard_dir, B_TOK, seq_len=T, num_workers=2, **kw_b)
    ia, ib = endless(lambda: a), endless(lambda: b)
    once(ia, batches)
    once(ib, batches)
    ta, tb, ratios = [], [], []
    for r in range(2 * repeats + 1):
        for _ in range(8):
            next(ia)
            next(ib)
        if r % 2:
            x, y = once(ia, batches), once(ib, batches)
        else:
            y, x = once(ib, batches), once(ia, batches)
        ta.append(x)
        tb.append(y)
        ratios.append(y / x)
    a.close()
    b.close()
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def toggled(shard_dir: Path, epochs: int, rounds: int, control: bool) -> tuple[float, float, float]:
    """Seconds per batch with spans on and off on ONE loader (its recorder set and cleared
    between passes), and the median paired ratio on/off over ``rounds`` rounds that
    alternate which goes first; ``control``: both "off" (what the harness itself shows).

    Two loaders compared side by side differ by several percent even with identical
    settings (the second one made runs slower here); one loader toggled does not.
    """
    loader = Loader(shard_dir, B_TOK, seq_len=T, num_workers=2, prefetch=4, spans=True)
    rec = loader._spans

    def run(on: bool) -> float:
        loader._spans = rec if on and not control else None
        n, t0 = 0, time.perf_counter()
        for _ in range(epochs):
            for batch in loader:
                del batch
                n += 1
        return (time.perf_counter() - t0) / n

    run(False)
    run(True)
    t_on, t_off, ratios = [], [], []
    for r in range(rounds):
        got = {s: run(s) for s in ((True, False) if r % 2 else (False, True))}
        t_on.append(got[True])
        t_off.append(got[False])
        ratios.append(got[True] / got[False])
    loader.close()
    return statistics.median(t_off), statistics.median(t_on), statistics.median(ratios)


def meter_overhead(shard_dir: Path, batches: int, repeats: int) -> None:
    """Throughput with the meter on vs off, plus an off-vs-off control, plus the meter's own cost.

    Loaders are compared in paired rounds with alternating order; the off/off control
    shows how much of the difference is the machine, not the meter. Spans are off in
    both (they have their own comparison, :func:`spans_overhead`).
    """
    off, on = {"meter": False, "spans": False}, {"meter": True, "spans": False}
    m_off, m_on, ratio = paired(shard_dir, batches, repeats, off, on)
    _, _, control = paired(shard_dir, batches, repeats, off, off)
    # the meter's cost in isolation: two perf_counter calls and one record() per batch
    from datafuel.loaders._stats import StarvationMeter

    m = StarvationMeter()
    n = 200_000
    t0 = time.perf_counter()
    last = time.perf_counter()
    for _ in range(n):
        a = time.perf_counter()
        b = time.perf_counter()
        m.record(wait=b - a, wall=b - last, samples=64, nbytes=131200)
        last = b
    cost = (time.perf_counter() - t0) / n
    print("starvation meter overhead (tokens 64x1024, no step):")
    print(
        f"  meter on {m_on * 1e3:.3f} ms/batch, off {m_off * 1e3:.3f} ms/batch; median paired "
        f"ratio on/off {ratio:.4f} ({100 * (ratio - 1):+.2f}%); control off/off {control:.4f} "
        f"({100 * (control - 1):+.2f}%: the machine's noise)"
    )
    print(
        f"  meter cost in isolation: {cost * 1e9:.0f} ns/batch = {100 * cost / m_off:.3f}% of a batch "
        "(target < 2%)"
    )


def spans_overhead(shard_dir: Path, batches: int, repeats: int) -> None:
    """Throughput with per-stage spans on vs off (meter on in both), an off/off control, and
    the spans' own cost per batch in isolation (target < 2% of loader throughput)."""
    from datafuel.loaders._spans import COLLATE, COPY, END, FINITE, GATHER, TRANSFORM, SpanRecorder

    rounds = 8 * repeats
    s_off, s_on, ratio = toggled(shard_dir, 3, rounds, control=False)
    _, _, control = toggled(shard_dir, 3, rounds, control=True)
    rec = SpanRecorder()
    begin, wait, done = rec.begin, rec.wait, rec.batch
    n = 200_000
    t0 = time.perf_counter_ns()
    for j in range(n):  # what one batch adds, as the Loader calls it (no transform, no copy)
        m = begin(0, j, 0, j)
        m.stamp(GATHER)
        m.stamp(TRANSFORM, FINITE)
        m.stamp(COLLATE)
        m.stamp(COPY, END)
        done(m, None)
        wait(0, j, 0, j, 1, 2)
    empty = time.perf_counter_ns()
    for _j in range(n):
        pass
    t1 = time.perf_counter_ns()
    cost = ((empty - t0) - (t1 - empty)) / n / 1e9  # less the empty loop's own cost
    print(
        f"per-stage spans overhead (tokens 64x1024, no step, meter on; one loader, spans "
        f"toggled between passes of 3 epochs, {rounds} paired rounds):"
    )
    print(
        f"  spans on {s_on * 1e3:.3f} ms/batch, off {s_off * 1e3:.3f} ms/batch; median paired "
        f"ratio on/off {ratio:.4f} ({100 * (ratio - 1):+.2f}%); control off/off {control:.4f} "
        f"({100 * (control - 1):+.2f}%: the machine's noise)"
    )
    print(
        f"  spans cost in isolation ({'C' if rec.native else 'Python'} rings): {cost * 1e9:.0f} ns/batch = {100 * cost / s_off:.3f}% of a "
        f"batch (target < 2%); on/off over the control {100 * (ratio / control - 1):+.2f}%"
    )


def starvation(shard_dir: Path, batches: int, step_ms: float) -> None:
    loader = Loader(shard_dir, B_TOK, seq_len=T, num_workers=2)
    for batch in endless(lambda: loader):
        time.sleep(step_ms / 1000)  # the simulated training step
        del batch
        if loader.stats().batches >= batches:
            break
    loader.close()
    rep = loader.stats()
    meter = loader._meter
    assert meter is not None
    steady = sum(meter._wait[1:]) / sum(meter._wall[1:])
    print(f"starvation with a {step_ms:g} ms step (tokens 64x1024, {rep.batches} batches):")
    print(
        f"  {100 * rep.starvation:.3f}% of wall time waiting (target < 1%); after the first batch "
        f"{100 * steady:.3f}%; wait p50 {rep.wait_p50_ms:.3f} ms, p95 {rep.wait_p95_ms:.3f} ms, "
        f"max {rep.wait_max_ms:.2f} ms (first batch {1e3 * meter._wait[0]:.2f} ms)"
    )


def bandwidth(tok_dir: Path, tab_dir: Path, repeats: int) -> None:
    rng = np.random.default_rng(2)
    ds_tok, ds_tab = ShardSet(tok_dir), ShardSet(tab_dir)
    stream = ds_tok.token_stream()
    n_win = (stream.num_tokens - 1) // T
    starts = [rng.permutation(n_win)[:B_TOK] * T for _ in range(32)]
    out_tok = np.empty((B_TOK, T + 1), np.uint16)
    rows = [rng.integers(0, len(ds_tab), size=B_TAB) for _ in range(32)]
    out_tab = {
        "x": np.empty((B_TAB, D_TAB), np.float32),
        "y": np.empty(B_TAB, np.int64),
    }
    k = iter(range(1 << 30))

    def tok() -> None:
        stream.windows(starts[next(k) % 32], T + 1, out=out_tok)

    def tab() -> None:
        ds_tab.gather(rows[next(k) % 32], out=out_tab)

    big = rng.integers(0, 255, size=96 << 20, dtype=np.uint8)  # beyond the caches

    def memcpy_of(nbytes: int) -> Callable[[], None]:
        dst = np.empty(nbytes, np.uint8)
        offs = rng.integers(0, len(big) - nbytes, size=32)

        def f() -> None:
            o = offs[next(k) % 32]
            np.copyto(dst, big[o : o + nbytes])

        return f

    def timed(fn: Callable[[], None], peer: Callable[[], None]) -> tuple[float, float]:
        """Median seconds per call of fn and of peer, measured in alternating rounds."""
        fn()
        peer()
        ts: tuple[list[float], list[float]] = ([], [])
        for _ in range(2 * repeats):
            for f, acc in ((fn, ts[0]), (peer, ts[1])):
                t0 = time.perf_counter()
                for _ in range(50):
                    f()
                acc.append((time.perf_counter() - t0) / 50)
        return statistics.median(ts[0]), statistics.median(ts[1])

    print("gather bandwidth vs single-thread memcpy of the same bytes:")
    for name, fn, nbytes in (
        ("token windows 64x1025 uint16", tok, out_tok.nbytes),
        ("tabular 1024 rows x 64 f32 + i64", tab, out_tab["x"].nbytes + out_tab["y"].nbytes),
    ):
        t_g, t_m = timed(fn, memcpy_of(nbytes))
        print(
            f"  {name:<34} gather {nbytes / t_g / 1e9:6.2f} GB/s   memcpy {nbytes / t_m / 1e9:6.2f} GB/s"
            f"   ratio {t_m / t_g:5.2f} (target >= 0.5)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller data, fewer repeats")
    args = ap.parse_args()
    n_tokens = 8_000_000 if args.quick else 32_000_000
    rows = 100_000 if args.quick else 400_000
    batches, repeats = (30, 3) if args.quick else (60, 5)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        root = Path(tmp)
        flat, tok_dir = make_tokens(root, n_tokens)
        x_path, y_path, tab_dir = make_table(root, rows)
        for p in (flat, x_path, y_path):  # page cache warm for everyone
            np.fromfile(p, dtype=np.uint8).sum()
        for d in (tok_dir, tab_dir):
            for f in sorted(d.glob("*.bin")):
                np.fromfile(f, dtype=np.uint8).sum()
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread; "
            f"tokens: {n_tokens:,} uint16; table: {rows:,} x {D_TAB} float32; "
            f"{batches} batches x {repeats} repeats (medians)"
        )

        def dl(ds: Any, bs: int) -> Iterator[Any]:
            loader = torch.utils.data.DataLoader(
                ds,
                batch_size=bs,
                shuffle=True,
                num_workers=2,
                persistent_workers=True,
                prefetch_factor=4,
            )
            return endless(lambda: loader)

        head_to_head(
            f"tokens: batches of {B_TOK} x {T + 1} tokens -> int64",
            {
                "datafuel Loader": lambda: endless(
                    lambda: Loader(tok_dir, B_TOK, seq_len=T, num_workers=2, prefetch=4)
                ),
                "torch DataLoader (2 procs)": lambda: dl(TokenWindowDataset(flat), B_TOK),
                "nanoGPT get_batch": lambda: nanogpt_tokens(flat),
            },
            B_TOK,
            batches,
            repeats,
        )
        head_to_head(
            f"tabular: batches of {B_TAB} rows x {D_TAB} float32 + int64 label",
            {
                "datafuel Loader": lambda: endless(
                    lambda: Loader(tab_dir, B_TAB, num_workers=2, prefetch=4)
                ),
                "torch DataLoader (2 procs)": lambda: dl(TableDataset(x_path, y_path), B_TAB),
                "nanoGPT-style get_batch": lambda: nanogpt_table(x_path, y_path),
            },
            B_TAB,
            max(10, batches // 3),
            repeats,
        )
        starvation(tok_dir, 100 if args.quick else 250, 20.0)
        meter_overhead(tok_dir, batches * 2, repeats + 2)
        spans_overhead(tok_dir, batches * 2, repeats + 2)
        bandwidth(tok_dir, tab_dir, repeats)


if __name__ == "__main__":
    main()
