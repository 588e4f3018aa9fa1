"""Every build has the common shape: the same leading parameters and the same summary keys."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from image_samples import make_folder

from datafuel import build
from datafuel.cli import main
from datafuel.demo import sample_corpus_path

HOUSES = str(files("datafuel") / "data" / "houses.csv")
SPLITTING = ("table", "images", "text")


def params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


@pytest.mark.parametrize("kind", [*SPLITTING, "resample"])
def test_common_parameters(kind: str) -> None:
    p = params(getattr(build, kind))
    names = list(p)
    assert names[:2] == ["inputs", "out"]
    assert all(p[n].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for n in names[:2])
    common = {"seed": 0, "engine": None, "on_progress": None}
    if kind in SPLITTING:  # resample takes one split and splits nothing
        common = {"fractions": (0.8, 0.1, 0.1), **common}
    assert names[2 : 2 + len(common)] == list(common)
    for name, default in common.items():
        assert p[name].kind is inspect.Parameter.KEYWORD_ONLY and p[name].default == default
    assert all(q.kind is inspect.Parameter.KEYWORD_ONLY for q in list(p.values())[2:])


def test_profile_reads_and_writes_nothing_so_has_no_out_or_engine() -> None:
    p = params(build.profile)
    assert list(p)[:3] == ["inputs", "seed", "on_progress"]
    assert "out" not in p and "engine" not in p


@pytest.fixture(scope="module")
def summaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict, dict]]:
    root = tmp_path_factory.mktemp("shape")
    runs: dict[str, tuple[Path, dict, dict]] = {}

    def run(kind: str, inputs: Any, **kw: Any) -> None:
        stages: dict[str, int] = {}

        def progress(stage: str, n: int, total: int | None) -> None:
            stages[stage] = stages.get(stage, 0) + n

        out = root / kind
        runs[kind] = (out, getattr(build, kind)(inputs, out, on_progress=progress, **kw), stages)

    run("table", HOUSES, target="price", drop=["id"])
    run("images", make_folder(root / "src"), fractions=(0.6, 0.2, 0.2))
    run("text", [sample_corpus_path()], vocab_size=300)
    run("resample", root / "text" / "train", report_tokens=2000)
    return runs


@pytest.mark.parametrize("kind", [*SPLITTING, "resample"])
def test_common_summary(summaries: dict[str, tuple[Path, dict, dict]], kind: str) -> None:
    out, s, stages = summaries[kind]
    assert set(build.SUMMARY_KEYS) <= set(s)
    assert s["kind"] == kind and s["out"] == str(out) and s["engine"] == "local"
    assert s["counts"] and all(isinstance(v, int) and v >= 0 for v in s["counts"].values())
    assert isinstance(s["fitted"], dict) and isinstance(s["skipped"], int)
    assert s["seconds"]["total"] >= max(v for k, v in s["seconds"].items() if k != "total")
    assert stages, "on_progress was never called"
    if kind in SPLITTING:
        assert (out / "split.json").exists()
        assert sum(s["counts"].values()) > 0


def test_what_was_fitted_is_named_with_its_fingerprint(
    summaries: dict[str, tuple[Path, dict, dict]],
) -> None:
    assert list(summaries["table"][1]["fitted"]) == ["recipe.json"]
    assert list(summaries["text"][1]["fitted"]) == ["tokenizer.json"]
    assert summaries["images"][1]["fitted"] == {}  # nothing is fitted on images
    assert summaries["resample"][1]["fitted"] == {"prior": "NGramPrior"}  # fitted on the input


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["build", "table"], "build.table("),
        (["build", "images"], "build.images("),
        (["build", "text"], "build.text("),
        (["resample"], "build.resample("),
        (["profile"], "build.profile("),
    ],
)
def test_help_names_the_python_call(
    argv: list[str], call: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--help"]) == 0
    assert call in capsys.readouterr().out.replace("\n", " ")
