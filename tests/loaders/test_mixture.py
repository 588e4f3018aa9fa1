"""Weighted mixtures: smooth exact proportions, per-source passes, elastic resume, DDP."""

from __future__ import annotations

import json
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from loader_helpers import take, write_tokens
from test_distributed import launch_ranks

from datafuel.errors import ConfigError, DatafuelError, WorkerError
from datafuel.loaders import Loader, ShardSet, bytes_field, fixed, write_shards
from datafuel.loaders._mixture import Mixture, Schedule, _tree_counts, feistel_permute

ISSUE_WEIGHTS = {"web": 0.6, "code": 0.25, "books": 0.15}
#: a row source's ``idx`` is ``OFFSET[name] + row``: a sample names itself and its source
OFFSET = {"books": 0, "code": 10_000, "web": 20_000, "tiny": 30_000}


def write_source(directory: Path, name: str, n: int) -> Path:
    write_shards(
        directory / name,
        fields={"idx": fixed("int64"), "x": fixed("float32", (2,))},
        shard_bytes=400,
        idx=np.arange(OFFSET[name], OFFSET[name] + n, dtype=np.int64),
        x=np.zeros((n, 2), np.float32),
    )
    return directory / name


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mix")
    return {k: write_source(d, k, n) for k, n in {"web": 300, "code": 120, "books": 45}.items()}


def worst_window_deviation(src: np.ndarray, weights: list[float], max_len: int) -> float:
    """The largest |count - L * w| over every source, every L <= max_len and every start."""
    worst = 0.0
    for s, w in enumerate(weights):
        c = np.concatenate([[0], np.cumsum(src == s)])
        for length in range(1, max_len + 1):
            dev = np.abs(c[length:] - c[:-length] - length * w).max()
            worst = max(worst, float(dev))
    return worst


def global_run(make: Any, world: int, steps: int | None = None) -> list[tuple[int, int]]:
    """``(source, idx)`` in global order: each step's rank batches in rank order."""
    loaders = [make(r, world) for r in range(world)]
    out: list[tuple[int, int]] = []
    for k, batches in enumerate(zip(*loaders, strict=True)):
        if steps is not None and k == steps:
            break
        assert len({len(b["idx"]) for b in batches}) == 1  # equal batches on every rank
        for b in batches:
            out += zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    return out


# -- proportions ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 77])
@pytest.mark.parametrize(
    "weights",
    [
        ISSUE_WEIGHTS,
        {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1},
        {"a": 0.001, "b": 0.999},
        {"a": 0.45, "b": 0.3, "c": 0.15, "d": 0.1},
        {"a": 2, "b": 7, "c": 13},
    ],
)
def test_every_run_of_consecutive_samples_holds_the_proportions(
    weights: dict[str, float], seed: int
) -> None:
    m = Mixture({k: 1000 for k in weights}, weights, seed=seed)
    assert m.deviation_bound <= 2
    target = [m.weights[k] for k in m.names]
    np.testing.assert_allclose(
        target, [weights[k] / sum(weights.values()) for k in m.names], atol=1e-12
    )
    # every L up to 400 at every start of a 20,000-sample prefix, and far out too
    for start in (0, 10**9 + 12_345):
        src = m.sources(np.arange(start, start + 20_000))
        assert worst_window_deviation(src, target, 400) <= 2
    # the closed-form counts agree with the positions
    src = m.sources(np.arange(50_000))
    assert m.counts(50_000) == np.bincount(src, minlength=len(m.names)).tolist()


def test_the_window_check_can_fail() -> None:
    """A seeded i.i.d. draw with the same weights misses +-2 in some window."""
    rng = np.random.default_rng(0)
    src = rng.choice(3, size=20_000, p=[0.15, 0.25, 0.6])
    assert worst_window_deviation(src, [0.15, 0.25, 0.6], 400) > 2


def test_loader_batches_follow_the_mixture_order(sources: dict[str, Path]) -> None:
    loader = Loader(sources, 16, weights=ISSUE_WEIGHTS, seed=5, num_workers=2)
    got = [
        (s, i) for b in loader for s, i in zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    ]
    assert len(got) == 465 == loader.sampler.num_samples  # default: the sources' total size
    m = loader.mixture
    assert m is not None and m.names == ["books", "code", "web"]
    src, sample, _ = m.samples(np.arange(465))
    names = m.names
    assert got == [(int(s), OFFSET[names[s]] + int(j)) for s, j in zip(src, sample, strict=True)]
    assert worst_window_deviation(np.array([s for s, _ in got]), [0.15, 0.25, 0.6], 200) <= 2
    report = loader.stats()
    counts = np.bincount(src, minlength=3)
    assert report.mix_counts == dict(zip(names, counts.tolist(), strict=True))
    assert report.mix is not None and abs(report.mix["web"] - 0.6) < 2 / 465
    assert report.mix_target == {"books": 0.15, "code": 0.25, "web": 0.6}
    assert "mix" in str(report)


# -- per-source passes ------------------------------------------------------------------
def test_a_small_source_wraps_with_full_permutations(tmp_path: Path) -> None:
    srcs = {"tiny": write_source(tmp_path, "tiny", 7), "web": write_source(tmp_path, "web", 900)}
    loader = Loader(srcs, 10, weights={"tiny": 0.3, "web": 0.7}, seed=3, num_samples=200)
    seq: dict[int, list[int]] = {0: [], 1: []}
    for _ in range(2):  # two epochs of 200: web is never restarted at the epoch boundary
        for b in loader:
            for s, i in zip(b["source"].tolist(), b["idx"].tolist(), strict=True):
                seq[s].append(i)
    tiny = [i - OFFSET["tiny"] for i in seq[0]]
    passes = [tiny[k : k + 7] for k in range(0, len(tiny) - len(tiny) % 7, 7)]
    assert len(passes) >= 15
    assert all(sorted(p) == list(range(7)) for p in passes)  # every pass a full permutation
    assert len({tuple(p) for p in passes}) > len(passes) // 2  # fresh ones, not one repeated
    web = seq[1]
    assert len(web) == 280 and len(set(web)) == 280  # its own first pass, still going


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 64, 65, 1000, 4097])
def test_feistel_permutation_is_a_bijection(n: int) -> None:
    for key in (0, 1, 99):
        p = feistel_permute(np.arange(n), n, key)
        assert sorted(p.tolist()) == list(range(n))
    if n > 16:
        assert feistel_permute(np.arange(n), n, 1).tolist() != list(range(n))


# -- resume and DDP --------------------------------------------------------------------
@pytest.mark.parametrize("order", [{}, {"shuffle": "shards", "shuffle_window": 2}])
@pytest.mark.parametrize("stop", [0, 3, 7, 11, 12, 17])
def test_resume_under_another_world_size_and_batch_size(
    sources: dict[str, Path], stop: int, order: dict[str, Any]
) -> None:
    """World 4 x batch 5 stopped after ``stop`` steps; world 3 x batch 7 finishes it (the
    full permutation, and shard blocks)."""

    def make(batch: int) -> Any:
        return lambda r, w: Loader(
            sources,
            batch,
            weights=ISSUE_WEIGHTS,
            seed=9,
            num_samples=240,
            rank=r,
            world_size=w,
            num_workers=0,
            **order,
        )

    epochs = 2
    reference: list[tuple[int, int]] = []
    first = [make(5)(r, 4) for r in range(4)]
    for _ in range(epochs):
        for batches in zip(*first, strict=True):
            for b in batches:
                reference += zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    assert len(reference) == 480
    head_loaders = [make(5)(r, 4) for r in range(4)]
    for x in head_loaders:  # through the epoch boundary (12 steps) where stop > 12
        assert len(list(take(x, stop))) == stop
    states = [json.loads(json.dumps(x.state_dict())) for x in head_loaders]
    assert all(s == states[0] | {"world_size": 4, "batch_size": 5} for s in states)
    second = [make(7)(r, 3) for r in range(3)]
    for x in second:
        x.load_state_dict(states[0])
    tail: list[tuple[int, int]] = []
    empty = 0
    while len(tail) < 480 - 20 * stop:
        step = list(zip(*second, strict=True))
        # saved at an epoch's last batch: the first pass is empty (as in StatefulDataLoader)
        empty += not step
        assert empty <= 1, "the resumed run ended early"
        for batches in step:
            assert len({len(b["idx"]) for b in batches}) == 1
            for b in batches:
                tail += zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    assert tail[: 480 - 20 * stop] == reference[20 * stop :]


def test_ranks_get_equal_batches_and_disjoint_samples(sources: dict[str, Path]) -> None:
    def make(r: int, w: int) -> Loader:
        return Loader(sources, 6, weights=ISSUE_WEIGHTS, rank=r, world_size=w, num_samples=200)

    loaders = [make(r, 3) for r in range(3)]
    lens = {len(x) for x in loaders}
    assert lens == {12}  # 200 samples rounded up to 201: 67 per rank in batches of 6
    per_rank = [
        [(s, i) for b in x for s, i in zip(b["source"].tolist(), b["idx"].tolist(), strict=True)]
        for x in loaders
    ]
    assert [len(p) for p in per_rank] == [67, 67, 67]
    assert len(set().union(*map(set, per_rank))) == 201  # nothing on two ranks


DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch.distributed as dist
    from datafuel.loaders import Loader

    root, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", init_method="env://")
    names = ("web", "code", "books")
    loader = Loader({k: f"{root}/{k}" for k in names}, 5,
                    weights={"web": 0.6, "code": 0.25, "books": 0.15}, num_samples=151, seed=4)
    seen = []
    for batch in loader:
        t = batch["idx"].float().sum().reshape(1)
        dist.all_reduce(t)  # equal batch counts: this never hangs
        seen.append(list(zip(batch["source"].tolist(), batch["idx"].tolist())))
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"len": len(loader), "seen": seen,
                                      "state": loader.state_dict()})
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def test_two_process_gloo_mixture(sources: dict[str, Path], tmp_path: Path) -> None:
    assert torch.distributed.is_available()
    script = tmp_path / "ddp_mix.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "seen.json"
    procs = launch_ranks(script, sources["web"].parent, out)
    results = []
    for p in procs:
        try:
            _stdout, stderr = p.communicate(timeout=120)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()
        results.append((p.returncode, stderr))
    assert all(rc == 0 for rc, _ in results), results
    g = json.loads(out.read_text())
    assert g[0]["len"] == g[1]["len"] == 16  # 151 rounded up to 152: 76 per rank, batches of 5
    assert [len(b) for b in g[0]["seen"]] == [len(b) for b in g[1]["seen"]]
    a, b = ({tuple(x) for batch in r["seen"] for x in batch} for r in g)
    assert len(a) == len(b) == 76 and not a & b
    counts = np.bincount([s for s, _ in a | b], minlength=3)
    assert np.all(np.abs(counts - 152 * np.array([0.15, 0.25, 0.6])) <= 2)
    assert g[0]["state"]["base"] == 152  # the next epoch starts after the positions taken
    assert g[0]["state"] == g[1]["state"] | {"epoch": g[0]["state"]["epoch"]}


def test_state_is_a_small_json(tmp_path: Path, sources: dict[str, Path]) -> None:
    loader = Loader(sources, 4, weights=ISSUE_WEIGHTS, num_samples=10**12)
    next(iter(loader))
    text = json.dumps(loader.state_dict())
    assert len(text.encode()) < 1024
    many = {f"s{i:02d}": ShardSet(sources["web"]) for i in range(40)}
    big = Loader(many, 4, weights={k: i + 1 for i, k in enumerate(many)})
    assert len(json.dumps(big.state_dict()).encode()) < 1024
    other = Loader(
        sources, 4, weights={"web": 0.5, "code": 0.25, "books": 0.25}, num_samples=10**12
    )
    with pytest.raises(DatafuelError, match="kind"):
        other.load_state_dict(json.loads(text))  # another mix is another order


def test_a_billion_sample_order_is_o1_per_position(sources: dict[str, Path]) -> None:
    loader = Loader(sources, 8, weights=ISSUE_WEIGHTS, num_samples=10**9, num_workers=0)
    assert len(loader) == 125_000_000
    m = loader.mixture
    assert m is not None
    m.samples(np.arange(16))  # warm numpy's code paths
    tracemalloc.start()
    t0 = time.perf_counter()
    plan = loader.sampler.plan(10**9 - 800)
    src, sample, passes = m.samples(np.arange(10**9 - 800, 10**9))
    counts = m.counts(10**9)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 1_000_000, (elapsed, peak)
    assert len(plan) == 100 and sum(counts) == 10**9
    assert counts == [150_000_000, 250_000_000, 600_000_000]
    assert int(passes.max()) > 1_000_000  # web (300 rows) is deep into its own passes
    # a resumed loader near the end of that budget hands out its batch at once
    state = loader.state_dict() | {"position": 10**9 - 16}
    loader.load_state_dict(state)
    t0 = time.perf_counter()
    batches = list(loader)
    assert time.perf_counter() - t0 < 1.0 and len(batches) == 2
    names = m.names
    got = [
        (s, i)
        for b in batches
        for s, i in zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    ]
    src, sample, _ = m.samples(np.arange(10**9 - 16, 10**9))
    assert got == [(int(s), OFFSET[names[s]] + int(j)) for s, j in zip(src, sample, strict=True)]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(
    "sizes, weights",
    [
        ({"web": 300, "code": 120, "books": 45}, ISSUE_WEIGHTS),
        ({"a": 7, "b": 1, "c": 65, "d": 4097, "e": 2}, {"a": 1, "b": 2, "c": 3, "d": 0.5, "e": 0}),
        ({"solo": 1000}, {"solo": 1}),
    ],
)
def test_the_vectorised_order_equals_the_per_position_definition(
    sizes: dict[str, int], weights: dict[str, float], shuffle: bool
) -> None:
    """The fast path (flat-array descent, one Feistel walk for every source and pass,
    look-ahead chunks) gives exactly the recursive per-(source, pass) reference."""
    m = Mixture(sizes, weights, seed=11, shuffle=shuffle)
    rng = np.random.default_rng(5)
    probes = [
        np.arange(0, 40),
        rng.integers(0, 10**9 + 10**6, 3000),
        np.arange(10**9 - 2500, 10**9 + 2500),
        rng.integers(m.max_position - 10**6, m.max_position + 1, 200),
        rng.permutation(np.arange(5000, 5100)),
    ]
    for g in probes:
        for fast, ref in zip(m.samples(g), m._samples_reference(g), strict=True):
            np.testing.assert_array_equal(fast, ref)
        for fast, ref in zip(m.locate(g), m._locate_reference(g), strict=True):
            np.testing.assert_array_equal(fast, ref)
    # batches streamed through the look-ahead cache, as the loader asks for them
    ref_src, ref_sample, ref_pass = m._samples_reference(np.arange(10**9, 10**9 + 6016))
    for start in range(0, 6000, 32):
        src, sample, passes = m.samples(np.arange(10**9 + start, 10**9 + start + 32))
        np.testing.assert_array_equal(src, ref_src[start : start + 32])
        np.testing.assert_array_equal(sample, ref_sample[start : start + 32])
        np.testing.assert_array_equal(passes, ref_pass[start : start + 32])


def test_the_order_costs_microseconds_per_batch() -> None:
    m = Mixture({"web": 40_000, "code": 16_000, "books": 10_000}, ISSUE_WEIGHTS, seed=1)
    m.samples(np.arange(32))
    t0 = time.perf_counter()
    for start in range(0, 32 * 2000, 32):
        m.samples(np.arange(start, start + 32))
    per_batch = (time.perf_counter() - t0) / 2000
    assert per_batch < 150e-6, per_batch  # ~25 us here; the per-group reference was ~350 us


# -- weight schedules -------------------------------------------------------------------
CURRICULUM = [
    (0, {"web": 1.0, "code": 0.0, "books": 0.0}),
    (600, {"web": 0.5, "code": 0.3, "books": 0.2}),
    (900, {"web": 0.5, "code": 0.3, "books": 0.2}),  # a hold from 600 to 900
    (2_500, {"web": 0.2, "code": 0.2, "books": 0.6}),
]


def sequential_schedule(m: Mixture, n: int) -> tuple[list[int], list[int]]:
    """The schedule's definition run position by position: pick the ramp's tree by the
    quadratic rule, take that tree's next leaf (its closed-form counts one step on), and
    count each source's earlier positions."""
    nsrc = len(m.names)
    tree_used = [0] * len(m._roots)
    seen = [0] * nsrc
    src, local = [], []
    for g in range(n):
        i = max(k for k, p in enumerate(m._points) if p <= g)
        u, ta, tb = g - m._points[i], m._seg_a[i], m._seg_b[i]
        t = ta
        if ta != tb:
            phi, den = m._seg_phi[i], m._seg_den[i]
            t = tb if ((u + 1) ** 2 + phi) // den > (u * u + phi) // den else ta
        k = tree_used[t]
        after, before = _tree_counts(m._roots[t], k + 1, nsrc), _tree_counts(m._roots[t], k, nsrc)
        s = next(j for j in range(nsrc) if after[j] > before[j])
        tree_used[t] += 1
        src.append(s)
        local.append(seen[s])
        seen[s] += 1
    return src, local


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("seed", [0, 7])
def test_a_schedule_is_the_sequential_definition_and_its_counts(shuffle: bool, seed: int) -> None:
    m = Mixture({"web": 300, "code": 120, "books": 45}, CURRICULUM, seed=seed, shuffle=shuffle)
    src, local = m.locate(np.arange(3_500))
    ref_src, ref_local = sequential_schedule(m, 3_500)
    assert src.tolist() == ref_src and local.tolist() == ref_local
    for x in (0, 1, 599, 600, 750, 900, 1_700, 2_500, 3_500):
        assert m.counts(x) == np.bincount(src[:x], minlength=3).tolist()
    # the vectorised path far out, and through the look-ahead cache, agrees with counts()
    far = 10**9
    got_src, got_local = m.locate(np.arange(far, far + 2_000))
    start = m.counts(far)
    for s in range(3):
        own = np.flatnonzero(got_src == s)
        np.testing.assert_array_equal(got_local[own], start[s] + np.arange(own.size))
    # every pass of every source is still a full permutation
    srcs, sample, passes = m.samples(np.arange(3_500))
    for s, n in enumerate(m.sizes):
        at = srcs == s
        for p in np.unique(passes[at]).tolist()[:-1]:  # the last pass may be partial
            assert sorted(sample[at][passes[at] == p].tolist()) == list(range(n))
    assert m.weights == {"books": 0.6, "code": 0.2, "web": 0.2}  # the last point's
    assert m.weights_at(750) == pytest.approx({"books": 0.2, "code": 0.3, "web": 0.5})
    assert m.weights_at(300) == pytest.approx({"books": 0.1, "code": 0.15, "web": 0.75})


def test_a_single_point_schedule_is_the_constant_mixture() -> None:
    sizes = {"web": 300, "code": 120, "books": 45}
    a = Mixture(sizes, ISSUE_WEIGHTS, seed=5)
    b = Mixture(sizes, Schedule([(0, ISSUE_WEIGHTS)]), seed=5)
    g = np.arange(10**9, 10**9 + 3_000)
    for x, y in zip(a.samples(g), b.samples(g), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.fingerprint == b.fingerprint and a.deviation_bound == b.deviation_bound


def window_excess(m: Mixture, src: np.ndarray, start: int, lengths: list[int]) -> float:
    """max over sources, lengths and every start of |count - expected| - window_bound."""
    onehot = np.eye(len(m.names), dtype=np.int64)[src]
    c = np.vstack([np.zeros(len(m.names), np.int64), np.cumsum(onehot, axis=0)])
    worst = -np.inf
    for length in lengths:
        for a in range(0, src.size - length + 1):
            e = np.array(list(m.expected(start + a, start + a + length).values()))
            dev = np.abs(c[a + length] - c[a] - e).max()
            worst = max(worst, dev - m.window_bound(start + a, start + a + length))
    return float(worst)


@pytest.mark.parametrize("seed", [0, 3])
def test_a_schedule_holds_every_window_to_the_integral_of_its_weights(seed: int) -> None:
    """Every run of L consecutive positions holds each source within window_bound (the
    touched trees' D plus each touched ramp's largest weight change) of the integral of
    the interpolated weights over the run; inside one ramp of 3 sources that is < 5."""
    m = Mixture({"web": 300, "code": 120, "books": 45}, CURRICULUM, seed=seed)
    assert m.deviation_bound < 5
    assert m.window_bound(700, 800) == pytest.approx(m._bounds[1])  # inside the hold
    src = m.sources(np.arange(3_000))
    assert window_excess(m, src, 0, [1, 7, 50, 333, 1_000, 2_999]) <= 0
    # the integral is the target: the expected counts of the whole prefix, in closed form
    e = m.expected(0, 3_000)
    assert e["web"] == pytest.approx(600 * 0.75 + 300 * 0.5 + 1_600 * 0.35 + 500 * 0.2)
    # an i.i.d. draw from the same interpolated weights misses the bound somewhere
    rng = np.random.default_rng(0)
    probs = [list(m.weights_at(g).values()) for g in range(3_000)]
    iid = np.array([rng.choice(3, p=p) for p in probs])
    assert window_excess(m, iid, 0, [333, 1_000]) > 0


def test_resume_across_a_schedule_breakpoint(sources: dict[str, Path]) -> None:
    """World 4 x batch 5 stopped inside the first ramp; world 3 x batch 7 finishes across
    the breakpoints with exactly the uninterrupted run's remaining samples."""
    schedule = [
        (0, {"web": 0.8, "code": 0.2, "books": 0.0}),
        (90, {"web": 0.2, "code": 0.3, "books": 0.5}),
        (200, {"web": 0.6, "code": 0.25, "books": 0.15}),
    ]

    def make(batch: int, r: int, w: int) -> Loader:
        return Loader(
            sources,
            batch,
            weights=schedule,
            seed=2,
            num_samples=300,
            rank=r,
            world_size=w,
            num_workers=0,
        )

    first = [make(5, r, 4) for r in range(4)]
    reference = [
        (s, i)
        for batches in zip(*first, strict=True)
        for b in batches
        for s, i in zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    ]
    assert len(reference) == 300
    head = [make(5, r, 4) for r in range(4)]
    for x in head:
        assert len(list(take(x, 4))) == 4  # 80 positions: before the breakpoint at 90
    state = json.loads(json.dumps(head[0].state_dict()))
    second = [make(7, r, 3) for r in range(3)]
    for x in second:
        x.load_state_dict(state)
    tail = [
        (s, i)
        for batches in zip(*second, strict=True)
        for b in batches
        for s, i in zip(b["source"].tolist(), b["idx"].tolist(), strict=True)
    ]
    assert tail[: 300 - 80] == reference[80:]
    m = first[0].mixture
    assert m is not None
    books = [s for s, _ in reference[:90]].count(0)  # books ramps from 0 to 0.5 by 90
    assert abs(books - m.expected(0, 90)["books"]) <= m.window_bound(0, 90)
    assert m.expected(0, 90)["books"] == pytest.approx(90 * 0.25)
    assert first[0].stats().mix_target == m.weights == schedule[-1][1]


def test_bad_schedules_raise_config_errors_naming_the_problem(sources: dict[str, Path]) -> None:
    sizes = {"web": 300, "code": 120, "books": 45}

    def refused(match: str, weights: Any) -> None:
        with pytest.raises(ConfigError, match=match):
            Mixture(sizes, weights)

    w = ISSUE_WEIGHTS
    refused(
        "strictly increasing: point 2 is at 100, after point 1 at 100", [(0, w), (100, w), (100, w)]
    )
    refused(
        "strictly increasing: point 2 is at 50, after point 1 at 100", [(0, w), (100, w), (50, w)]
    )
    refused("point 0 must be at position 0", [(10, w), (100, w)])
    refused(
        "point 1 .position 100.: weights .* lack source.*'books'",
        [(0, w), (100, {"web": 1, "code": 1})],
    )
    refused("point 1 .position 100.: .*'news'", [(0, w), (100, w | {"news": 1})])
    refused("point 0 .position 0.: weights must not all be zero", [(0, {k: 0 for k in w}), (9, w)])
    refused(
        "point 1 .position 5.: weight of source 'web' must be a finite",
        [(0, w), (5, w | {"web": float("inf")})],
    )
    refused("point 1 must be a pair", [(0, w), (5, w, 1)])
    refused("point 1: the position must be an integer", [(0, w), (5.5, w)])
    refused("mapping .* or a schedule", [])
    refused("at most 2\\*\\*31 samples", [(0, w), (2**32, {"web": 1, "code": 1, "books": 1})])
    with pytest.raises(ConfigError, match="at least one point"):
        Schedule([])
    with pytest.raises(ConfigError, match="list"):
        Schedule(w)
    Mixture(sizes, [(0, w), (2**40, w)])  # a hold may be as long as wanted
    with pytest.raises(DatafuelError, match="point 1 .position 3."):
        Loader(sources, 4, weights=[(0, w), (3, {"web": 1})])


# -- token windows ----------------------------------------------------------------------
@pytest.mark.parametrize("order", [{}, {"shuffle": "shards", "shuffle_window": 1}])
def test_token_mixture_reads_each_sources_windows(tmp_path: Path, order: dict[str, Any]) -> None:
    streams = {}
    for k, seed in (("a", 1), ("b", 2), ("c", 3)):
        _, streams[k] = write_tokens(tmp_path / k, n_docs=30, seed=seed)
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    loader = Loader(
        {k: tmp_path / k for k in streams}, 8, weights=weights, seq_len=12, seed=2, **order
    )
    m, windows = loader.mixture, loader._mix_windows
    assert m is not None and windows is not None
    batches = list(loader) + list(loader)  # two epochs: small sources wrap
    assert all(b["tokens"].dtype == torch.int64 and b["tokens"].shape[1] == 13 for b in batches)
    toks = torch.cat([b["tokens"] for b in batches]).numpy()
    got_src = torch.cat([b["source"] for b in batches]).numpy()
    src, sample, passes = m.samples(np.arange(len(toks)))
    np.testing.assert_array_equal(got_src, src)
    for row, s, j, p in zip(toks, src, sample, passes, strict=True):
        w = windows[s]
        start = 12 * j + w.offset(m.pass_key(int(s), int(p)), 0, True)
        np.testing.assert_array_equal(row, streams[m.names[s]][start : start + 13])
    if not order:
        return
    # shard blocks of one shard: a batch's windows of a source start in at most two of
    # its shards (they are grouped by the shard of their start, on each pass's grid)
    for k in range(0, len(toks), 8):
        for s in np.unique(src[k : k + 8]).tolist():
            at = np.arange(k, min(k + 8, len(toks)))[src[k : k + 8] == s]
            w = windows[s]
            starts = 12 * sample[at] + np.array(
                [w.offset(m.pass_key(s, int(p)), 0, True) for p in passes[at]]
            )
            shard = np.searchsorted(w.stream.shard_starts, starts, side="right") - 1
            assert len(set(shard.tolist())) <= 2


# -- bad inputs -------------------------------------------------------------------------
def test_bad_inputs_name_the_source(sources: dict[str, Path], tmp_path: Path) -> None:
    def refused(match: str, **kw: Any) -> None:
        kw.setdefault("source", sources)
        with pytest.raises(DatafuelError, match=match):
            Loader(kw.pop("source"), 4, **kw)

    refused("lack source.*'books'", weights={"web": 0.6, "code": 0.4})
    refused("'news'", weights=ISSUE_WEIGHTS | {"news": 0.1})
    refused("source 'code'.*>= 0", weights=ISSUE_WEIGHTS | {"code": -0.1})
    refused("source 'web'.*finite", weights=ISSUE_WEIGHTS | {"web": float("nan")})
    refused("source 'books'.*number", weights=ISSUE_WEIGHTS | {"books": "0.1"})
    refused("all be zero", weights={k: 0 for k in ISSUE_WEIGHTS})
    refused("needs weights", weights=None)
    refused("mapping", weights=[0.6, 0.25, 0.15])
    refused("at least one source", source={}, weights={})
    refused("single source", source=sources["web"], weights={"web": 1.0})
    write_tokens(tmp_path / "tok")
    mixed = {"web": sources["web"], "tok": tmp_path / "tok"}
    refused(
        "source 'web' has no token field", source=mixed, weights={"web": 1, "tok": 1}, seq_len=8
    )
    refused(
        "source 'web' does not have the fields of source 'tok'",
        source=mixed,
        weights={"web": 1, "tok": 1},
    )
    refused(
        "source 'gone'",
        source=sources | {"gone": tmp_path / "gone"},
        weights=ISSUE_WEIGHTS | {"gone": 1},
    )
    refused("source 'web' must be a shard", source=sources | {"web": 3}, weights=ISSUE_WEIGHTS)
    refused("num_samples", weights=ISSUE_WEIGHTS, num_samples=0)
    empty = tmp_path / "empty"
    write_shards(
        empty,
        fields={"idx": fixed("int64"), "x": fixed("float32", (2,))},
        idx=np.zeros(0, np.int64),
        x=np.zeros((0, 2), np.float32),
    )
    refused(
        "source 'empty' has no samples",
        source=sources | {"empty": empty},
        weights=ISSUE_WEIGHTS | {"empty": 0.1},
    )
    with pytest.raises(DatafuelError, match="no single map-style dataset"):
        _ = Loader(sources, 4, weights=ISSUE_WEIGHTS).dataset


# -- documents=True and transform= on a mixture ----------------------------------------
def _doc_sources(tmp_path: Path) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """Three Zipf-length corpora whose tokens are ``1 + stream position`` (their own)."""
    from test_documents import write_corpus, zipf_lengths

    rng = np.random.default_rng(11)
    lens = {k: zipf_lengths(rng, n, cap=200) for k, n in (("a", 700), ("b", 260), ("c", 90))}
    return {k: write_corpus(tmp_path / k, v) for k, v in lens.items()}, lens


def test_mixture_document_fields_are_each_sources_documents(tmp_path: Path) -> None:
    from test_documents import doc_ids, reference_fields

    dirs, lens = _doc_sources(tmp_path)
    T, B = 24, 16
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    loader = Loader(dirs, B, seq_len=T, documents=True, weights=weights, seed=1, num_workers=2)
    plain = Loader(dirs, B, seq_len=T, weights=weights, seed=1, num_workers=2)
    names = loader.mixture.names  # type: ignore[union-attr]
    S = max(loader._mix_windows[i].max_segments for i in range(3))  # type: ignore[index]
    did = {k: doc_ids(v) for k, v in lens.items()}
    rows = 0
    for batch, ref in zip(take(loader, 3 * len(loader)), take(plain, 3 * len(plain)), strict=True):
        assert list(batch.keys()) == [
            "tokens",
            "position_ids",
            "cu_seqlens",
            "max_seqlen",
            "loss_mask",
            "source",
        ]
        torch.testing.assert_close(batch["tokens"], ref["tokens"], rtol=0, atol=0)  # same windows
        assert batch["source"].equal(ref["source"])
        tok, src = batch["tokens"].numpy(), batch["source"].numpy()
        b = len(tok)
        per_row = [reference_fields(tok[j : j + 1], did[names[src[j]]], T, S) for j in range(b)]
        pos = np.concatenate([r["position_ids"] for r in per_row])
        np.testing.assert_array_equal(batch["position_ids"].numpy(), pos)
        np.testing.assert_array_equal(
            batch["loss_mask"].numpy(), np.concatenate([r["loss_mask"] for r in per_row])
        )
        # cu_seqlens over the flattened batch: every segment start, then padding to B * S + 1
        starts = np.flatnonzero(pos.ravel() == 0)
        cu = np.full(b * S + 1, b * T, np.int32)
        cu[: starts.size] = starts
        assert batch["cu_seqlens"].dtype == torch.int32
        np.testing.assert_array_equal(batch["cu_seqlens"].numpy(), cu)
        assert int(batch["max_seqlen"]) == int(np.diff(np.append(starts, b * T)).max())
        rows += b
    assert rows >= 3 * 1000 // T  # every source wrapped at least once


def test_mixture_with_documents_resumes_exactly(tmp_path: Path) -> None:
    dirs, _ = _doc_sources(tmp_path)
    kw: dict[str, Any] = {"seq_len": 16, "documents": True, "weights": {"a": 3, "b": 2, "c": 1}}
    whole = [dict(b.items()) for b in take(Loader(dirs, 8, seed=4, num_workers=2, **kw), 30)]
    first = Loader(dirs, 8, seed=4, num_workers=2, **kw)
    it = iter(first)
    for _ in range(11):
        next(it)
    state = json.loads(json.dumps(first.state_dict()))
    again = Loader(dirs, 8, seed=4, num_workers=1, **kw)
    again.load_state_dict(state)
    rest = list(take(again, 19))
    for got, want in zip(rest, whole[11:], strict=True):
        for k in want:
            assert torch.equal(torch.as_tensor(got[k]), torch.as_tensor(want[k])), k


def test_a_mixture_cannot_pack(tmp_path: Path) -> None:
    dirs, _ = _doc_sources(tmp_path)
    with pytest.raises(ConfigError, match="cannot pack documents") as info:
        Loader(dirs, 8, seq_len=16, documents="pack", weights={"a": 1, "b": 1, "c": 1})
    assert info.value.field == "documents"


class _Tagged:
    """A transform over a row mixture: ``idx`` and ``x`` in, ``y`` out; it sees ``source``."""

    output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ()), "y": ("float32", (2,))}

    def __init__(self) -> None:
        self.seen: list[np.ndarray] = []

    def __call__(self, batch: dict[str, Any], info: Any) -> dict[str, Any]:
        self.seen.append(np.array(batch["source"]))
        return {"idx": batch["idx"], "y": batch["x"] + batch["idx"][:, None].astype(np.float32)}


def test_a_transform_sees_the_mixture_batch_and_its_sources(sources: dict[str, Path]) -> None:
    tf = _Tagged()
    loader = Loader(sources, 16, weights=ISSUE_WEIGHTS, transform=tf, seed=3, num_workers=2)
    plain = Loader(sources, 16, weights=ISSUE_WEIGHTS, seed=3, num_workers=2)
    names = loader.mixture.names  # type: ignore[union-attr]
    for batch, ref in zip(loader, plain, strict=True):
        assert set(batch.keys()) == {"idx", "y", "source"}  # source added to the transform's output
        assert batch["idx"].equal(ref["idx"]) and batch["source"].equal(ref["source"])
        idx, src = batch["idx"].numpy(), batch["source"].numpy()
        np.testing.assert_array_equal(batch["y"].numpy(), np.repeat(idx[:, None], 2, 1))
        for i, s in zip(idx, src, strict=True):  # each row's idx names its own source
            assert OFFSET[names[s]] <= i < OFFSET[names[s]] + 10_000
    assert len(tf.seen) == len(loader) and all(s.dtype == np.int64 for s in tf.seen)


def test_a_transform_decodes_bytes_across_sources(tmp_path: Path) -> None:
    # variable-length fields reach the transform as one list in batch order
    for name, base in (("p", 0), ("q", 1000)):
        write_shards(
            tmp_path / name,
            fields={"blob": bytes_field()},
            shard_bytes=300,
            blob=[f"{base + i:05d}".encode() * (1 + i % 3) for i in range(50)],
        )

    class Decode:
        output_spec: ClassVar[dict[str, Any]] = {"n": ("int64", ())}

        def __call__(self, batch: dict[str, Any], info: Any) -> dict[str, Any]:
            blobs = batch["blob"]
            assert isinstance(blobs, list) and len(blobs) == len(batch["source"])
            return {"n": np.array([int(b[:5]) for b in blobs], np.int64)}

    dirs = {"p": tmp_path / "p", "q": tmp_path / "q"}
    loader = Loader(dirs, 8, weights={"p": 1, "q": 1}, transform=Decode(), seed=0, num_workers=2)
    m = loader.mixture
    assert m is not None
    got = torch.cat([b["n"] for b in loader]).numpy()
    src, sample, _ = m.samples(np.arange(len(got)))
    np.testing.assert_array_equal(got, np.where(src == 1, 1000, 0) + sample)


def test_a_transform_that_returns_a_bad_source_is_refused(sources: dict[str, Path]) -> None:
    class BadSource:
        output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ())}

        def __call__(self, batch: dict[str, Any], info: Any) -> dict[str, Any]:
            return {"idx": batch["idx"], "source": batch["source"].astype(np.float32)}

    loader = Loader(sources, 8, weights=ISSUE_WEIGHTS, transform=BadSource(), num_workers=1)
    with pytest.raises(WorkerError, match="transform output 'source' is float32") as info:
        next(iter(loader))
    assert info.value.indices == list(range(8))  # the batch's global positions


# -- shard blocks: the order a mixture with a remote source takes ---------------------------


def _blocked(offsets: dict[str, np.ndarray], w: int, seed: int = 4, **kw: Any) -> Mixture:
    sizes = {k: int(o[-1]) for k, o in offsets.items()}
    weights = kw.pop("weights", {k: 1.0 for k in sizes})
    return Mixture(
        sizes,
        weights,
        seed=seed,
        shards={k: (lambda key, o=o: o, w) for k, o in offsets.items() if k != "full"},
        **kw,
    )


def _uneven(rng: np.random.Generator, shards: int) -> np.ndarray:
    sizes = rng.integers(0, 40, shards)
    sizes[rng.integers(0, shards)] = 0  # an empty shard among them
    return np.concatenate([[0], np.cumsum(sizes)])


@pytest.mark.parametrize("w", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("seed", [0, 5])
def test_shard_blocks_are_permutations_equal_to_their_definition(w: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    offsets = {"a": _uneven(rng, 23), "b": _uneven(rng, 9), "full": np.array([0, 50])}
    m = _blocked(offsets, w, seed=seed, weights={"a": 3, "b": 2, "full": 1})
    g = np.arange(0, 6 * int(offsets["a"][-1]))
    got = m.samples(g)
    ref = m._samples_reference(g)
    for x, y in zip(got, ref, strict=True):
        assert np.array_equal(x, y)
    src, sample, passes = got
    for s, name in enumerate(m.names):
        n = m.sizes[s]
        for q in np.unique(passes[src == s]).tolist()[:-1]:  # whole passes only
            served = sample[(src == s) & (passes == q)]
            assert sorted(served.tolist()) == list(range(n)), (name, q)
    # the full-permutation source is unchanged by its neighbours' blocks
    plain = Mixture(dict(zip(m.names, m.sizes, strict=True)), m.weights, seed=seed)
    full = m.names.index("full")
    assert np.array_equal(sample[src == full], plain.samples(g)[1][src == full])
    assert m.windows == {"a": w, "b": w}


@pytest.mark.parametrize("w", [1, 2, 4])
def test_a_run_of_a_blocked_source_reads_at_most_two_blocks_of_shards(w: int) -> None:
    offsets = np.arange(0, 64 * 30 + 1, 30)  # 64 shards of 30
    m = _blocked({"a": offsets, "b": offsets}, w, weights={"a": 1, "b": 1})
    src, sample, passes = m.samples(np.arange(0, 8 * 64 * 30))
    for s in (0, 1):
        mine = sample[src == s]
        shard = np.searchsorted(offsets, mine, side="right") - 1
        run = 30 * w  # fits in one block: at most two blocks
        touched = [len(set(shard[i : i + run].tolist())) for i in range(0, mine.size - run, 7)]
        assert max(touched) <= 2 * w
        assert max(touched) > w  # runs do cross block boundaries: the bound is tight
    # the quality measure: about 1/w of storage order's clustering is kept, against ~0
    # for the full permutation (shard_locality, per pass of source a)
    from datafuel.loaders._sampler import shard_locality

    one = sample[(src == 0) & (passes == 1)]
    full = Mixture({"a": 1920, "b": 1920}, {"a": 1, "b": 1}, seed=4).samples(np.arange(0, 4 * 1920))
    free = full[1][(full[0] == 0) & (full[2] == 1)]
    blocked, unblocked = shard_locality(one, offsets, 64), shard_locality(free, offsets, 64)
    assert abs(unblocked) < 0.02
    assert 0.5 / w < blocked <= 1.0


def test_shard_blocks_bad_arguments_are_refused() -> None:
    o = np.array([0, 5, 10])
    with pytest.raises(ConfigError, match="not a source"):
        Mixture({"a": 10}, {"a": 1}, shards={"z": (lambda k: o, 2)})
    with pytest.raises(ConfigError, match="shuffle=False"):
        Mixture({"a": 10}, {"a": 1}, shuffle=False, shards={"a": (lambda k: o, 2)})
    for w in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="shards per block"):
            Mixture({"a": 10}, {"a": 1}, shards={"a": (lambda k: o, w)})
    wrong = Mixture({"a": 11}, {"a": 1}, shards={"a": (lambda k: o, 2)})
    with pytest.raises(ConfigError, match="run from 0 to its 11 samples"):
        wrong.samples(np.arange(4))
    down = Mixture({"a": 10}, {"a": 1}, shards={"a": (lambda k: np.array([0, 7, 6, 10]), 2)})
    with pytest.raises(ConfigError, match="must not decrease"):
        down.samples(np.arange(4))


def test_a_local_mixture_takes_shard_blocks_on_request(sources: dict[str, Path]) -> None:
    kw: dict[str, Any] = dict(weights=ISSUE_WEIGHTS, seed=1, num_samples=300, num_workers=0)
    loader = Loader(sources, 10, shuffle="shards", **kw)
    counts = {k: ShardSet(v).num_shards for k, v in sources.items()}
    assert loader.mixture is not None
    assert loader.mixture.windows == {k: min(16, n) for k, n in counts.items()}
    narrow = Loader(sources, 10, shuffle="shards", shuffle_window=1, **kw)
    assert narrow.mixture is not None and set(narrow.mixture.windows.values()) == {1}
    # every batch's samples of a source come from at most two of its shards (window 1)
    for b in narrow:
        for s, name in enumerate(sorted(sources)):
            idx = b["idx"][b["source"] == s].numpy() - OFFSET[name]
            offsets = ShardSet(sources[name]).offsets
            assert len(set((np.searchsorted(offsets, idx, side="right") - 1).tolist())) <= 2
    # the proportions are the mixture's, whatever the order inside a source
    full = Loader(sources, 10, **kw)
    got = np.concatenate([b["source"].numpy() for b in narrow])
    assert np.array_equal(got, np.concatenate([b["source"].numpy() for b in full]))
    # a state names its order: another window is refused
    state = narrow.state_dict()
    with pytest.raises(ConfigError):
        Loader(sources, 10, shuffle="shards", shuffle_window=2, **kw).load_state_dict(state)
    with pytest.raises(ConfigError):
        full.load_state_dict(state)
    with pytest.raises(ConfigError, match="shuffle_window is for"):
        Loader(sources, 10, shuffle_window=2, **kw)
    with pytest.raises(ConfigError, match="shuffle must be"):
        Loader(sources, 10, shuffle="blocks", **kw)
