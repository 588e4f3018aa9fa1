"""datafuel audit: a build without dedup over planted copies is flagged (exit 1); one with
--dedup near is not (exit 0); bad sets get one-line errors."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datafuel import build
from datafuel.cli import main
from datafuel.errors import ConfigError, OutputError


def _corpus(path: Path) -> None:
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    docs = []
    for _ in range(60):
        words = list(rng.choice(vocab, 100))
        docs += [" ".join(words), " ".join([*words[:-2], "x", "y"])]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_audit_flags_a_build_without_dedup_and_passes_one_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _corpus(tmp_path / "c.jsonl")
    build.text([tmp_path / "c.jsonl"], tmp_path / "none", vocab_size=400, dedup="none")
    build.text([tmp_path / "c.jsonl"], tmp_path / "near", vocab_size=400, dedup="near")
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "none"), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["leaked"] and got["cross_pairs"] > 0 and got["kind"] == "text"
    worst = got["pairs"][0]
    assert worst["similarity"] >= 0.8 and worst["a"]["set"] != worst["b"]["set"]
    assert worst["a"]["excerpt"][:40] == worst["b"]["excerpt"][:40]
    assert main(["audit", str(tmp_path / "near")]) == 0
    assert build.audit([tmp_path / "near"])["cross_pairs"] == 0


def test_audit_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.resources import files

    _corpus(tmp_path / "c.jsonl")
    build.text([tmp_path / "c.jsonl"], tmp_path / "t", vocab_size=400)
    build.table(
        str(files("datafuel") / "data" / "houses.csv"),
        tmp_path / "tab",
        target="price",
        drop=["id"],
    )
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "t" / "train"), str(tmp_path / "tab" / "train")]) == 1
    err = capsys.readouterr().err
    assert "one kind" in err and err.count("\n") == 1
    assert main(["audit", str(tmp_path / "t" / "train")]) == 1
    assert "two or more" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "tab")]) == 0  # no duplicated rows across its splits


class _Page(HTMLParser):
    """Tags opened and closed (void ones aside), pair sections, images, marked runs."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.starts: list[str] = []
        self.pairs = 0
        self.images: list[str] = []
        self.marks: list[str] = []
        self.text: list[str] = []
        self._in_mark = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.starts.append(tag)
        if tag == "section" and a.get("class") == "pair":
            self.pairs += 1
        if tag == "img":
            self.images.append(a["src"] or "")
        if tag == "mark":
            self._in_mark = True
            self.marks.append("")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
        self.stack.pop()
        if tag == "mark":
            self._in_mark = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_mark:
            self.marks[-1] += data


def _page(path: Path) -> tuple[_Page, str]:
    raw = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(raw)
    page.close()
    assert page.stack == [] and raw.startswith("<!DOCTYPE html>")
    assert "http://" not in raw and "https://" not in raw  # nothing fetched from the network
    return page, raw


def test_audit_html_marks_the_shared_run_and_escapes_hostile_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(3000)]
    docs = []
    for k in range(40):
        words = list(rng.choice(vocab, 80))
        if k < 5:  # hostile markup inside the shared run
            words[10:10] = ["<script>alert('x')</script>", "&amp;", '"quoted"']
        docs += [" ".join(words), " ".join([*words[:-2], "tail", "end"])]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    build.text([tmp_path / "c.jsonl"], tmp_path / "none", vocab_size=400, dedup="none")
    capsys.readouterr()
    report = tmp_path / "report.html"
    assert main(["audit", str(tmp_path / "none"), "--worst", "7", "--html", str(report)]) == 1
    assert f"wrote {report}" in capsys.readouterr().out
    page, raw = _page(report)
    got = build.audit([tmp_path / "none"], worst=7)
    assert page.pairs == len(got["pairs"]) == 7
    assert "script" not in page.starts and "<script>" not in raw
    assert "&lt;script&gt;" in raw
    assert len(page.marks) == 2 * page.pairs
    for a, b in zip(page.marks[::2], page.marks[1::2], strict=True):
        assert a == b and len(a.split()) >= 70  # the copy less its two new last words
    full = build.audit([tmp_path / "none"], worst=1000, html=report)  # every pair
    assert _page(report)[0].pairs == len(full["pairs"]) == full["cross_pairs"] > 7


def _pictures(root: Path) -> None:
    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
    for k in range(24):
        small = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((140, 100), Image.Resampling.BICUBIC)
        cls = "ab"[k % 2]
        img.save(root / cls / f"{k:02d}.jpg", quality=90)
        if k < 6:
            img.resize((280, 200)).save(root / "ab"[1 - k % 2] / f"{k:02d}-big.jpg", quality=80)
            img.save(root / cls / f"{k:02d}.png")


def test_audit_html_shows_image_pairs_as_thumbnails_that_decode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pictures(tmp_path / "in")
    build.images(tmp_path / "in", tmp_path / "out", dedup="none", fractions=(0.5, 0.25, 0.25))
    report = tmp_path / "report.html"
    got = build.audit([tmp_path / "out"], html=report)
    assert got["leaked"] and got["kind"] == "images"
    page, _ = _page(report)
    assert page.pairs == len(got["pairs"]) > 0 and len(page.images) == 2 * page.pairs
    for src in page.images:
        head, b64 = src.split(",", 1)
        assert head == "data:image/png;base64"
        with Image.open(io.BytesIO(base64.b64decode(b64, validate=True))) as im:
            im.load()
            assert max(im.size) <= 192 and im.size[0] > 0
    capsys.readouterr()
    missing = tmp_path / "no" / "such" / "r.html"
    assert main(["audit", str(tmp_path / "out"), "--html", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    with pytest.raises(OutputError, match="is a folder"):
        build.audit([tmp_path / "out"], html=tmp_path)
    with pytest.raises(ConfigError, match="worst"):
        build.audit([tmp_path / "out"], worst=-1)


def test_audit_exit_status_for_images_and_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the split test for the other two kinds: planted copies built with dedup off
    # are flagged (exit 1); built with dedup on (near for images, exact for tables), not
    _pictures(tmp_path / "in")
    kw = {"fractions": (0.5, 0.25, 0.25)}
    build.images(tmp_path / "in", tmp_path / "img-none", dedup="none", **kw)
    build.images(tmp_path / "in", tmp_path / "img-near", dedup="near", **kw)
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "img-none")]) == 1
    assert main(["audit", str(tmp_path / "img-near")]) == 0

    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(3)
    n = 300
    t = pa.table({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": rng.normal(size=n)})
    copies = t.take(pa.array(np.repeat(np.arange(30), 2)))
    pacsv.write_csv(pa.concat_tables([t, copies]), tmp_path / "t.csv")
    csv = str(tmp_path / "t.csv")
    build.table(csv, tmp_path / "tab-none", target="y", impute="median", dedup="none")
    build.table(csv, tmp_path / "tab-exact", target="y", impute="median", dedup="exact")
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "tab-none"), "--json"]) == 1
    got = json.loads(capsys.readouterr().out)
    assert got["leaked"] and got["kind"] == "table" and got["method"] == "exact"
    assert got["cross_pairs"] > 0 and got["pairs"][0]["similarity"] == 1.0
    assert main(["audit", str(tmp_path / "tab-exact")]) == 0
