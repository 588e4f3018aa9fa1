"""--dedup in every build: no cluster in two splits, keep one, the reports, determinism, and
no change at all for data without duplicates."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from PIL import Image

from datafuel import build
from datafuel.errors import ConfigError
from datafuel.loaders import ShardSet
from datafuel.text import BPETokenizer

SPLITS = ("train", "val", "test")


def _text_corpus(path: Path, seed: int = 0) -> list[list[str]]:
    """60 unique documents and 30 clusters of three near copies; the clusters."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(3000)]
    docs, clusters = [], []
    for _ in range(60):
        docs.append(" ".join(rng.choice(vocab, 120)))
    for _ in range(30):
        words = list(rng.choice(vocab, 120))
        a = " ".join(words)
        b = " ".join([*words[:-3], "edit", "ed", "here"])  # Jaccard ~ 0.9
        c = "  " + a.upper().lower() + " "  # an exact copy after normalisation
        clusters.append([a, b, c])
        docs.extend([a, b, c])
    order = rng.permutation(len(docs))
    path.write_text("".join(json.dumps({"text": docs[k]}) + "\n" for k in order))
    return clusters


def _text_splits(out: Path) -> dict[str, list[str]]:
    tok = BPETokenizer.load(out / "tokenizer.json")
    got: dict[str, list[str]] = {}
    for name in SPLITS:
        if (out / name).is_dir():
            ds = ShardSet(out / name)
            got[name] = [tok.decode(ds[i]["tokens"], skip_eot=True) for i in range(len(ds))]
    return got


def _where(splits: dict[str, list[str]], text: str) -> set[str]:
    return {n for n, docs in splits.items() if text in docs}


def test_text_near_keeps_every_cluster_in_one_split(tmp_path: Path) -> None:
    clusters = _text_corpus(tmp_path / "c.jsonl")
    s = build.text([tmp_path / "c.jsonl"], tmp_path / "out", vocab_size=400, dedup="near")
    splits = _text_splits(tmp_path / "out")
    for members in clusters:
        sides = set().union(*(_where(splits, m) for m in members))
        assert len(sides) == 1, sides
    report = json.loads((tmp_path / "out" / "dedup.json").read_text())
    assert report["clusters"] == 30 and report["sizes"] == {"3": 30}
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    assert record["dedup"]["clusters"] == 30 and s["dedup"]["method"] == "near"
    # without dedup, the hash split puts some near copies in two splits
    build.text([tmp_path / "c.jsonl"], tmp_path / "none", vocab_size=400, dedup="none")
    plain = _text_splits(tmp_path / "none")
    assert any(len(set().union(*(_where(plain, m) for m in c[:2]))) > 1 for c in clusters)
    assert not (tmp_path / "none" / "dedup.json").exists()


def test_text_keep_one_writes_one_document_per_cluster_and_reruns_identically(
    tmp_path: Path,
) -> None:
    _text_corpus(tmp_path / "c.jsonl")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        s = build.text([tmp_path / "c.jsonl"], out, vocab_size=400, dedup="near", dedup_keep="one")
    assert sum(s["counts"].values()) == 60 + 30
    report = json.loads((outs[0] / "dedup.json").read_text())
    assert report["dropped"]["count"] == 60
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    for f in files:
        if f.name not in (".build-text.json", ".datafuel.lock"):
            assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def _jpeg(img: Image.Image, q: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return buf.getvalue()


def _image_folder(root: Path) -> dict[str, list[str]]:
    """Smooth random pictures; 8 of them with a re-encoded and a resized copy."""
    rng = np.random.default_rng(0)
    clusters: dict[str, list[str]] = {}
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    for k in range(40):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((96, 72), Image.Resampling.BICUBIC)
        cls = "ab"[k % 2]
        (root / cls / f"{k:03d}.jpg").write_bytes(_jpeg(img, 90))
        if k < 8:
            (root / cls / f"{k:03d}-q60.jpg").write_bytes(_jpeg(img, 60))
            (root / "ab"[1 - k % 2] / f"{k:03d}-big.jpg").write_bytes(
                _jpeg(img.resize((192, 144)), 85)
            )
            clusters[f"{k:03d}"] = [
                f"{cls}/{k:03d}.jpg",
                f"{cls}/{k:03d}-q60.jpg",
                f"{'ab'[1 - k % 2]}/{k:03d}-big.jpg",
            ]
    return clusters


def test_images_near_keeps_every_cluster_in_one_split(tmp_path: Path) -> None:
    clusters = _image_folder(tmp_path / "in")
    s = build.images(tmp_path / "in", tmp_path / "out", dedup="near", fractions=(0.5, 0.25, 0.25))
    files = json.loads((tmp_path / "out" / "split.json").read_text())["files"]
    side = {f: n for n, fs in files.items() for f in fs}
    for members in clusters.values():
        assert len({side[m] for m in members}) == 1, members
    report = json.loads((tmp_path / "out" / "dedup.json").read_text())
    assert report["clusters"] == 8 and s["dedup"]["duplicates"] == 16
    plain = build.images(
        tmp_path / "in", tmp_path / "none", dedup="none", fractions=(0.5, 0.25, 0.25)
    )
    files = json.loads((tmp_path / "none" / "split.json").read_text())["files"]
    side = {f: n for n, fs in files.items() for f in fs}
    assert any(len({side[m] for m in ms}) > 1 for ms in clusters.values())
    assert plain["dedup"] is None
    one = build.images(tmp_path / "in", tmp_path / "one", dedup="near", dedup_keep="one")
    assert sum(one["counts"].values()) == 40


def _rows(runs: list) -> list[int]:
    out: list[int] = []
    for r in runs:
        out.extend(range(r[0], r[1]) if isinstance(r, list) else [r])
    return out


def test_table_exact_default_keeps_duplicated_rows_together(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 300
    t = pa.table({"a": rng.normal(size=n), "b": rng.integers(0, 9, n), "y": rng.normal(size=n)})
    dups = t.take(pa.array(np.repeat(np.arange(20), 3)))  # rows 0..19 three more times each
    dups = dups.set_column(2, "y", pa.array(rng.normal(size=60)))  # other targets: still copies
    pacsv.write_csv(pa.concat_tables([t, dups]), tmp_path / "t.csv")
    s = build.table(str(tmp_path / "t.csv"), tmp_path / "out", target="y", impute="median")
    record = json.loads((tmp_path / "out" / "split.json").read_text())
    side = {r: name for name in SPLITS for r in _rows(record["rows"][name])}
    for k in range(20):
        assert len({side[k], *(side[n + 3 * k + m] for m in range(3))}) == 1
    assert s["dedup"]["clusters"] == 20 and record["dedup"]["duplicates"] == 60
    one = build.table(
        str(tmp_path / "t.csv"), tmp_path / "one", target="y", impute="median", dedup_keep="one"
    )
    assert sum(one["counts"].values()) == n
    with pytest.raises(ConfigError, match="texts and images only"):
        build.table(str(tmp_path / "t.csv"), tmp_path / "x", target="y", dedup="near")


def test_table_without_duplicates_writes_no_report(tmp_path: Path) -> None:
    from importlib.resources import files

    csv = str(files("datafuel") / "data" / "houses.csv")
    s = build.table(csv, tmp_path / "out", target="price", drop=["id"])
    assert s["dedup"] is None and not (tmp_path / "out" / "dedup.json").exists()
    assert "dedup" not in json.loads((tmp_path / "out" / "split.json").read_text())
    explicit = build.table(csv, tmp_path / "ex", target="price", drop=["id"], dedup="exact")
    assert explicit["dedup"]["clusters"] == 0 and (tmp_path / "ex" / "dedup.json").exists()
    for name in SPLITS:  # asked for, it reports, and the shards are the same
        assert (tmp_path / "out" / name / "manifest.json").read_bytes() == (
            tmp_path / "ex" / name / "manifest.json"
        ).read_bytes()


def test_bad_dedup_arguments(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text('{"text": "hi there"}\n')
    with pytest.raises(ConfigError, match="none, exact or near"):
        build.text([tmp_path / "c.jsonl"], tmp_path / "o", dedup="fuzzy")
    with pytest.raises(ConfigError, match="dedup_keep"):
        build.text([tmp_path / "c.jsonl"], tmp_path / "o", dedup_keep="first")


def test_table_split_by_groups_counts_follow_the_clusters(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n = 240
    t = pa.table(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 9, n),
            "g": [f"g{k % 60}" for k in range(n)],  # 60 groups of 4 rows
            "y": rng.normal(size=n),
        }
    )
    copies = t.take(pa.array(np.arange(0, 60, 2)))  # rows of groups 0, 2, ..., 58 copied ...
    copies = copies.set_column(2, "g", pa.array([f"g{(k + 31) % 60}" for k in range(0, 60, 2)]))
    pacsv.write_csv(pa.concat_tables([t, copies]), tmp_path / "t.csv")  # ... into other groups
    kw = {"target": "y", "impute": "median", "split_by": "g"}
    plain = build.table(str(tmp_path / "t.csv"), tmp_path / "none", dedup="none", **kw)
    assert plain["dedup"] is None
    before = json.loads((tmp_path / "none" / "split.json").read_text())
    for keep in ("all", "one"):
        s = build.table(str(tmp_path / "t.csv"), tmp_path / keep, dedup_keep=keep, **kw)
        assert s["dedup"]["clusters"] == 30 and s["dedup"]["moved"] > 0
        record = json.loads((tmp_path / keep / "split.json").read_text())
        rows = {name: _rows(record["rows"][name]) for name in SPLITS}
        g = np.array(t.column("g").to_pylist() + copies.column("g").to_pylist())
        where = {name: set(g[rows[name]].tolist()) for name in SPLITS}
        assert sum(len(w) for w in where.values()) == 60  # every group on one side only
        assert record["groups"] == {name: len(where[name]) for name in SPLITS}
        assert record["groups"] != before["groups"]  # the clusters moved groups
