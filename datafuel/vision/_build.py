"""``build_image_shards``: an ImageFolder tree -> train/val/test image shard sets.

Layout read: ``INPUT_DIR/<class name>/<any sub-path>/<file>``; classes are the
sorted sub-folder names (label = position), files are taken in sorted path order,
hidden files and folders (names starting with ``.``) are ignored. Every file is
fully decoded once to validate it. The shard sets hold the original encoded bytes
(``jpeg``, whatever the format) and an int64 ``label``; the manifest metadata holds
``class_names``. ``split.json`` records the split, ``skipped.json`` every file left
out with ``on_error="skip"``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from datafuel._fs import atomic_write_json
from datafuel.errors import ConfigError, DecodeError, InputDataError
from datafuel.loaders import ShardWriter, bytes_field, fixed
from datafuel.split import SPLIT_NAMES, split_indices

from ._decode import ORIENTATION_TRANSPOSE, PIL_ERRORS, image_info, open_image, orientation, to_rgb

__all__ = ["build_image_shards", "list_image_folder"]

FIELDS = {"jpeg": bytes_field(), "label": fixed("int64")}


def list_image_folder(
    input_dir: str | os.PathLike[str],
) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(class_names, [(path, label), ...])`` of an ImageFolder tree, in a stable order."""
    root = Path(input_dir)
    if not root.is_dir():
        raise InputDataError(
            f"{root}: not a directory (expected one sub-folder per class).", path=root
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise InputDataError(
            f"{root}: has no class sub-folders; expected INPUT_DIR/<class>/<image files>.",
            path=root,
        )
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files.extend((Path(dirpath) / f, label) for f in filenames if not f.startswith("."))
    files.sort(key=lambda t: (t[1], t[0].relative_to(root).as_posix()))
    return classes, files


def _reencode(data: bytes, max_side: int, what: str) -> bytes:
    """Shrink so the longer side is ``max_side`` (orientation applied, RGB); JPEG q95, else PNG."""
    im = open_image(data, what=what)
    try:
        with im:
            w, h = im.size
            if max(w, h) <= max_side:
                return data
            fmt = im.format
            orient = orientation(im)
            im.draft(
                im.mode, (max(1, w * max_side // max(w, h)), max(1, h * max_side // max(w, h)))
            )
            im.load()
            rgb = to_rgb(im)
    except PIL_ERRORS as exc:
        raise DecodeError(f"{what}: cannot decode ({type(exc).__name__}: {exc}).") from exc
    if orient in ORIENTATION_TRANSPOSE:
        rgb = rgb.transpose(ORIENTATION_TRANSPOSE[orient])
    ow, oh = rgb.size
    scale = max_side / max(ow, oh) if max(ow, oh) > max_side else 1.0
    if scale < 1.0:
        rgb = rgb.resize(
            (max(1, round(ow * scale)), max(1, round(oh * scale))), Image.Resampling.LANCZOS
        )
    buf = io.BytesIO()
    if fmt == "JPEG":
        rgb.save(buf, "JPEG", quality=95)
    else:
        rgb.save(buf, "PNG")
    return buf.getvalue()


def _load(path: Path, root: Path, max_side: int | None) -> bytes:
    what = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"{path}: cannot read ({exc}).", path=path) from exc
    try:
        image_info(data, what=what)  # full decode: truncated files fail here
        if max_side is not None:
            data = _reencode(data, max_side, what)
    except DecodeError as exc:
        exc.path = str(path)
        raise
    return data


def _map_ordered(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> Iterator[Any]:
    """``fn`` over ``items`` on ``threads`` threads, results in order, at most 4*threads in flight."""
    if threads <= 1:
        yield from (fn(x) for x in items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="datafuel-build-images") as pool:
        window = 4 * threads
        futures = [pool.submit(fn, x) for x in items[:window]]
        for i in range(len(items)):
            if i + window < len(items):
                futures.append(pool.submit(fn, items[i + window]))
            yield futures[i].result()
            futures[i] = None  # type: ignore[call-overload]


def _result_or_error(path: Path, root: Path, max_side: int | None) -> bytes | DecodeError:
    try:
        return _load(path, root, max_side)
    except DecodeError as exc:
        return exc


def _stratified(
    labels: np.ndarray, num_classes: int, fractions: Sequence[float], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """split_indices within each class (seed + class), merged back in storage order."""
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    record: dict[str, Any] = {}
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if not members.size:
            continue
        parts, record = split_indices(int(members.size), fractions, seed=seed + c)
        for name in SPLIT_NAMES:
            chunks[name].append(members[parts[name]])
    merged = {
        name: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64)
        for name, v in chunks.items()
    }
    counts = {name: int(v.size) for name, v in merged.items()}
    record = {
        **record,
        "method": "stratified",
        "seed": int(seed),
        "counts": counts,
        "total": int(labels.size),
    }
    return merged, record


def build_image_shards(
    input_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    on_error: str = "fail",
    max_side: int | None = None,
    shard_bytes: int = 256 << 20,
    stratify: bool = False,
    threads: int | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    engine: Any = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Write ``out/{train,val,test}`` image shard sets from an ImageFolder tree.

    Parameters
    ----------
    input_dir
        One sub-folder per class (its name is the class name), images anywhere below.
    out
        Output directory: ``train``/``val``/``test`` shard sets (splits with fraction
        0 are skipped), ``split.json``, ``skipped.json``.
    fractions, seed
        Train/val/test fractions and the split seed (:func:`datafuel.split.split_indices`
        over the valid files in listing order).
    stratify
        Split each class separately (same fractions, seed + class index), so every
        split keeps the class proportions.
    on_error
        ``"fail"``: the first corrupt, truncated, zero-byte, non-image or unsupported
        file raises :class:`~datafuel.errors.DecodeError` naming it. ``"skip"``: such
        files are left out, each listed with its reason in ``skipped.json``.
    max_side
        Re-encode images whose longer side exceeds this (JPEG q95, else PNG), EXIF
        orientation applied. ``None`` keeps the original bytes.
    shard_bytes
        Shard size, as in :class:`~datafuel.loaders.ShardWriter`.
    threads
        Files validated in parallel (default: all cores).
    progress
        Wraps the per-file iteration (e.g. a tqdm bar).

    Returns
    -------
    A summary: ``{"classes", "counts", "skipped", "total", "out"}``.

    Rerunning with the same arguments gives byte-identical output.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (src / c).mkdir()
    ...     for i in range(5):
    ...         Image.new("RGB", (32, 24), c == "cat" and "red" or "blue").save(src / c / f"{i}.jpg")
    >>> s = build_image_shards(src, tempfile.mkdtemp(), fractions=(0.6, 0.2, 0.2))
    >>> s["counts"], s["classes"]
    ({'train': 6, 'val': 2, 'test': 2}, ['cat', 'dog'])
    """
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error must be 'fail' or 'skip'. Got {on_error!r} instead.")
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1
    ):
        raise ConfigError(f"max_side must be a positive int or None. Got {max_side!r} instead.")
    root = Path(input_dir)
    out_dir = Path(out)
    classes, files = list_image_folder(root)
    if out_dir.resolve() == root.resolve() or root.resolve() in out_dir.resolve().parents:
        raise ConfigError(
            f"out {out_dir} is inside the input folder {root}: its shard sets would be read as a class "
            "on the next run. Write elsewhere.",
            path=out_dir,
        )
    nthreads = threads if threads is not None else (os.cpu_count() or 1)
    wrap = progress if progress is not None else (lambda it: it)
    runner = None
    if engine is not None or ray_address is not None:
        from datafuel.engine import get_engine  # validation, loading and writing as engine tasks

        runner = get_engine(engine, ray_address=ray_address)

    def check(item: tuple[Path, int]) -> DecodeError | None:
        res = _result_or_error(item[0], root, None)
        return res if isinstance(res, DecodeError) else None

    # pass 1: validate every file (full decode), in parallel; order stays the listing order
    valid: list[tuple[Path, int]] = []
    skipped: list[dict[str, str]] = []
    if runner is None:
        checked: Iterable[Any] = _map_ordered(check, files, nthreads)
    else:
        from datafuel.engine._units import image_check

        checked = runner.map(image_check, files, shared=root)
    for (path, label), err in zip(files, wrap(checked), strict=True):
        if err is None:
            valid.append((path, label))
        elif on_error == "fail":
            raise DecodeError(
                f"{path}: {err.message.split(': ', 1)[-1]} Use --on-error skip to leave such files out.",
                path=path,
            ) from err
        else:
            skipped.append(
                {"path": path.relative_to(root).as_posix(), "reason": str(err).split(": ", 1)[-1]}
            )
    if not valid:
        raise InputDataError(
            f"{root}: no readable images ({len(skipped)} file(s) skipped).", path=root
        )
    labels = np.array([lab for _, lab in valid], np.int64)
    if stratify:
        parts, record = _stratified(labels, len(classes), fractions, seed)
    else:
        parts, record = split_indices(len(valid), fractions, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}

    def load(item: tuple[Path, int]) -> bytes:
        return _load(item[0], root, max_side)

    for name in SPLIT_NAMES:
        idx = parts[name]
        if record["fractions"][SPLIT_NAMES.index(name)] == 0:
            continue
        per_class = np.bincount(labels[idx], minlength=len(classes)).tolist()
        meta = {"class_names": classes, "num_classes": len(classes), "class_counts": per_class}
        prov = {"source": "images", "split": name, "max_side": max_side}
        if runner is not None:
            from datafuel.engine._units import write_image_split

            write_image_split(
                runner,
                out_dir / name,
                [valid[i] for i in idx.tolist()],
                root=root,
                max_side=max_side,
                fields=FIELDS,
                shard_bytes=shard_bytes,
                provenance=prov,
                metadata=meta,
            )
            counts[name] = len(idx)
            continue
        with ShardWriter(
            out_dir / name, FIELDS, shard_bytes=shard_bytes, provenance=prov, metadata=meta
        ) as w:
            items = [valid[i] for i in idx.tolist()]
            chunk = 256
            for s in range(0, len(items), chunk):
                block = items[s : s + chunk]
                data = list(_map_ordered(load, block, nthreads))
                w.write({"jpeg": data, "label": labels[idx[s : s + chunk]]})
        counts[name] = len(idx)
    split_record = {
        **record,
        "unit": "image files",
        "files": {
            name: [valid[i][0].relative_to(root).as_posix() for i in parts[name].tolist()]
            for name in counts
        },
    }
    atomic_write_json(out_dir / "split.json", split_record)
    atomic_write_json(out_dir / "skipped.json", {"count": len(skipped), "files": skipped})
    return {
        "classes": classes,
        "counts": counts,
        "skipped": len(skipped),
        "total": len(valid),
        "out": str(out_dir),
    }
