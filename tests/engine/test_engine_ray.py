"""The Ray engine writes what the local engine writes; failures surface as the local ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_helpers import (
    FIELDS,
    CrashOnce,
    bad_unit,
    nan_unit,
    payloads,
    same_tree,
    square_plus,
    unit_rows,
)

from datafuel.engine import LocalEngine, RayEngine
from datafuel.errors import InputDataError, NonFiniteError
from datafuel.loaders import ShardSet

PROV = {"source": "test"}
SIZES = [13, 0, 40, 7, 25, 3, 31, 18]


def both(
    tmp_path: Path,
    fn: Any,
    shard_bytes: int,
    *,
    engine: RayEngine | None = None,
    shared: Any = None,
) -> tuple[Path, Path]:
    """Write SIZES' units with ``fn`` on Ray and with unit_rows locally."""
    local, ray_out = tmp_path / "local", tmp_path / "ray"
    LocalEngine().write_units(
        local,
        FIELDS,
        unit_rows,
        payloads(SIZES),
        shared=shared,
        shard_bytes=shard_bytes,
        provenance=PROV,
    )
    (engine or RayEngine()).write_units(
        ray_out,
        FIELDS,
        fn,
        payloads(SIZES),
        shared=shared,
        shard_bytes=shard_bytes,
        provenance=PROV,
    )
    return local, ray_out


@pytest.mark.parametrize(("shard_bytes", "window"), [(1, 1), (1500, 2), (1 << 30, None)])
def test_ray_units_give_local_bytes(
    ray_session: Any, tmp_path: Path, shard_bytes: int, window: int | None
) -> None:
    local, ray_out = both(
        tmp_path, unit_rows, shard_bytes, engine=RayEngine(max_in_flight=window), shared=5
    )
    assert same_tree(local, ray_out) == []
    assert len(ShardSet(ray_out, verify=True)) == sum(SIZES)


def test_map_keeps_order(ray_session: Any) -> None:
    items = list(range(23))
    got = list(RayEngine(max_in_flight=2).map(square_plus, items, shared=10, chunk=4))
    assert got == [x * x + 10 for x in items]


def test_bad_record_raises_the_local_error(ray_session: Any, tmp_path: Path) -> None:
    with pytest.raises(InputDataError) as local:
        LocalEngine().write_units(
            tmp_path / "l", FIELDS, bad_unit, payloads(SIZES), shared=4, shard_bytes=500
        )
    with pytest.raises(InputDataError) as remote:
        RayEngine().write_units(
            tmp_path / "r", FIELDS, bad_unit, payloads(SIZES), shared=4, shard_bytes=500
        )
    assert type(remote.value) is type(local.value)
    assert str(remote.value) == str(local.value)
    assert (remote.value.path, remote.value.row) == (local.value.path, local.value.row)
    assert not (tmp_path / "r" / "manifest.json").exists()


def test_nan_in_a_worker_names_the_same_row(ray_session: Any, tmp_path: Path) -> None:
    errors = []
    for engine in (LocalEngine(), RayEngine()):
        with pytest.raises(NonFiniteError) as err:
            engine.write_units(
                tmp_path / engine.name, FIELDS, nan_unit, payloads(SIZES), shared=6, shard_bytes=800
            )
        errors.append(err.value)
    assert errors[0].row == errors[1].row == 13 + 0 + 6
    assert errors[0].field == errors[1].field == "x"
    assert not (tmp_path / "ray" / "manifest.json").exists()


def test_killed_worker_is_retried_without_duplicates(ray_session: Any, tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    crash = CrashOnce(str(marker), unit=4)
    local, ray_out = both(tmp_path, crash, 1200, engine=RayEngine(max_retries=2))
    assert marker.exists()  # the first attempt's worker really died
    assert same_tree(local, ray_out) == []
    assert len(ShardSet(ray_out, verify=True)) == sum(SIZES)


def test_no_units_gives_the_empty_local_shard_set(ray_session: Any, tmp_path: Path) -> None:
    for engine in (LocalEngine(), RayEngine()):
        m = engine.write_units(tmp_path / engine.name, FIELDS, unit_rows, [], shard_bytes=100)
        assert m["total_rows"] == 0 and m["shards"] == []
    assert same_tree(tmp_path / "local", tmp_path / "ray") == []
    assert list(RayEngine().map(square_plus, [], shared=1)) == []
