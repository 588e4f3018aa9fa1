"""``build.images``: an ImageFolder tree -> train/val/test image shard sets.

Two passes over the files in listing order, both on the engine: validate every file
(a full decode; ``on_error`` decides what a bad one does), then split the valid ones
and write each split in units of :data:`IMAGE_UNIT_FILES` files (the stored bytes:
the original file, or a re-encode with ``max_side``). ``split.json`` records the split
and every file's split, ``skipped.json`` every file left out with ``on_error="skip"``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datafuel._checks import check_int
from datafuel._fs import atomic_write_json
from datafuel._lock import locked
from datafuel.engine import Engine, unit_ranges
from datafuel.errors import ConfigError, DecodeError, InputDataError
from datafuel.split import SPLIT_NAMES, split_indices
from datafuel.vision import IMAGE_FIELDS, check_image, list_image_folder, load_image
from datafuel.vision._folder import IMAGE_FIELD

from ._common import (
    Progress,
    Timer,
    clear_split,
    engine_for,
    make_summary,
    prepare_out,
    report,
    write_split_record,
)
from ._dedup import DedupOutcome, check_keep, resolve_dedup, write_dedup_report
from ._remote_out import is_remote, run_remote

__all__ = ["IMAGE_UNIT_FILES", "image_check", "image_keys_unit", "image_unit", "images"]

#: Image files per work unit.
IMAGE_UNIT_FILES = 256

Item = tuple[Path, int]


def image_check(shared: None, item: Item) -> DecodeError | None:
    """Validate one file (full decode): its DecodeError or None."""
    return check_image(item[0])


def image_keys_unit(shared: None, item: Item) -> tuple[bytes, int]:
    """The exact key and pHash of one (valid) file: see :func:`datafuel.dedup.image_keys`."""
    from datafuel.dedup import image_keys

    return image_keys(item[0])


def _dedup_split(
    runner: Engine,
    valid: list[Item],
    parts: dict[str, np.ndarray],
    record: dict[str, Any],
    method: str,
    keep: str,
    max_distance: int,
    on_progress: Progress | None,
) -> tuple[dict[str, np.ndarray], DedupOutcome]:
    """Clusters of the valid files; every cluster moved to its first file's split."""
    from datafuel.dedup import cluster_splits, image_clusters

    tick = report(on_progress, "dedup", len(valid))
    keys: list[bytes] = []
    hashes: list[int] = []
    for key, h in runner.map(image_keys_unit, valid):
        keys.append(key)
        hashes.append(h)
        tick(1)
    clusters = image_clusters(keys, np.array(hashes, np.uint64), method, max_distance=max_distance)
    which = np.zeros(len(valid), np.int64)
    for k, name in enumerate(SPLIT_NAMES):
        which[parts[name]] = k
    after = cluster_splits(which, clusters.labels)
    outcome = DedupOutcome(clusters, which, after, keep)
    if not outcome.found:
        return parts, outcome
    new = {n: np.flatnonzero((after == k) & outcome.kept) for k, n in enumerate(SPLIT_NAMES)}
    record["counts"] = {n: int(v.size) for n, v in new.items()}
    return new, outcome


def image_unit(max_side: int | None, items: Sequence[Item]) -> dict[str, Any]:
    """Load (and re-encode with ``max_side``) a run of files: ``{"image", "label"}``."""
    return {
        IMAGE_FIELD: [load_image(path, max_side) for path, _ in items],
        "label": np.array([label for _, label in items], np.int64),
    }


def stratified_indices(
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


def _check_paths(root: Path, out: Path) -> None:
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise ConfigError(
            f"out {out} is inside the input folder {root}: its shard sets would be read as a "
            "class on the next run. Write elsewhere.",
            path=out,
        )


def _validate(
    runner: Engine,
    root: Path,
    files: list[Item],
    on_error: str,
    on_progress: Progress | None,
) -> tuple[list[Item], list[dict[str, str]]]:
    """Pass 1: the valid files in listing order, and the skipped ones with their reason."""
    valid: list[Item] = []
    skipped: list[dict[str, str]] = []
    tick = report(on_progress, "validate", len(files))
    for (path, label), err in zip(files, runner.map(image_check, files), strict=True):
        tick(1)
        if err is None:
            valid.append((path, label))
        elif on_error == "fail":
            raise DecodeError(
                f"{path}: {err.message.split(': ', 1)[-1]} Use --on-error skip to leave such "
                "files out.",
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
    return valid, skipped


def _write_split(
    runner: Engine,
    out: Path,
    name: str,
    items: list[Item],
    classes: list[str],
    max_side: int | None,
    shard_bytes: int,
    on_progress: Progress | None,
) -> int:
    labels = np.array([label for _, label in items], np.int64)
    per_class = np.bincount(labels, minlength=len(classes)).tolist()
    manifest = runner.write_units(
        out / name,
        IMAGE_FIELDS,
        image_unit,
        (items[s:e] for s, e in unit_ranges(len(items), IMAGE_UNIT_FILES)),
        shared=max_side,
        shard_bytes=shard_bytes,
        provenance={"source": "images", "split": name, "max_side": max_side},
        metadata={"class_names": classes, "num_classes": len(classes), "class_counts": per_class},
        on_rows=report(on_progress, f"write {name}", len(items)),
    )
    return int(manifest["total_rows"])


def images(
    inputs: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    engine: str | Engine | None = None,
    on_progress: Progress | None = None,
    on_error: str = "fail",
    max_side: int | None = None,
    shard_bytes: int = 256 << 20,
    stratify: bool = False,
    overwrite: bool = False,
    dedup: str | None = None,
    dedup_keep: str = "all",
    dedup_distance: int = 10,
    stage_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write ``out/{train,val,test}`` image shard sets from an ImageFolder tree.

    Parameters
    ----------
    inputs
        One sub-folder per class (its name is the class name), images anywhere below.
    out
        Output directory: ``train``/``val``/``test`` shard sets (splits with fraction
        0 are skipped), ``split.json``, ``skipped.json``.
    fractions, seed
        Train/val/test fractions and the split seed (:func:`datafuel.split.split_indices`
        over the valid files in listing order).
    engine, on_progress
        Where the per-file work runs (``"local"`` threads, ``"ray"``, an Engine) and
        a ``(stage, n, total)`` progress callback.
    on_error
        ``"fail"``: the first corrupt, truncated, zero-byte, non-image or unsupported
        file raises :class:`~datafuel.errors.DecodeError` naming it. ``"skip"``: such
        files are left out, each listed with its reason in ``skipped.json``.
    max_side
        Re-encode images whose longer side exceeds this (JPEG q95, else PNG), EXIF
        orientation applied. ``None`` keeps the original bytes.
    shard_bytes
        Shard size, as in :class:`~datafuel.loaders.ShardWriter`.
    stratify
        Split each class separately (same fractions, seed + class index), so every
        split keeps the class proportions.
    overwrite
        ``out`` holding another kind of build (a table's ``recipe.json`` and shard
        sets, say) is refused; ``True`` removes that build first (only files datafuel
        wrote). A rerun of an images build into the same ``out`` needs no flag.
    dedup, dedup_keep, dedup_distance
        ``"exact"`` (the default: the same decoded, EXIF-oriented pixels), ``"near"``
        (also a 64-bit DCT pHash within ``dedup_distance`` bits: re-encodes,
        resizes, small crops, brightness shifts) or ``"none"``. Each cluster goes to
        its first file's split; ``dedup_keep="one"`` writes only that file.
        ``dedup.json`` reports the clusters (see :mod:`datafuel.build._dedup`).

    Returns
    -------
    The common build summary (``counts`` per split, ``skipped`` files) plus
    ``classes`` and ``total`` (valid files). The same arguments give the same bytes.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from datafuel import build
    >>> src = pathlib.Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (src / c).mkdir()
    ...     for i in range(5):
    ...         color = (40 * i, 200 if c == "cat" else 0, 0)  # distinct: copies would cluster
    ...         Image.new("RGB", (32, 24), color).save(src / c / f"{i}.png")
    >>> s = build.images(src, tempfile.mkdtemp(), fractions=(0.6, 0.2, 0.2))
    >>> s["counts"], s["classes"]
    ({'train': 6, 'val': 2, 'test': 2}, ['cat', 'dog'])
    """
    if is_remote(out):  # a bucket: built in a local stage, uploaded as it is finished
        return run_remote(images, locals())
    if on_error not in ("fail", "skip"):
        raise ConfigError(f"on_error must be 'fail' or 'skip'. Got {on_error!r} instead.")
    check_int("max_side", max_side, none_ok=True)
    check_int("dedup_distance", dedup_distance, low=0, high=64)
    method, explicit = resolve_dedup(dedup, "images")
    check_keep(dedup_keep)
    timer = Timer()
    # absolute paths: Ray workers do not share this process's working directory
    root, out_dir = Path(os.path.abspath(inputs)), Path(out)
    classes, files = list_image_folder(root)
    _check_paths(root, out_dir)
    # one build at a time into out: a second gets LockedError naming this process
    with locked(out_dir, "build"), engine_for(engine) as runner:
        prepare_out(out_dir, "images", overwrite=overwrite)
        valid, skipped = _validate(runner, root, files, on_error, on_progress)
        timer.lap("validate")
        labels = np.array([lab for _, lab in valid], np.int64)
        if stratify:
            parts, record = stratified_indices(labels, len(classes), fractions, seed)
        else:
            parts, record = split_indices(len(valid), fractions, seed=seed)
        outcome = None
        if method != "none":
            parts, outcome = _dedup_split(
                runner, valid, parts, record, method, dedup_keep, dedup_distance, on_progress
            )
            timer.lap("dedup")
        out_dir.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        for k, name in enumerate(SPLIT_NAMES):
            if record["fractions"][k] == 0:
                clear_split(out_dir, name)  # an earlier build's images must not stay there
                continue
            items = [valid[i] for i in parts[name].tolist()]
            counts[name] = _write_split(
                runner, out_dir, name, items, classes, max_side, shard_bytes, on_progress
            )
        timer.lap("write")
        files_of = {
            name: [valid[i][0].relative_to(root).as_posix() for i in parts[name].tolist()]
            for name in counts
        }
        dedup_info = None
        if outcome is not None and (explicit or outcome.found):
            write_dedup_report(
                out_dir,
                outcome,
                kind="images",
                unit="image files",
                describe=lambda k: valid[k][0].relative_to(root).as_posix(),
            )
            dedup_info = outcome.split_entry()
            record["dedup"] = dedup_info
        write_split_record(out_dir, {**record, "unit": "image files", "files": files_of})
        atomic_write_json(out_dir / "skipped.json", {"count": len(skipped), "files": skipped})
    return make_summary(
        "images",
        out_dir,
        counts=counts,
        fitted={},
        skipped=len(skipped),
        engine=runner,
        seconds=timer.seconds(),
        classes=classes,
        total=len(valid),
        dedup=dedup_info,
    )
