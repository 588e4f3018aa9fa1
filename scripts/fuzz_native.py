"""Fuzz datafuel's C extensions: random (seeded) calls with hostile arguments and data.

Targets: ``vision._jpegregion.decode_region`` and ``decode_batch`` (mutated JPEGs:
truncation, bit flips, inserted and deleted bytes, over every luma sampling; random
regions, scales, boxes and output sizes, huge and negative included), ``vision._pack
.pack_rgb`` (real RGBX images with wrong sizes and outputs) and ``clean._knnselect``
(``update``, ``update_partial``, ``exact``, ``rank`` with random shapes, formats,
indices and NaN/inf content) and ``loaders._gather`` (``rows_at``, ``windows_at`` with
offsets that lie about the shards, placeholders and out-of-range indices;
``document_fields``, and ``windows_at`` with its fields, with unsorted, repeated or
out-of-range boundaries, starts out of range, and outputs of wrong formats or too small)
and, where it was built, ``dedup._hamming`` (``pairs`` and ``cross`` with wrong formats, shapes, row
ranges and distances). Every call must return or raise a ``ValueError``/``TypeError``/
``BufferError``/``OverflowError``; a crash, or under AddressSanitizer any bad read or
write, ends the process with a non-zero status (``scripts/fuzz_asan.sh`` builds the
extensions with ASan and runs this).

Why not atheris: its coverage guidance needs the extension built with clang's
libFuzzer instrumentation, and this project builds with gcc; a seeded mutation fuzzer
under ASan catches the same class of defect (out-of-bounds access on malformed input),
deterministically for a given seed.

    python scripts/fuzz_native.py --rounds 20000 --seed 1
    python scripts/fuzz_native.py --seconds 50
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any

import numpy as np
from PIL import Image

from datafuel.clean import _knnselect as knn
from datafuel.loaders import _gather
from datafuel.vision import _jpegregion as jr
from datafuel.vision import _pack

try:  # optional: fuzzed where it was built (scripts/fuzz_asan.sh builds its own list)
    from datafuel.dedup import _hamming
except ImportError:
    _hamming = None  # type: ignore[assignment]
try:
    from datafuel.loaders import _spanring
except ImportError:  # pragma: no cover
    _spanring = None  # type: ignore[assignment]

OK_ERRORS = (ValueError, TypeError, BufferError, OverflowError, IndexError)


def seed_jpegs() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for w, h in ((64, 48), (200, 150), (33, 17), (640, 360)):
        base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((w, h), Image.Resampling.BILINEAR)
        for kw in (
            {"subsampling": 0},
            {"subsampling": 2},
            {"subsampling": 1, "progressive": True},
        ):
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85, **kw)
            out.append(buf.getvalue())
        buf = io.BytesIO()
        im.convert("L").save(buf, "JPEG")
        out.append(buf.getvalue())
        buf = io.BytesIO()
        im.convert("CMYK").save(buf, "JPEG")
        out.append(buf.getvalue())
    tool = shutil.which("cjpeg")
    if tool is not None:  # 4x2 and 2x4 luma sampling: Pillow cannot write them
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(buf, "PPM")
        for sample in ("4x2", "2x4", "4x1", "1x4"):
            out.append(
                subprocess.run(
                    [tool, "-sample", sample], input=buf.getvalue(), capture_output=True, check=True
                ).stdout
            )
    return out


def mutate(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.choice((0, 1, 1, 2, 4, 16))):
        op = r.random()
        if not b:
            break
        i = r.randrange(len(b))
        if op < 0.5:
            b[i] ^= 1 << r.randrange(8)
        elif op < 0.65:
            b[i] = r.choice((0x00, 0xFF, 0xD8, 0xD9, 0xDA, 0xC0, 0xC4))
        elif op < 0.8:
            b[i:i] = bytes(r.randrange(256) for _ in range(r.randrange(1, 9)))
        else:
            del b[i : i + r.randrange(1, 64)]
    if r.random() < 0.3:
        b = b[: r.randrange(len(b) + 1)]
    return bytes(b)


def any_int(r: random.Random) -> int:
    return r.choice(
        (
            r.randrange(-4, 700),
            r.randrange(-(2**31), 2**31),
            2**62,
            -(2**62),
            2**63 - 1,
            -(2**63),
            0,
            1,
        )
    )


#: per target: calls that returned, and that raised one of OK_ERRORS
STATS: dict[str, list[int]] = {}


def call(fn, *args) -> None:  # type: ignore[no-untyped-def]
    counts = STATS.setdefault(fn.__name__, [0, 0])
    try:
        fn(*args)
    except OK_ERRORS:
        counts[1] += 1
    else:
        counts[0] += 1


def fuzz_region(r: random.Random, seeds: list[bytes]) -> None:
    data = mutate(r.choice(seeds), r)
    denom = r.choice((1, 2, 4, 8, 8, 3, 0, -1))
    if r.random() < 0.7:  # mostly a region inside a ~600x400 image, so the decoder runs
        x, y = r.randrange(-10, 600), r.randrange(-10, 400)
        w, h = r.randrange(1, 700), r.randrange(1, 500)
        call(jr.decode_region, data, x, y, w, h, r.choice((1, 2, 4, 8)))
    else:
        call(jr.decode_region, data, any_int(r), any_int(r), any_int(r), any_int(r), denom)


def fuzz_batch(r: random.Random, seeds: list[bytes]) -> None:
    n = r.randrange(0, 6)
    items: list[object] = [mutate(r.choice(seeds), r) for _ in range(n)]
    if n and r.random() < 0.05:
        items[r.randrange(n)] = r.choice(("text", 3, None, memoryview(b"\xff\xd8")))
    rows = []
    for _ in range(n):
        x0, y0 = r.uniform(-5, 60), r.uniform(-5, 40)
        row = [x0, y0, x0 + r.uniform(-1, 200), y0 + r.uniform(-1, 150)]
        row += [
            r.choice((1, 1, 2, 4, 8, 3)),
            r.choice((0, 1, 1, 0.5) if r.random() < 0.1 else (0, 1)),
        ]
        if r.random() < 0.05:
            row[r.randrange(6)] = r.choice((float("nan"), float("inf"), 1e300, -1e300))
        rows.append(row)
    params = np.array(rows, np.float64).reshape(n, 6)
    if r.random() < 0.05:
        params = params[:, :5].copy()
    size = r.choice((1, 2, 7, 16, 33, 64))
    out = np.zeros((n if r.random() > 0.05 else n + 1, size, size, 3), np.uint8)
    call(jr.decode_batch, items, params, out, r.choice((1, 2, 3, 0)), r.random() < 0.5)
    # the planner over the same (mutated) headers, with specs near and past their limits
    spec = (
        r.choice((0, 1, 1)),
        r.choice((0.08, 0.0, 1.0, 1e-300)),
        r.choice((1.0, 0.5, 1e300, float("nan"))),
        r.choice((0.75, 1e-300, 5.0, -1.0)),
        r.choice((4 / 3, 1e300, 0.5)),
        r.choice((256, 1, 0, 2**24 + 1)),
        r.choice((224, 1, 0, 2**24 + 1)),
        r.choice((0.5, 0.0, 1.0, 2.0)),
        r.choice((0.0, 10.0, 400.0)),
        r.random() < 0.5,
    )
    idx = np.array([any_int(r) for _ in range(n)], np.int64)
    table = np.zeros((n if r.random() > 0.05 else n + 1, 6))
    status = np.zeros(n, np.int8)
    call(jr.plan_batch, items, idx, spec, any_int(r), any_int(r), any_int(r), table, status)


def fuzz_pack(r: random.Random) -> None:
    w, h = r.randrange(1, 40), r.randrange(1, 40)
    im = Image.new("RGBX", (w, h), (1, 2, 3, 255))
    schema, array = im.__arrow_c_array__()
    if r.random() < 0.5:  # the right sizes: the packer runs
        ow, oh, shape = w, h, (h, w, 3)
    else:
        ow = r.choice((w, w + 1, max(1, w - 1), 0, 70000))
        oh = r.choice((h, h + 1, max(1, h - 1), 0))
        shape = (r.choice((h, oh, 1)), r.choice((w, ow, 1)), r.choice((3, 4)))
    out = np.zeros(shape, np.uint8)
    call(_pack.pack_rgb, schema, array, out, ow, oh, r.random() < 0.5)


def fuzz_knn(r: random.Random) -> None:
    dt = r.choice((np.float32, np.float64, np.float32, np.float64, np.int32))
    b, m, kk = r.randrange(0, 9), r.randrange(0, 300), r.randrange(0, 40)
    num = (np.random.default_rng(r.randrange(2**32)).random((b, m)) * 10 - 1).astype(dt)
    cnt = np.random.default_rng(r.randrange(2**32)).integers(0, 4, (b, m)).astype(dt)
    if r.random() < 0.2 and num.size and dt is not np.int32:
        num.flat[r.randrange(num.size)] = r.choice((np.nan, np.inf, -np.inf))
    hv = np.full((b if r.random() > 0.05 else b + 1, kk), np.inf, dt)
    hi = np.full((b, kk), -1, r.choice((np.int64, np.int64, np.int32)))
    call(knn.update, num, cnt, hv, hi, any_int(r))
    d = r.randrange(0, 6)
    qt = np.random.default_rng(1).random((d, m + r.choice((0, 0, 0, 1, 2)))).astype(dt)
    sd = np.zeros((1, qt.shape[1]), dt)
    mw = r.randrange(0, 4)
    lo, hi_ = (-1, d) if r.random() < 0.7 else (-3, d + 3)
    miss = np.array(
        [[r.randrange(lo, max(lo + 1, hi_)) for _ in range(mw)] for _ in range(b)], np.int64
    )
    miss = miss.reshape(b, mw)
    off = r.randrange(0, 3) if r.random() < 0.7 else any_int(r)
    call(knn.update_partial, num, miss, sd, sd, qt, qt, hv, hi, off)
    n = r.randrange(0, 50)
    R = np.random.default_rng(2).normal(size=(b, d))
    F = np.random.default_rng(3).normal(size=(n, d if r.random() > 0.05 else d + 1))
    F[np.random.default_rng(4).random(F.shape) < 0.3] = np.nan
    w = r.randrange(0, 8)
    cand = np.array([[r.randrange(-2, n + 2) for _ in range(w)] for _ in range(b)], np.int64)
    cand = cand.reshape(b, w)
    call(knn.exact, R, F, cand, np.zeros(cand.shape))
    # rank: receivers are rows of X (blk), out written in place at the entries to do
    N = r.randrange(0, 12)
    X = np.random.default_rng(5).normal(size=(N, F.shape[1] if r.random() > 0.05 else d))
    X[np.random.default_rng(6).random(X.shape) < 0.3] = np.nan
    blk = np.array(
        [
            [
                r.randrange(-1, N + 1) if r.random() < 0.1 else r.randrange(max(N, 1))
                for _ in range(b)
            ]
        ],
        np.int64,
    )
    special = np.array([[r.randrange(-1, n + 1) for _ in range(r.randrange(0, 4))]], np.int64)
    bounds = np.random.default_rng(7).random((4 if r.random() > 0.05 else 3, b)) * 3
    call(
        knn.rank,
        X,
        blk,
        F,
        ~np.isnan(F),
        cand,
        special,
        np.isnan(X),
        bounds,
        np.zeros((1, X.shape[1])),
        X.copy(),
        np.zeros((b, X.shape[1]), np.int8),
        np.full((1, b), -np.inf),
        r.randrange(0, 7),
        r.random() < 0.5,
    )


def fuzz_gather(r: random.Random) -> None:
    k = r.randrange(0, 4)
    srcs: list[object] = [np.zeros((r.randrange(0, 20), 3), np.float32) for _ in range(k)]
    n = r.randrange(0, 10)
    rb = r.choice((12, 12, 12, 0, 4, 24))
    out = np.zeros(max(0, n * rb + r.choice((0, 0, 0, 4))), np.uint8)
    toks: list[object] = [np.zeros(r.randrange(0, 50), np.uint16) for _ in range(k)]
    length = r.randrange(-1, 12)
    win = np.zeros((n, max(length, 0)), r.choice((np.uint16, np.int64, np.uint8)))
    # the global-index kernels: offsets that may lie about the shards (too long, not
    # from 0, decreasing), placeholders and negative or past-the-end indices
    rows_per = [a.shape[0] if isinstance(a, np.ndarray) else 0 for a in srcs]
    off = np.concatenate([[0], np.cumsum(rows_per)]).astype(np.int64)
    if r.random() < 0.2 and off.size:
        off[r.randrange(off.size)] += r.choice((-3, -1, 1, 5, 2**40))
    if r.random() < 0.2 and srcs:
        srcs[r.randrange(len(srcs))] = b""
    total = max(0, min(int(off[-1]), 2**20)) if off.size else 0
    gidx = np.array([r.randrange(-total - 2, total + 3) for _ in range(n)], np.int64)
    call(_gather.rows_at, srcs, off, gidx, rb, out)
    tok_off = np.concatenate([[0], np.cumsum([len(t) for t in toks])]).astype(np.int64)
    if r.random() < 0.2 and tok_off.size:
        tok_off[r.randrange(tok_off.size)] += r.choice((-3, 1, 7, 2**40))
    ttotal = max(0, min(int(tok_off[-1]), 2**20)) if tok_off.size else 0
    gst = np.array([r.randrange(-2, ttotal + 3) for _ in range(n)], np.int64)
    call(_gather.windows_at, toks, tok_off, gst, length, win, r.choice((2, 2, 4, 3)))


def fuzz_hamming(r: random.Random) -> None:
    n = r.choice((0, 1, 2, 3, 7, 16, 17, 33, 100))
    dtype = r.choice((np.uint64, np.uint64, np.uint64, np.int64, np.uint32, np.float64))
    h = np.frombuffer(np.random.default_rng(r.randrange(1 << 30)).bytes(n * 8), np.uint64)
    if r.random() < 0.3:  # copies and near copies, so that pairs are found and stored
        h = np.concatenate([h, h[: n // 2] ^ np.uint64(r.randrange(1 << 8))])
    hashes: object = h.view(np.int64) if dtype is np.int64 else h.astype(dtype)
    if r.random() < 0.1:
        hashes = np.zeros((n, 2), np.uint64)[:, 0]  # not contiguous
    md = r.choice((0, 1, 3, 10, 32, 63, 64, -1, 65, 2**31 - 1))
    m = h.size
    r0 = r.choice((0, 0, r.randrange(-2, m + 3)))
    r1 = r.choice((m, m, r.randrange(-2, m + 3)))
    call(_hamming.pairs, hashes, md, r0, r1)
    call(_hamming.cross, hashes, h[: r.randrange(0, m + 1)].copy(), md)


def fuzz_spanring(r: random.Random) -> None:
    # rings of odd shapes, rows reserved and overwritten past capacity, marks kept past
    # their row's reuse and a reset, indices and values out of range
    ring = _spanring.Ring(r.choice((1, 2, 3, 17)), r.choice((6, 7, 12, 64)))
    keep = []
    for _ in range(r.randrange(1, 40)):
        key = [r.choice((0, 1, 2**63, 2**64 - 1, -1, 2**64)) for _ in range(4)]
        if r.random() < 0.5:
            try:
                keep.append(ring.begin(*key))
            except (OverflowError, TypeError):
                continue
        elif r.random() < 0.5:
            vals = [
                r.choice((0, 5, 2**64 - 1, -1))
                for _ in range(r.choice((ring.width - 1, ring.width, 2)))
            ]
            call(ring.put, *vals)
        else:
            fuzz_waiter(r, ring, key)
        if keep and r.random() < 0.5:
            m = r.choice(keep)
            call(m.stamp, *[r.randrange(-70, 70) for _ in range(r.randrange(0, 4))])
            call(m.__setitem__, r.randrange(-70, 70), r.choice((0, 1, 2**64 - 1, -1, 2**64)))
            call(m.__getitem__, r.randrange(-70, 70))
        if r.random() < 0.05:
            ring.reset()
    call(ring.snapshot)
    for m in keep:
        call(m.key)
        call(m.tolist)


def fuzz_waiter(r: random.Random, ring: Any, key: list[int]) -> None:
    # the loop's waiter: the pass key bound, first + job wrapping past 2**64; with a tally
    # (the meter's store) the row and the batch's wait and wall in one call
    tally = _spanring.Tally() if r.random() < 0.5 else None
    try:
        if tally is None:
            w = ring.waiter(*key[:3])
        else:
            w = ring.waiter(*key[:3], r.choice((tally, tally, None, 3)), r.choice((0, -1, 2**64)))
    except (OverflowError, TypeError, ValueError):
        return

    def waiter(*vals: int) -> None:  # (call() counts by __name__)
        w(*vals)

    for _ in range(r.randrange(1, 5)):
        n = r.choice((3, 3, 2, 5, 5, 6))
        vals = [r.choice((0, 3, 2**64 - 1, -1, 2**64, 2**63)) for _ in range(n)]
        call(waiter, *vals)
    if tally is not None:
        fuzz_tally(r, tally)


def fuzz_tally(r: random.Random, tally: Any) -> None:
    # the meter's store: growth past its first block, hostile values, reset, recorders
    def add(*vals: Any) -> None:
        tally.add(*vals)

    for _ in range(r.choice((1, 5, 1100))):
        vals = [
            r.choice((0.0, -1.0, float("nan"), 1e308, 0, 2**63, -(2**63) - 1, "x"))
            for _ in range(4)
        ]
        call(add, *vals[: r.choice((4, 4, 3))])
    rec = tally.recorder(r.choice((0, 2**64 - 1)))

    def recorder(*vals: int) -> None:
        rec(*vals)

    for _ in range(r.randrange(1, 5)):
        call(recorder, *[r.choice((0, 7, 2**64 - 1, 2**63, -1)) for _ in range(r.choice((5, 3)))])
    call(tally.snapshot)
    if r.random() < 0.3:
        tally.reset()
    call(tally.snapshot)


def fuzz_documents(r: random.Random) -> None:
    # mostly well-formed calls (so the kernel writes), each with a chance of one lie
    g = np.random.default_rng(r.randrange(2**32))
    total = r.choice((0, 1, 2, 17, 300, 300, 5000, 5000))
    t = r.choice((1, 2, 3, 8, 64)) if r.random() < 0.97 else r.choice((0, -1, 2**40))
    u = np.unique(g.integers(1, max(2, total), r.randrange(0, 200)))
    if r.random() < 0.2 and u.size:  # disorder, repeats, entries outside (0, total)
        i, j = r.randrange(u.size), r.randrange(u.size)
        op = r.random()
        if op < 0.4:
            u[i], u[j] = u[j], u[i]
        elif op < 0.7:
            u[i] = u[j]
        else:
            u[i] = r.choice((0, -5, total, total + 3, 2**62))
    if r.random() < 0.03:
        u = u.astype(r.choice((np.int32, np.uint64, np.float64)))
    n = r.randrange(0, 40)
    hi = max(1, total - max(t, 0))
    st = g.integers(0, hi, n)
    if r.random() < 0.1 and n:
        st[r.randrange(n)] = r.choice((-1, hi, total, 2**62, -(2**62)))
    if r.random() < 0.03:
        st = st.astype(r.choice((np.int32, np.uint64)))
    tt = max(0, min(t, 64))
    rows = n if r.random() > 0.05 else r.choice((0, n + 1, max(0, n - 1)))
    pos = np.zeros((rows, tt), np.int64 if r.random() > 0.03 else np.int32)
    mask = np.zeros((rows, tt), np.bool_ if r.random() > 0.03 else np.int16)
    cu_n = n * max(tt, 1) + 1  # room for every input to start a segment
    if r.random() < 0.2:  # or less room than the batch may need
        cu_n = n * r.choice((1, 2, 4)) + r.choice((1, 0, -1))
    cu = np.zeros(max(0, cu_n), np.int32 if r.random() > 0.03 else np.int64)
    call(_gather.document_fields, u, st, t, total, pos, mask, cu)
    # the same fields through windows_at (tokens and fields in one call) over a stream of
    # `total` tokens in up to 3 shards, with a max_seqlen buffer that may be wrong
    cuts = sorted(r.randrange(0, total + 1) for _ in range(r.randrange(0, 3)))
    edges = [0, *cuts, total]
    toks = [np.zeros(b - a, np.uint16) for a, b in itertools.pairwise(edges)]
    off = np.array(edges, np.int64)
    win = np.zeros((n, max(0, min(t, 64)) + 1), np.int64 if r.random() > 0.05 else np.uint8)
    mx = np.zeros((), r.choice((np.int32,) * 9 + (np.int64,)))
    fields: object = (u, pos, mask, cu, mx)
    if r.random() < 0.03:
        fields = r.choice(
            ((u, pos, mask, cu), (u, pos, mask, cu, mx, mx), [u, pos, mask, cu, mx], 7)
        )
    call(_gather.windows_at, toks, off, st, t + 1, win, 2, fields)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20000, help="calls per target at most")
    ap.add_argument("--seconds", type=float, default=None, help="stop after this long")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    build = os.environ.get("DATAFUEL_FUZZ_BUILD")  # scripts/fuzz_asan.sh: its ASan builds
    mods = [m for m in (jr, _pack, knn, _gather, _hamming, _spanring) if m is not None]
    for mod in mods:
        if build and not str(mod.__file__).startswith(build):
            print(f"fuzz: {mod.__name__} is {mod.__file__}, not the build in {build}")
            return 2
    print("fuzz: " + ", ".join(str(m.__file__) for m in mods))
    r = random.Random(args.seed)
    seeds = seed_jpegs()
    targets = [
        lambda: fuzz_region(r, seeds),
        lambda: fuzz_batch(r, seeds),
        lambda: fuzz_pack(r),
        lambda: fuzz_knn(r),
        lambda: fuzz_gather(r),
        lambda: fuzz_documents(r),
    ]
    if _hamming is not None:
        targets.append(lambda: fuzz_hamming(r))
    if _spanring is not None:
        targets.append(lambda: fuzz_spanring(r))
    t0 = time.monotonic()
    rounds = 0
    while rounds < args.rounds:
        if args.seconds is not None and time.monotonic() - t0 > args.seconds:
            break
        for t in targets:
            t()
        rounds += 1
    print(
        f"fuzz: {rounds} rounds x {len(targets)} targets ({len(seeds)} seed JPEGs, seed "
        f"{args.seed}) in {time.monotonic() - t0:.1f} s: no crash"
    )
    for name, (ok, refused) in sorted(STATS.items()):
        print(f"  {name:15s} {ok:7d} returned, {refused:7d} refused with an error")
    return 0


if __name__ == "__main__":
    sys.exit(main())
