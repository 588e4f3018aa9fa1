"""Every file the builds write is byte-identical to the record taken before the build layer
was refactored (``golden_hashes.json``), on the local engine and on Ray.

The record was made with the library versions it names; output bytes depend on some of
them (libjpeg through Pillow for re-encodes, the tokenizers trainer, numpy/sklearn
floating point), so against other versions the record cannot be the reference and the
comparison to it is skipped with that reason. Local and Ray are always compared with
each other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import golden_builds as golden
import pytest

RECORD = json.loads((Path(__file__).parent / "golden_hashes.json").read_text())
SAME_VERSIONS = golden.versions() == RECORD["versions"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("golden")
    golden.prepare_inputs(root)
    return root


@pytest.fixture(scope="module")
def local_hashes(workdir: Path) -> dict[str, Any]:
    return golden.run_golden(workdir, "local")


@pytest.mark.skipif(
    not SAME_VERSIONS,
    reason=f"the record was made with {RECORD['versions']}, this is {golden.versions()}",
)
@pytest.mark.parametrize("name", sorted(RECORD["hashes"]))
def test_local_build_writes_the_recorded_bytes(local_hashes: dict[str, Any], name: str) -> None:
    want, got = RECORD["hashes"][name], local_hashes[name]
    assert sorted(got) == sorted(want), f"{name}: files differ"
    assert [f for f in want if got[f] != want[f]] == [], f"{name}: these files changed"


def test_ray_builds_write_the_local_bytes(
    ray_session: Any, workdir: Path, local_hashes: dict[str, Any]
) -> None:
    remote = golden.run_golden(workdir, "ray")
    for name, want in local_hashes.items():
        differ = sorted(
            f for f in set(want) | set(remote[name]) if want.get(f) != remote[name].get(f)
        )
        # the report names its own output folder (out-local/... vs out-ray/...)
        assert differ == (["resample_report.json"] if name == "resample" else []), name
    reports = [
        json.loads((workdir / f"out-{e}" / "resample" / "resample_report.json").read_text())
        for e in ("local", "ray")
    ]
    for r in reports:
        assert r.pop("out").endswith("resample")
        r.pop("seconds"), r.pop("tokens_per_second")
    assert reports[0] == reports[1]


def test_a_rebuild_into_the_same_folder_writes_the_same_bytes(
    workdir: Path, local_hashes: dict[str, Any]
) -> None:
    again = golden.run_golden(workdir, "local", ["table-knn", "images"])
    assert again == {k: local_hashes[k] for k in ("table-knn", "images")}
