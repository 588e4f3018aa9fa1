"""Fixed builds whose every output file is hashed: the byte-identity record of the builds.

``python tests/engine/golden_builds.py`` (from the repository root) prints the hashes
as JSON; ``tests/engine/golden_hashes.json`` holds the record taken before the build
layer was refactored, and ``test_golden_bytes.py`` checks every build against it.

Inputs and output paths are relative to the working directory, so the manifests'
provenance (which names the source) is the same in every run. Two files hold wall
times and are hashed without them (``seconds``/``tokens_per_second`` dropped, and the
summary of ``.build-text.json``, which is a copy of what the call returned).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datafuel._lock import LOCK_NAME

HOUSES = files("datafuel") / "data" / "houses.csv"
TIMED_JSON = {".build-text.json", "resample_report.json"}
#: library versions that decide output bytes (a different version may encode differently)
VERSIONED = ("numpy", "pyarrow", "tokenizers", "PIL", "sklearn")


def versions() -> dict[str, str]:
    import importlib

    return {name: importlib.import_module(name).__version__ for name in VERSIONED}


def _drop_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {
            k: _drop_timings(v)
            for k, v in obj.items()
            if k not in ("seconds", "tokens_per_second", "summary")
        }
    if isinstance(obj, list):
        return [_drop_timings(v) for v in obj]
    return obj


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative POSIX path -> hex digest)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name == LOCK_NAME:  # the build lock holds a pid
            continue
        data = p.read_bytes()
        if p.name in TIMED_JSON:
            data = json.dumps(_drop_timings(json.loads(data)), sort_keys=True).encode()
        out[p.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def image_folder(root: Path, corrupt: bool = True) -> Path:
    """Three classes of small JPEG and PNG files, one of them truncated (unless not ``corrupt``)."""
    rng = np.random.default_rng(3)
    for c, name in enumerate(("cat", "dog", "eel")):
        (root / name).mkdir(parents=True)
        for i in range(13 + c):
            w, h = (int(v) for v in rng.integers(20, 90, size=2))
            arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "JPEG" if i % 4 else "PNG", quality=80)
            (root / name / f"{i:03d}.{'jpg' if i % 4 else 'png'}").write_bytes(buf.getvalue())
    if corrupt:
        (root / "dog" / "007.jpg").write_bytes((root / "dog" / "007.jpg").read_bytes()[:150])
    return root


def corpus_folder(root: Path) -> Path:
    from datafuel.demo import write_corpus

    root.mkdir(parents=True)
    write_corpus(root / "a.jsonl", 150, seed=1)
    write_corpus(root / "b.jsonl", 90, seed=2)
    for p in root.iterdir():  # the text build's config hash includes each file's mtime
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    return root


def _builds() -> dict[str, Callable[[str, str], Any]]:
    from datafuel import build

    return {
        "table-knn": lambda out, engine: build.table(
            "in/houses.csv", out, target="price", drop=["id"], shard_bytes=4096, engine=engine
        ),
        "table-median-minmax": lambda out, engine: build.table(
            "in/houses.csv",
            out,
            target="price",
            drop=["id"],
            impute="median",
            scale="minmax",
            winsorize=None,
            fractions=(0.7, 0.3, 0.0),
            seed=3,
            shard_bytes=2048,
            engine=engine,
        ),
        "images": lambda out, engine: build.images(
            "in/images", out, on_error="skip", shard_bytes=9000, engine=engine
        ),
        "images-max-side": lambda out, engine: build.images(
            "in/images", out, on_error="skip", max_side=40, shard_bytes=9000, engine=engine
        ),
        "text": lambda out, engine: build.text(
            ["in/corpus"], out, vocab_size=400, shard_bytes=3000, batch_chars=2500, engine=engine
        ),
        "resample": lambda out, engine: build.resample(
            "in/text-src/train", out, seed=0, report_tokens=2000, shard_bytes=3000, engine=engine
        ),
    }


def prepare_inputs(workdir: Path) -> None:
    """The inputs every golden build reads, under ``workdir/in``."""
    from datafuel import build

    (workdir / "in").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(str(HOUSES), workdir / "in" / "houses.csv")
    image_folder(workdir / "in" / "images")
    corpus_folder(workdir / "in" / "corpus")
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        build.text(["in/corpus"], "in/text-src", vocab_size=400, shard_bytes=3000)
    finally:
        os.chdir(cwd)


def run_golden(workdir: Path, engine: str = "local", names: list[str] | None = None) -> dict:
    """Run the golden builds in ``workdir`` (inputs prepared there); their file hashes."""
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        out = {}
        for name, fn in _builds().items():
            if names is not None and name not in names:
                continue
            target = f"out-{engine}/{name}"
            fn(target, engine)
            out[name] = tree_hashes(Path(target))
        return out
    finally:
        os.chdir(cwd)


if __name__ == "__main__":  # pragma: no cover - how golden_hashes.json was made
    import tempfile

    tmp = Path(tempfile.mkdtemp())
    prepare_inputs(tmp)
    engine = sys.argv[1] if len(sys.argv) > 1 else "local"
    print(json.dumps({"versions": versions(), "hashes": run_golden(tmp, engine)}, indent=1))
