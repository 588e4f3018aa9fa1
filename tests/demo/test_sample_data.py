"""The demo's sample data and models: deterministic, offline, and the shapes they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from datafuel.demo import (
    IMAGE_CLASSES,
    LISTINGS_DRIFT_AT,
    FakeAPI,
    decode_cursor,
    encode_cursor,
    generate_documents,
    sample_corpus_path,
    sample_listings,
    write_corpus,
    write_sample_images,
)


@pytest.mark.parametrize("seed", [0, 7])
def test_documents_are_deterministic_per_seed(seed: int) -> None:
    docs = list(generate_documents(20, seed=seed))
    assert docs == list(generate_documents(20, seed=seed))
    assert docs != list(generate_documents(20, seed=seed + 1))
    assert all(d.startswith("The ") and "\n\n" in d for d in docs)


def test_write_corpus_returns_the_bytes_it_wrote(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    n = write_corpus(path, 15, seed=3)
    assert n == path.stat().st_size
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert texts == list(generate_documents(15, seed=3))


def test_the_shipped_corpus_is_there() -> None:
    path = sample_corpus_path()
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert path.name == "chronicles.jsonl" and first["text"]


@pytest.mark.parametrize("seed", [0, 1])
def test_sample_images_are_deterministic_with_odd_modes(tmp_path: Path, seed: int) -> None:
    assert write_sample_images(tmp_path / "a", per_class=3, seed=seed) == 3 * len(IMAGE_CLASSES)
    write_sample_images(tmp_path / "b", per_class=3, seed=seed)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 9 and sorted({f.parent.name for f in files}) == list(IMAGE_CLASSES)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    with Image.open(tmp_path / "a" / "circles" / "circles_000.jpg") as im:
        assert im.mode == "L"
    with Image.open(tmp_path / "a" / "squares" / "squares_000.jpg") as im:
        assert im.mode == "CMYK"


def test_listings_carry_the_faults_the_demo_shows() -> None:
    recs = sample_listings(seed=0)
    assert recs == sample_listings(seed=0)
    assert max(r["price"] for r in recs) == 999_000_000.0
    assert any(r["sqft"] is None for r in recs)
    assert any("year_built" not in r for r in recs) and any("location" not in r for r in recs)
    assert all(("bathrooms" in r) == (i >= LISTINGS_DRIFT_AT) for i, r in enumerate(recs))


def test_fake_api_serves_listings_and_its_cursors_round_trip() -> None:
    import httpx

    assert decode_cursor(encode_cursor(40)) == 40
    with FakeAPI(sample_listings()[:25], page_size=10, style="cursor") as api:
        body = httpx.get(api.url).json()
        nxt = httpx.get(api.url, params={"cursor": body["next"]}).json()
    assert [r["id"] for r in body["data"]["items"]] == list(range(1000, 1010))
    assert decode_cursor(body["next"]) == 10 and nxt["data"]["items"][0]["id"] == 1010
    assert len(api.served) == 2


def test_models_have_the_shapes_they_promise() -> None:
    import torch

    from datafuel.demo import TabularMLP, TinyCNN, TinyLM

    assert TinyLM(50, dim=8)(torch.zeros(2, 5, dtype=torch.int64)).shape == (2, 5, 50)
    assert TinyCNN(3)(torch.zeros(2, 3, 32, 40)).shape == (2, 3)
    assert TabularMLP(6, hidden=4)(torch.zeros(3, 6)).shape == (3, 1)
