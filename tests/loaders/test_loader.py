"""Loader: order, resume, DDP split, errors, threads, finite check, stats, training."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from loader_helpers import check_resume, take, write_rows, write_tokens

from datafuel.errors import ConfigError, NonFiniteError, SchemaError, WorkerError
from datafuel.loaders import (
    Batch,
    BatchInfo,
    EpochSampler,
    Loader,
    ShardSet,
    ShardWriter,
    bytes_field,
    fixed,
    write_shards,
)


def loader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("datafuel-loader")]


@pytest.fixture(scope="module")
def rows_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rows(tmp_path_factory.mktemp("rows") / "set")


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    return write_tokens(tmp_path_factory.mktemp("tok") / "set")


def ids(batches: list[dict[str, torch.Tensor]]) -> list[list[int]]:
    return [b["idx"].tolist() for b in batches]


# -- order ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_order_is_a_pure_function_of_seed_and_epoch(rows_dir: Path, seed: int) -> None:
    a = Loader(rows_dir, 10, seed=seed)
    b = Loader(rows_dir, 10, seed=seed, num_workers=0)
    epochs_a = [ids(list(a)) for _ in range(3)]
    epochs_b = [ids(list(b)) for _ in range(3)]
    assert epochs_a == epochs_b
    for ep in epochs_a:  # each epoch is a permutation of every row
        assert sorted(i for b in ep for i in b) == list(range(103))
        assert [len(x) for x in ep] == [10] * 10 + [3]
    assert epochs_a[0] != epochs_a[1]
    other = Loader(rows_dir, 10, seed=seed + 1)
    assert ids(list(other)) != epochs_a[0]
    # set_epoch picks an epoch's order directly
    c = Loader(rows_dir, 10, seed=seed)
    c.set_epoch(2)
    assert ids(list(c)) == epochs_a[2]


def test_shuffle_false_is_storage_order_and_values_match(rows_dir: Path) -> None:
    ds = ShardSet(rows_dir)
    loader = Loader(rows_dir, 16, shuffle=False, drop_last=True)
    got = list(loader)
    assert len(loader) == len(got) == 6
    assert [i for b in ids(got) for i in b] == list(range(96))
    x = torch.cat([b["x"] for b in got])
    np.testing.assert_array_equal(x.numpy(), ds.gather(np.arange(96))["x"])
    assert got[0]["x"].dtype == torch.float32 and got[0]["idx"].dtype == torch.int64


def test_fields_selects_columns(rows_dir: Path) -> None:
    batch = next(iter(Loader(rows_dir, 4, fields=["x"])))
    assert list(batch.keys()) == ["x"]  # iterating a Batch yields its tensors (unpacking)


# -- resume -----------------------------------------------------------------------
def passes(loader: Any, n: int) -> Iterator[Any]:
    """``n`` batches over as many passes as it takes, as a training script's epoch loop
    takes them: a pass restored at the very end of its epoch is empty (once), as in
    StatefulDataLoader."""
    got = empty = 0
    while got < n:
        progressed = False
        for batch in loader:
            progressed = True
            yield batch
            got += 1
            if got == n:
                return
        empty = 0 if progressed else empty + 1
        if empty > 1:
            raise AssertionError("the loader produced two empty passes in a row")


def _loader_batches(loader: Any, n: int) -> list[list[int]]:
    return [b["idx"].tolist() for b in passes(loader, n)]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_resume_start_middle_end_and_across_epochs(
    rows_dir: Path, workers: int, drop_last: bool
) -> None:
    per_epoch = len(Loader(rows_dir, 8, drop_last=drop_last))
    check_resume(
        lambda: Loader(rows_dir, 8, seed=3, num_workers=workers, drop_last=drop_last),
        _loader_batches,
        stops=[0, 1, per_epoch // 2, per_epoch - 1, per_epoch, per_epoch + 3, 2 * per_epoch],
        total=3 * per_epoch,
        same=lambda a, b: a == b,
    )


def test_window_loader_resume(tokens: tuple[Path, np.ndarray]) -> None:
    d, _ = tokens
    per_epoch = len(Loader(d, 4, seq_len=16))

    def run(loader: Any, n: int) -> list[np.ndarray]:
        return [b["tokens"].numpy().copy() for b in passes(loader, n)]

    check_resume(
        lambda: Loader(d, 4, seq_len=16, seed=9),
        run,
        stops=[0, per_epoch // 2, per_epoch - 1, per_epoch, per_epoch + 2],
        total=2 * per_epoch + 1,
        same=lambda a, b: bool(np.array_equal(a, b)),
    )


def test_sampler_resume_with_the_shared_helper() -> None:
    def run(s: Any, n: int) -> list[list[int]]:
        out: list[list[int]] = []
        while len(out) < n:
            for batch in s.batches():
                out.append(batch.tolist())
                s.advance(len(batch))
                if len(out) == n:
                    break
        return out

    make = lambda: EpochSampler(50, 7, seed=5, rank=1, world_size=2)  # noqa: E731
    n = make().num_batches()
    check_resume(make, run, [0, 1, n // 2, n - 1, n, n + 1], 3 * n, lambda a, b: a == b)


def test_set_epoch_after_resume_keeps_position(rows_dir: Path) -> None:
    ref = Loader(rows_dir, 8, seed=1)
    ref.set_epoch(1)
    full = ids(list(ref))
    a = Loader(rows_dir, 8, seed=1)
    a.set_epoch(1)
    head = ids(list(take(a, 4)))
    b = Loader(rows_dir, 8, seed=1)
    b.load_state_dict(a.state_dict())
    b.set_epoch(1)  # a training script's epoch loop does this after restoring
    assert head + ids(list(b)) == full
    assert b.epoch == 2


def test_load_state_dict_refuses_other_orders(
    rows_dir: Path, tokens: tuple[Path, np.ndarray]
) -> None:
    state = Loader(rows_dir, 8, seed=1).state_dict()
    with pytest.raises(ConfigError, match="seed"):
        Loader(rows_dir, 8, seed=2).load_state_dict(state)
    with pytest.raises(ConfigError, match="shuffle"):
        Loader(rows_dir, 8, seed=1, shuffle=False).load_state_dict(state)
    with pytest.raises(ConfigError, match="kind"):
        Loader(tokens[0], 8, seed=1, seq_len=3).load_state_dict(
            {**state, "num_samples": len(Loader(tokens[0], 8, seq_len=3).sampler.order())}
        )
    missing = {k: v for k, v in state.items() if k != "position"}
    with pytest.raises(ConfigError, match="position"):
        Loader(rows_dir, 8, seed=1).load_state_dict(missing)
    with pytest.raises(ConfigError, match="not a datafuel loader state"):
        Loader(rows_dir, 8, seed=1).load_state_dict({"epoch": 0})
    with pytest.raises(ConfigError, match="position"):
        Loader(rows_dir, 8, seed=1).load_state_dict({**state, "position": 10_000})


# -- DDP ---------------------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_with_equal_batch_counts(
    rows_dir: Path, world: int, drop_last: bool
) -> None:
    for epoch in (0, 1):
        per_rank = []
        for r in range(world):
            loader = Loader(rows_dir, 6, seed=4, rank=r, world_size=world, drop_last=drop_last)
            loader.set_epoch(epoch)
            got = ids(list(loader))
            assert len(got) == len(loader)
            per_rank.append(got)
        counts = {len(g) for g in per_rank}
        assert len(counts) == 1, f"batch counts differ across ranks: {counts}"
        sizes = {tuple(len(b) for b in g) for g in per_rank}
        assert len(sizes) == 1, "ranks got batches of different sizes"
        flat = [i for g in per_rank for b in g for i in b]
        assert len(flat) == len(set(flat)), "a sample was given to two ranks"
        expected = (103 // (6 * world)) * 6 * world if drop_last else (103 // world) * world
        assert len(flat) == expected


def test_rank_and_world_from_environment(rows_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    loader = Loader(rows_dir, 5)
    assert (loader.rank, loader.world_size) == (1, 3)
    explicit = Loader(rows_dir, 5, rank=1, world_size=3)
    assert ids(list(loader)) == ids(list(explicit))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        Loader(rows_dir, 5)
    with pytest.raises(ConfigError, match="rank"):
        Loader(rows_dir, 5, rank=3, world_size=3)
    with pytest.raises(ConfigError, match="both"):
        Loader(rows_dir, 5, rank=0)


@pytest.mark.parametrize(("w1", "w2"), [(2, 3), (3, 1), (4, 2)])
def test_resume_under_another_world_size_continues_the_global_order(
    rows_dir: Path, w1: int, w2: int
) -> None:
    seen: list[int] = []
    states = []
    for r in range(w1):
        loader = Loader(rows_dir, 5, seed=8, rank=r, world_size=w1)
        seen += [i for b in take(loader, 3) for i in b["idx"].tolist()]
        states.append(loader.state_dict())
    assert all(s == states[0] for s in states), "ranks disagree on the state"
    for r in range(w2):
        loader = Loader(rows_dir, 5, seed=8, rank=r, world_size=w2)
        loader.load_state_dict(states[0])
        seen += [i for b in loader for i in b["idx"].tolist()]
    assert len(seen) == len(set(seen)), "a sample was repeated after changing world size"
    order = Loader(rows_dir, 5, seed=8).sampler.order(0).tolist()
    consumed = 3 * 5 * w1
    tail = len(order) - consumed
    expected = order[:consumed] + order[consumed : consumed + (tail // w2) * w2]
    assert sorted(seen) == sorted(expected)


# -- token windows -------------------------------------------------------------------
def test_token_windows_content_shape_and_coverage(tokens: tuple[Path, np.ndarray]) -> None:
    d, stream = tokens
    T = 16
    loader = Loader(d, 8, seq_len=T, seed=2)
    n = (len(stream) - 1) // T
    assert len(loader) == -(-n // 8)
    offsets = []
    for _ in range(3):
        firsts = []
        for batch in loader:
            t = batch["tokens"]
            assert t.dtype == torch.int64 and t.shape[1] == T + 1
            for row in t.numpy():
                s = int(
                    np.flatnonzero(
                        np.all(
                            np.lib.stride_tricks.sliding_window_view(stream, T + 1)
                            == row.astype(np.uint16),
                            axis=1,
                        )
                    )[0]
                )
                firsts.append(s)
        firsts.sort()
        assert len(firsts) == n
        assert np.all(np.diff(firsts) == T), "windows of an epoch are not consecutive, stride T"
        offsets.append(firsts[0])
    assert len(set(offsets)) > 1 or (len(stream) - 1) % T == 0
    ordered = list(Loader(d, 8, seq_len=T, shuffle=False))
    np.testing.assert_array_equal(
        ordered[0]["tokens"][1].numpy(), stream[T : 2 * T + 1].astype(np.int64)
    )


def test_window_indices_reach_the_transform(tokens: tuple[Path, np.ndarray]) -> None:
    d, stream = tokens
    seen: list[BatchInfo] = []

    class Shift:
        output_spec: ClassVar[dict[str, Any]] = {
            "inputs": ("int32", (8,)),
            "targets": ("int32", (8,)),
        }

        def __call__(self, batch: dict[str, Any], info: BatchInfo) -> dict[str, Any]:
            seen.append(info)
            w = batch["tokens"].astype(np.int32)
            return {"inputs": w[:, :-1], "targets": w[:, 1:]}

    loader = Loader(d, 4, seq_len=8, transform=Shift(), num_workers=1, seed=1)
    batches = list(loader)
    assert list(batches[0].keys()) == ["inputs", "targets"]
    for b, info in zip(batches, sorted(seen, key=lambda i: i.batch_index), strict=True):
        for row, s in zip(b["inputs"].numpy(), info.indices, strict=True):
            np.testing.assert_array_equal(row, stream[s : s + 8])


def test_too_short_stream_and_bad_seq_len(tmp_path: Path) -> None:
    d, _ = write_tokens(tmp_path / "t", n_docs=2)
    with pytest.raises(ConfigError, match="seq_len"):
        Loader(d, 4, seq_len=0)
    loader = Loader(d, 4, seq_len=10_000)
    assert len(loader) == 0 and list(loader) == []
    with pytest.raises(ConfigError, match="fields"):
        Loader(d, 4, seq_len=8, fields=["tokens"])


# -- errors -----------------------------------------------------------------------
class Boom:
    output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ())}

    def __call__(self, batch: dict[str, Any], info: BatchInfo) -> dict[str, Any]:
        if 42 in info.indices.tolist():
            raise ValueError("sample 42 is cursed")
        return {"idx": batch["idx"]}


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_error_names_indices_and_chains(rows_dir: Path, workers: int) -> None:
    loader = Loader(rows_dir, 10, transform=Boom(), num_workers=workers, shuffle=False)
    got = []
    with pytest.raises(WorkerError, match="sample 42 is cursed") as info:
        for batch in loader:
            got.append(batch["idx"].tolist())
    assert got == [list(range(i, i + 10)) for i in (0, 10, 20, 30)]  # batches before it arrive
    assert info.value.indices == list(range(40, 50))
    assert isinstance(info.value.__cause__, ValueError)
    assert "batch 4" in str(info.value)
    assert loader_threads() == []


def test_transform_contract_is_checked(rows_dir: Path) -> None:
    class NoSpec:
        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            return batch

    with pytest.raises(ConfigError, match="output_spec"):
        Loader(rows_dir, 4, transform=NoSpec())  # type: ignore[arg-type]

    class Liar:
        output_spec: ClassVar[dict[str, Any]] = {"x": ("float64", (3,))}

        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            return {"x": batch["x"]}

    with pytest.raises(WorkerError, match="output_spec declares") as info:
        next(iter(Loader(rows_dir, 4, transform=Liar())))
    assert isinstance(info.value.__cause__, SchemaError)

    class Extra:
        output_spec: ClassVar[dict[str, Any]] = {"x": ("float32", (3,))}

        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            return {"x": torch.from_numpy(batch["x"]), "y": batch["idx"]}

    with pytest.raises(WorkerError, match="undeclared"):
        next(iter(Loader(rows_dir, 4, transform=Extra())))


def test_device_tensors_from_a_transform_are_checked_where_they_are(rows_dir: Path) -> None:
    """A transform may hand back tensors on a device (DALI's nvJPEG output): dtype and
    shape are checked without copying them to the host. (The meta device stands in for
    a GPU here; the CUDA run is below.)"""

    class OnDevice:
        output_spec: ClassVar[dict[str, Any]] = {"x": ("float32", (3,)), "idx": ("int64", ())}

        def __init__(self, dtype: torch.dtype) -> None:
            self.dtype = dtype

        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            x = torch.empty((len(batch["idx"]), 3), dtype=self.dtype, device="meta")
            return {"x": x, "idx": batch["idx"]}

    with pytest.raises(
        WorkerError, match=r"'x' is float64 \(4, 3\); output_spec declares float32"
    ) as info:
        next(iter(Loader(rows_dir, 4, transform=OnDevice(torch.float64))))
    assert isinstance(info.value.__cause__, SchemaError)
    ok = Loader(rows_dir, 4, transform=OnDevice(torch.float32))
    with pytest.raises(WorkerError, match="meta"):  # a CPU loader moves it to the host: not meta
        next(iter(ok))


def test_bytes_fields_need_a_transform(tmp_path: Path) -> None:
    d = tmp_path / "b"
    write_shards(
        d,
        fields={"jpeg": bytes_field(), "label": fixed("int64")},
        jpeg=[b"abc", b"de", b"f", b"gh"],
        label=np.arange(4),
    )
    with pytest.raises(ConfigError, match="jpeg"):
        Loader(d, 2)
    assert [b["label"].tolist() for b in Loader(d, 2, fields=["label"], shuffle=False)] == [
        [0, 1],
        [2, 3],
    ]

    class Lengths:
        output_spec: ClassVar[dict[str, Any]] = {"n": ("int64", ()), "label": ("int64", ())}

        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            return {"n": np.array([len(j) for j in batch["jpeg"]]), "label": batch["label"]}

    got = list(Loader(d, 2, transform=Lengths(), shuffle=False))
    assert [b["n"].tolist() for b in got] == [[3, 2], [1, 2]]


def test_bad_arguments(rows_dir: Path) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        Loader(rows_dir, 0)
    with pytest.raises(ConfigError, match="num_workers"):
        Loader(rows_dir, 4, num_workers=-1)
    with pytest.raises(ConfigError, match="prefetch"):
        Loader(rows_dir, 4, prefetch=0)
    with pytest.raises(SchemaError, match="nope"):
        Loader(rows_dir, 4, fields=["nope"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cpu_only_build_refuses_cuda_and_never_pins(
    rows_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="CUDA"):
        Loader(rows_dir, 4, device="cuda")
    with pytest.raises(ConfigError, match="pin_memory"):
        Loader(rows_dir, 4, pin_memory=True)

    def no_pin(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pin_memory called on the CPU path")

    monkeypatch.setattr(torch.Tensor, "pin_memory", no_pin)
    assert len(list(Loader(rows_dir, 4, device="cpu"))) == 26


# -- threads ------------------------------------------------------------------------
def test_no_thread_left_after_break_exception_or_del(rows_dir: Path) -> None:
    loader = Loader(rows_dir, 4, num_workers=3, prefetch=2)
    for _ in loader:
        assert len(loader_threads()) == 3
        break
    assert loader_threads() == []
    with pytest.raises(RuntimeError, match="in the loop body"):
        for _ in loader:
            raise RuntimeError("error in the loop body")
    gc.collect()
    assert loader_threads() == []
    it = iter(loader)
    next(it)
    assert loader_threads()
    del it
    assert loader_threads() == []
    next(iter(loader))
    del loader
    gc.collect()
    assert loader_threads() == []
    # a finished epoch stops its threads before StopIteration
    other = Loader(rows_dir, 50)
    it2 = iter(other)
    for _ in range(len(other)):
        next(it2)
    assert loader_threads() == []


def test_break_then_iterate_starts_the_epoch_over_and_resume_continues(rows_dir: Path) -> None:
    # Changed with issue 20: a new iter() after a break used to continue the epoch; it now
    # starts a pass from the epoch's start (StatefulDataLoader); resume() continues.
    full = ids(list(Loader(rows_dir, 8, seed=6)))
    loader = Loader(rows_dir, 8, seed=6)
    head = ids(list(take(loader, 5)))
    assert head == full[:5]
    assert ids(list(loader)) == full  # a pass from the start of epoch 0
    assert loader.epoch == 1
    again = Loader(rows_dir, 8, seed=6)
    head = ids(list(take(again, 5)))
    again.resume()
    assert head + ids(list(again)) == full


# -- finite check -------------------------------------------------------------------
def test_finite_check_names_the_samples(tmp_path: Path) -> None:
    x = np.zeros((40, 2), np.float32)
    x[17, 1] = np.nan
    x[23, 0] = np.inf
    # a shard set written with the writer's own finite check off (e.g. by an older tool)
    with ShardWriter(
        tmp_path / "nan", {"x": fixed("float32", (2,)), "idx": fixed("int64")}, check_finite=False
    ) as w:
        w.write({"x": x, "idx": np.arange(40)})
    loader = Loader(tmp_path / "nan", 40, shuffle=True, seed=0)
    with pytest.raises(NonFiniteError) as info:
        next(iter(loader))
    assert sorted(info.value.indices) == [17, 23]
    assert info.value.field == "x" and "17" in str(info.value)
    assert loader_threads() == []
    ok = list(Loader(tmp_path / "nan", 40, check_finite=False))
    assert torch.isnan(ok[0]["x"]).sum() == 1


# -- stats ---------------------------------------------------------------------------
class Slow:
    output_spec: ClassVar[dict[str, Any]] = {"idx": ("int64", ())}

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, batch: dict[str, Any], info: BatchInfo) -> dict[str, Any]:
        time.sleep(self.seconds)
        return {"idx": batch["idx"]}


def test_stats_arithmetic_against_known_sleeps(rows_dir: Path) -> None:
    # data takes 40 ms a batch on one worker, the step 10 ms: the loop waits ~30 of ~40 ms
    starved = Loader(rows_dir, 10, transform=Slow(0.04), num_workers=1, prefetch=1)
    t0 = time.perf_counter()
    for _ in starved:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    rep = starved.stats()
    assert rep.batches == 11 and rep.samples == 103 and rep.bytes == 103 * 8
    assert 0.45 < rep.starvation < 0.95
    assert rep.wall_s <= elapsed + 1e-3 and rep.wall_s > 0.8 * elapsed - 0.02
    assert rep.wait_s == pytest.approx(rep.starvation * rep.wall_s)
    assert rep.samples_per_s == pytest.approx(103 / rep.wall_s)
    assert rep.bytes_per_s == pytest.approx(103 * 8 / rep.wall_s)
    assert 15 < rep.wait_p50_ms < 80 and rep.wait_p50_ms <= rep.wait_p95_ms <= rep.wait_max_ms
    # data ready in time: a 20 ms step with fast data barely waits
    fed = Loader(rows_dir, 10, num_workers=2)
    for _ in take(fed, 20):
        time.sleep(0.02)
    rep2 = fed.stats()
    assert rep2.batches == 20 and rep2.starvation < 0.25
    assert rep2.wall_s > 20 * 0.02 * 0.9
    json.dumps(rep2.to_dict())
    fed.reset_stats()
    assert fed.stats().batches == 0
    with pytest.raises(ConfigError, match="meter"):
        Loader(rows_dir, 10, meter=False).stats()


# -- training ------------------------------------------------------------------------
def test_tiny_regression_trains_through_the_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.normal(size=8).astype(np.float32)
    x = rng.normal(size=(2048, 8)).astype(np.float32)
    y = (x @ w).astype(np.float32)
    write_shards(tmp_path / "reg", x=x, y=y, shard_bytes=16 << 10)
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = Loader(tmp_path / "reg", 64, seed=0)
    losses = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        for batch in loader:
            loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]
    assert loader.stats().batches == 3 * 32


def test_tiny_language_model_trains_on_token_windows(tmp_path: Path) -> None:
    # a deterministic "language": token t is followed by (3 t + 1) mod 50
    seq = [0]
    for _ in range(6000):
        seq.append((3 * seq[-1] + 1) % 50)
    docs = [np.array(seq[i : i + 300], np.uint16) for i in range(0, 6000, 300)]
    from datafuel.loaders import ragged

    write_shards(
        tmp_path / "lm", fields={"tokens": ragged("uint16")}, tokens=docs, shard_bytes=4096
    )
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(50, 32), torch.nn.Linear(32, 50))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    loader = Loader(tmp_path / "lm", 16, seq_len=32)
    losses = []
    for batch in take(loader, 40):
        t = batch["tokens"]
        logits = model(t[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), t[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 3.0 and losses[-1] < 0.5


# -- CUDA (runs where a GPU is present; the CPU-only checks are above) -------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_path_matches_cpu_and_reuses_pinned_buffers(
    rows_dir: Path, tokens: tuple[Path, np.ndarray]
) -> None:
    cpu = [b["idx"].tolist() for b in Loader(rows_dir, 8, seed=2)]
    gpu_loader = Loader(rows_dir, 8, seed=2, device="cuda", prefetch=2)
    assert gpu_loader.pin_memory
    got = []
    for b in gpu_loader:
        assert b["x"].is_cuda and b["idx"].is_cuda
        got.append(b["idx"].cpu().tolist())
    assert got == cpu
    ring = gpu_loader._ring
    assert ring is not None and all(t.is_pinned() for slot in ring.slots for t in slot.values())
    list(gpu_loader)
    assert gpu_loader._ring is ring  # reused across epochs
    d, _ = tokens
    ref = [b["tokens"] for b in Loader(d, 4, seq_len=16, seed=1)]
    dev = [b["tokens"] for b in Loader(d, 4, seq_len=16, seed=1, device="cuda")]
    for a, b in zip(ref, dev, strict=True):
        assert b.dtype == torch.int64 and b.is_cuda
        assert torch.equal(a, b.cpu())
    assert loader_threads() == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors_from_a_transform_stay_on_the_gpu(rows_dir: Path) -> None:
    class OnGPU:
        output_spec: ClassVar[dict[str, Any]] = {"x": ("float32", (3,)), "idx": ("int64", ())}

        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            x = torch.from_numpy(batch["x"]).to("cuda") * 2
            return {"x": x, "idx": batch["idx"]}  # one on the GPU, one on the host

    ref = {
        int(i): x
        for b in Loader(rows_dir, 4, seed=3)
        for i, x in zip(b["idx"], b["x"], strict=True)
    }
    seen = 0
    for b in Loader(rows_dir, 4, seed=3, device="cuda", transform=OnGPU()):
        assert b["x"].is_cuda and b["idx"].is_cuda
        for i, x in zip(b["idx"].cpu().tolist(), b["x"].cpu(), strict=True):
            assert torch.equal(x, ref[i] * 2)
            seen += 1
    assert seen == len(ref)
    cpu_side = next(iter(Loader(rows_dir, 4, seed=3, transform=OnGPU())))
    assert not cpu_side["x"].is_cuda  # a CPU loader brings the device tensor to the host

    class Bad(OnGPU):
        def __call__(self, batch: Any, info: BatchInfo) -> Any:
            out = super().__call__(batch, info)
            out["x"][1, 0] = float("nan")
            return out

    with pytest.raises(NonFiniteError) as info:  # checked on the GPU, rows named
        next(iter(Loader(rows_dir, 4, seed=3, device="cuda", transform=Bad())))
    assert info.value.field == "x" and len(info.value.indices) == 1


# -- the DataLoader surface (issue 20) --------------------------------------------------
def test_batches_unpack_in_field_order_and_stay_dicts(rows_dir: Path) -> None:
    from torch.utils import _pytree as pytree

    loader = Loader(rows_dir, 4, shuffle=False, fields=("x", "idx"))
    for x, idx in loader:  # the DataLoader-over-TensorDataset idiom: tensors, never keys
        assert isinstance(x, torch.Tensor) and x.shape == (4, 3)
        assert idx.tolist() == [0, 1, 2, 3]
        break
    batch = next(iter(loader))
    assert isinstance(batch, dict) and batch["x"] is next(iter(batch))
    assert list(batch.keys()) == ["x", "idx"] and [k for k, _ in batch.items()] == ["x", "idx"]
    assert dict(**batch).keys() == {"x", "idx"} and {**batch}.keys() == batch.keys()
    assert "x" in batch and len(batch) == 2 and dict(batch)["idx"] is batch["idx"]
    flipped = next(iter(Loader(rows_dir, 4, shuffle=False, fields=("idx", "x"))))
    first, _ = flipped
    assert first.dtype == torch.int64  # fields= sets the unpacking order
    with pytest.raises(KeyError, match=r"batch.keys\(\)"):
        for k in batch:  # a plain-dict loop: the tensor key says what happened
            batch[k]
    # torch's and Lightning-style collection helpers keep the type and the keys
    moved = pytree.tree_map(lambda t: t + 0, batch)
    assert type(moved) is Batch and list(moved.keys()) == ["x", "idx"]
    # torch's default_convert/default_collate loop `for key in data`: hand them a plain dict
    conv = torch.utils.data.default_convert(dict(batch))
    assert torch.equal(conv["x"], batch["x"])
    assert torch.equal(torch.utils.data.default_collate([dict(batch)])["idx"][0], batch["idx"])
    rebuilt = type(batch)({k: v for k, v in batch.items()})
    a, b = rebuilt
    assert torch.equal(a, batch["x"]) and torch.equal(b, batch["idx"])


def test_dataloader_attributes(rows_dir: Path) -> None:
    loader = Loader(rows_dir, 10, seed=2, drop_last=True, num_workers=1, persistent_workers=True)
    assert (loader.batch_size, loader.drop_last, loader.num_workers) == (10, True, 1)
    assert loader.collate_fn is None and loader.persistent_workers and loader.pin_memory is False
    assert len(loader.dataset) == 103 and int(loader.dataset[5]["idx"]) == 5
    assert loader.batch_sampler.sampler is loader.sampler
    assert (loader.batch_sampler.batch_size, loader.batch_sampler.drop_last) == (10, True)
    planned = list(loader.batch_sampler)
    assert len(planned) == len(loader.batch_sampler) == len(loader) == 10
    assert len(loader.sampler) == 100 and list(loader.sampler) == [i for b in planned for i in b]
    assert planned == ids(list(loader))  # the batch sampler names the batches a pass yields
    loader.sampler.set_epoch(3)  # what Lightning calls
    assert loader.epoch == 3 and list(loader.batch_sampler) == ids(list(loader))
    with pytest.raises(ConfigError, match="collate_fn"):
        Loader(rows_dir, 4, collate_fn=lambda b: b)
