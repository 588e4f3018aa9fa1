"""Per-stage spans: attribution of the loop's wait, the Perfetto trace, metrics and TensorBoard."""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from datafuel.errors import ConfigError, DatafuelError, OutputError
from datafuel.loaders import Loader, ShardSet, _spans, write_shards
from datafuel.loaders._spans import STAGES, SpanRecorder, advice, attribute

SLOW_S = 0.004  # the slowed stage's time per batch


@pytest.fixture(autouse=True, params=["native", "python"])
def rings(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on the C rings (_spanring) and on the Python fallback."""
    if request.param == "python":
        monkeypatch.setattr(_spans, "_spanring", None)
    elif _spans._spanring is None:
        pytest.skip("the _spanring extension did not build here")
    return str(request.param)


@pytest.fixture()
def rows(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_shards(tmp_path / "rows", x=rng.normal(size=(1024, 8)).astype(np.float32))
    return tmp_path / "rows"


class SleepyTransform:
    """Passes ``x`` through after sleeping ``SLOW_S`` per batch."""

    output_spec: ClassVar[dict[str, Any]] = {"x": (np.float32, (8,))}

    def __call__(self, raw: dict[str, Any], info: Any) -> dict[str, Any]:
        time.sleep(SLOW_S)
        return {"x": np.asarray(raw["x"])}


def drain(loader: Loader, step_s: float = 0.0) -> None:
    for batch in loader:
        if step_s:
            time.sleep(step_s)
        del batch


def test_slow_transform_is_the_bottleneck(rows: Path) -> None:
    # one worker: the loop waits the whole 4 ms for each batch; the handing over of a
    # batch (the loop's wake-up, and its turn for the GIL while the worker starts the
    # next batch) is the rest, ~0.1 ms a batch
    loader = Loader(rows, 32, transform=SleepyTransform(), num_workers=1)
    drain(loader)
    r = loader.stats()
    assert r.stages is not None and r.bottleneck == "transform"
    assert r.stages["transform"]["wait_share"] >= 0.9, r.stages
    assert r.stages["transform"]["ms_per_batch"] >= 1e3 * SLOW_S
    assert r.stages["transform"]["worker_share"] >= 0.9
    assert r.advice is not None and r.advice.startswith("transform is ")
    assert "cores are busy" in r.advice and "bottleneck transform" in str(r)
    assert r.span_batches == len(loader) == r.batches


def test_slow_gather_is_the_bottleneck(rows: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gather = ShardSet.gather

    def slow(self: ShardSet, *args: Any, **kwargs: Any) -> Any:
        time.sleep(SLOW_S)
        return gather(self, *args, **kwargs)

    monkeypatch.setattr(ShardSet, "gather", slow)
    loader = Loader(rows, 32, num_workers=1)
    drain(loader)
    r = loader.stats()
    assert r.stages is not None and r.bottleneck == "gather", r.stages
    assert r.stages["gather"]["wait_share"] >= 0.9
    assert r.stages["transform"]["ms_per_batch"] == 0.0  # no transform: a zero-length stage
    assert r.advice is not None and r.advice.startswith("gather is ")


@pytest.mark.parametrize("slow", ["transform", "gather"])
def test_two_workers_name_the_slow_stage(
    rows: Path, monkeypatch: pytest.MonkeyPatch, slow: str
) -> None:
    # two workers: the loop waits ~2 ms a batch, so the handoff weighs twice as much
    transform = SleepyTransform() if slow == "transform" else None
    if slow == "gather":
        gather = ShardSet.gather

        def slowed(self: ShardSet, *args: Any, **kwargs: Any) -> Any:
            time.sleep(SLOW_S)
            return gather(self, *args, **kwargs)

        monkeypatch.setattr(ShardSet, "gather", slowed)
    loader = Loader(rows, 32, transform=transform, num_workers=2)
    drain(loader)
    r = loader.stats()
    assert r.stages is not None and r.bottleneck == slow, r.stages
    assert r.stages[slow]["wait_share"] >= 0.7
    assert r.stages[slow]["worker_share"] >= 0.9


def test_long_step_means_input_is_not_the_bottleneck(rows: Path) -> None:
    loader = Loader(rows, 64, num_workers=2)
    drain(loader, step_s=0.02)
    r = loader.stats()
    assert r.bottleneck == "none" and r.starvation < 0.05
    assert r.advice is not None and r.advice.endswith("input is not the bottleneck")
    assert r.advice.startswith("the loop waits ")


def test_spans_in_the_loops_thread_with_no_workers(rows: Path) -> None:
    loader = Loader(rows, 32, transform=SleepyTransform(), num_workers=0)
    drain(loader)
    r = loader.stats()
    assert r.bottleneck == "transform" and r.stages is not None
    assert r.stages["transform"]["wait_share"] >= 0.9


def test_spans_off(rows: Path) -> None:
    loader = Loader(rows, 64, spans=False)
    drain(loader)
    r = loader.stats()
    assert r.stages is None and r.bottleneck is None
    assert "stages" not in r.to_dict() and "bottleneck" not in r.to_dict()
    with pytest.raises(ConfigError, match="spans=False"):
        loader.trace()
    assert "loader/bottleneck" not in loader.metrics()
    with pytest.raises(ConfigError, match="spans must be True or False"):
        Loader(rows, 64, spans="yes")  # type: ignore[arg-type]


def test_report_dict_is_json_and_reset_clears_spans(rows: Path) -> None:
    loader = Loader(rows, 64)
    drain(loader)
    d = json.loads(json.dumps(loader.stats().to_dict()))
    assert set(d["stages"]) == {*STAGES, "handoff"}
    assert d["cores"] >= 1 and d["busy_cores"] >= 0 and d["bottleneck"]
    loader.reset_stats()
    assert loader.stats().span_batches == 0


def test_advice_uses_the_machine() -> None:
    stages = {s: {"ms_per_batch": 1.0, "worker_share": 0.0, "wait_share": 0.0} for s in STAGES}
    stages["handoff"] = {"ms_per_batch": 0.0, "worker_share": 0.0, "wait_share": 0.0}
    stages["transform"]["worker_share"] = 0.86
    line = advice("transform", stages, 0.4, workers=4, cores=16, busy=4.2)
    assert line == (
        "transform is 86% of worker time and 4 of 16 cores are busy: pass processes=12 "
        "to the transform (--processes 12) or decode with DALI"
    )
    assert "saturated" in advice("transform", stages, 0.4, workers=2, cores=2, busy=2.0)
    assert advice("none", stages, 0.001, workers=2, cores=2, busy=1.0) == (
        "the loop waits 0.1%: input is not the bottleneck"
    )


def test_attribute_of_nothing() -> None:
    out = attribute(SpanRecorder(), starvation=0.0, workers=2, cores=4)
    assert out["bottleneck"] == "none" and out["span_batches"] == 0 and out["cores"] == 4


# -- the trace ------------------------------------------------------------------------
EPS_US = 1e-3  # microseconds: float rounding of ns / 1e3


def _check_trace(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Fail unless ``trace`` is a well-formed Chrome trace whose slices nest and stages order."""
    events = trace["traceEvents"]
    for e in events:
        _check_event(e)
    _check_flows([e for e in events if e["ph"] in ("s", "f")])
    slices = [e for e in events if e["ph"] == "X"]
    per_tid: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in slices:
        per_tid[e["tid"]].append(e)
    for evs in per_tid.values():
        _check_nesting(evs)
    stage_events: dict[tuple[int, int, int], list[dict[str, Any]]] = defaultdict(list)
    for e in slices:
        if e["name"] in STAGES:
            stage_events[(e["tid"], e["args"]["pass"], e["args"]["batch"])].append(e)
    for evs in stage_events.values():
        _check_stage_order(evs)
    return events  # type: ignore[no-any-return]


def _check_event(e: dict[str, Any]) -> None:
    assert {"ph", "pid", "tid"} <= set(e), e
    if e["ph"] == "X":
        assert {"name", "ts", "dur"} <= set(e) and e["dur"] >= 0, e
    elif e["ph"] in ("s", "f"):
        assert {"name", "ts", "id", "cat"} <= set(e), e
    else:
        assert e["ph"] == "M" and e["name"] in ("process_name", "thread_name"), e


def _check_flows(flows: list[dict[str, Any]]) -> None:
    """One start and one finish per id, the finish bound to its enclosing slice."""
    by_id: dict[int, list[str]] = defaultdict(list)
    for f in flows:
        by_id[f["id"]].append(f["ph"])
        if f["ph"] == "f":
            assert f["bp"] == "e"
    assert all(sorted(v) == ["f", "s"] for v in by_id.values())


def _check_nesting(evs: list[dict[str, Any]]) -> None:
    """One thread's slices: each inside the one open when it starts, or after it."""
    stack: list[float] = []  # ends of the open slices
    for e in sorted(evs, key=lambda e: (e["ts"], -e["dur"])):
        start, end = e["ts"], e["ts"] + e["dur"]
        while stack and start >= stack[-1] - EPS_US:
            stack.pop()
        if stack:
            assert end <= stack[-1] + EPS_US, (e, stack[-1])
        stack.append(end)


def _check_stage_order(evs: list[dict[str, Any]]) -> None:
    """One batch's stages: in ``STAGES`` order, each after the one before."""
    evs = sorted(evs, key=lambda e: e["ts"])
    names = [e["name"] for e in evs]
    assert names == sorted(names, key=STAGES.index)
    for a, b in itertools.pairwise(evs):
        assert a["ts"] + a["dur"] <= b["ts"] + EPS_US


def test_trace_file(rows: Path, tmp_path: Path) -> None:
    loader = Loader(rows, 32, transform=SleepyTransform(), num_workers=2)
    drain(loader)
    path = tmp_path / "trace.json"
    loader.trace(path)
    events = _check_trace(json.loads(path.read_text()))
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"datafuel-loader-0", "datafuel-loader-1"} <= names
    assert any(n.startswith("training loop (") for n in names)
    slices = [e for e in events if e["ph"] == "X"]
    assert sum(e["name"] == "wait" for e in slices) == len(loader)
    assert sum(e["name"].startswith("batch ") for e in slices) == len(loader)
    assert {"order", "gather", "transform", "finite", "collate"} <= {e["name"] for e in slices}
    assert sum(e["ph"] == "s" for e in events) == len(loader)  # one arrow per batch


def test_trace_argument_writes_at_each_pass_end(rows: Path, tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    loader = Loader(rows, 256, trace=path)
    assert not path.exists()
    drain(loader)
    first = _check_trace(json.loads(path.read_text()))
    assert sum(e["name"] == "wait" for e in first) == len(loader)
    for _ in loader:  # a break writes it too, now with the second pass's first batch
        break
    loader.close()
    second = _check_trace(json.loads(path.read_text()))
    assert sum(e["name"] == "wait" for e in second) == len(loader) + 1
    with pytest.raises(ConfigError, match="needs spans=True"):
        Loader(rows, 256, trace=path, spans=False)
    with pytest.raises(ConfigError, match="is a directory"):
        Loader(rows, 256, trace=tmp_path)
    with pytest.raises(ConfigError, match="file path or None"):
        Loader(rows, 256, trace=5)  # type: ignore[arg-type]


def test_trace_with_no_workers_nests_in_the_wait(rows: Path) -> None:
    loader = Loader(rows, 100, num_workers=0)
    drain(loader)
    _check_trace(loader.trace())


def test_trace_checker_can_fail() -> None:
    bad = {
        "traceEvents": [
            {"name": "a", "ph": "X", "ts": 0.0, "dur": 10.0, "pid": 1, "tid": 1},
            {"name": "b", "ph": "X", "ts": 5.0, "dur": 10.0, "pid": 1, "tid": 1},
        ]
    }
    with pytest.raises(AssertionError):
        _check_trace(bad)
    with pytest.raises(AssertionError):
        _check_trace({"traceEvents": [{"name": "a", "ph": "X", "ts": 0.0, "pid": 1, "tid": 1}]})


def test_trace_bad_paths(rows: Path, tmp_path: Path) -> None:
    loader = Loader(rows, 512)
    drain(loader)
    with pytest.raises(OutputError, match="is a directory"):
        loader.trace(tmp_path)
    with pytest.raises(OutputError, match="cannot write the trace"):
        loader.trace(tmp_path / "missing" / "trace.json")
    with pytest.raises(ConfigError):
        loader.trace(3)  # type: ignore[arg-type]
    assert issubclass(OutputError, DatafuelError)


def test_spans_in_a_torch_profiler(rows: Path) -> None:
    from torch.profiler import profile

    loader = Loader(rows, 32, num_workers=0)
    with profile() as prof:
        drain(loader)
    names = {e.name for e in prof.events()}
    assert "datafuel.wait" in names and "datafuel.gather" in names, sorted(names)[:20]


# -- metrics and TensorBoard ------------------------------------------------------------
def test_metrics_dict(rows: Path) -> None:
    loader = Loader(rows, 32, transform=SleepyTransform())
    drain(loader)
    m = loader.metrics()
    assert m["loader/bottleneck"] == "transform"
    assert m["loader/bottleneck_id"] == 1 + STAGES.index("transform")
    assert float(m["loader/stage_ms/transform"]) >= 1e3 * SLOW_S
    assert 0.5 < float(m["loader/starvation"]) <= 1 and float(m["loader/samples_per_s"]) > 0
    json.dumps(m)
    assert set(loader.metrics(prefix="")) == {k.removeprefix("loader/") for k in m}
    with pytest.raises(ConfigError, match="prefix"):
        loader.metrics(prefix=None)  # type: ignore[arg-type]


class FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, global_step: int) -> None:
        self.scalars.append((tag, value, global_step))


def test_log_to_any_writer(rows: Path) -> None:
    loader = Loader(rows, 64)
    drain(loader)
    w = FakeWriter()
    loader.log_to(w, 7)
    tags = {t for t, _, _ in w.scalars}
    assert {"loader/starvation", "loader/bottleneck_id", "loader/stage_ms/gather"} <= tags
    assert all(isinstance(v, float) and s == 7 for _, v, s in w.scalars)
    with pytest.raises(ConfigError, match="add_scalar"):
        loader.log_to(object(), 0)
    with pytest.raises(DatafuelError):
        loader.log_to(w, -1)


def test_log_to_tensorboard(rows: Path, tmp_path: Path) -> None:
    pytest.importorskip(
        "tensorboard",
        reason="tensorboard is an optional extra (datafuel[tensorboard]; scripts/setup.sh dev "
        "installs it and puts pillow-simd back after it)",
    )
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    loader = Loader(rows, 64)
    drain(loader)
    with SummaryWriter(str(tmp_path / "tb")) as w:
        m = loader.log_to(w, 3)
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loader/starvation", "loader/bottleneck_id", "loader/stage_ms/transform"} <= tags
    (ev,) = acc.Scalars("loader/starvation")
    assert ev.step == 3 and ev.value == pytest.approx(m["loader/starvation"], rel=1e-6)
