"""An ImageFolder tree as records: listing, validation, and the bytes stored per image.

:func:`datafuel.build.images` composes these into ``datafuel build images``. Layout read: ``INPUT_DIR/<class name>/<any sub-path>/<file>``; classes are the
sorted sub-folder names (label = position), files are taken in sorted path order,
hidden files and folders (names starting with ``.``) are ignored. Every file is
fully decoded once to validate it (:func:`check_image`). Image shard sets hold the
encoded bytes (:data:`IMAGE_FIELDS`: ``image``, whatever the format, and an int64
``label``), the original file or a re-encode with ``max_side`` (:func:`load_image`).
Sets built before the rename call the bytes field ``jpeg``; :func:`image_field_of`
finds either.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from datafuel.errors import DecodeError, InputDataError
from datafuel.loaders import bytes_field, fixed

from ._decode import ORIENTATION_TRANSPOSE, PIL_ERRORS, image_info, open_image, orientation, to_rgb

__all__ = [
    "IMAGE_FIELD",
    "IMAGE_FIELDS",
    "LEGACY_IMAGE_FIELD",
    "check_image",
    "image_field_of",
    "list_image_folder",
    "load_image",
]

#: The encoded-image field of the image shard sets ``build images`` writes.
IMAGE_FIELD = "image"
#: Its name in sets built before the rename (the bytes were never only JPEG).
LEGACY_IMAGE_FIELD = "jpeg"
#: The fields of an image shard set.
IMAGE_FIELDS = {IMAGE_FIELD: bytes_field(), "label": fixed("int64")}


def image_field_of(names: Iterable[str]) -> str:
    """The encoded-image field among ``names``: ``image``, else the older ``jpeg``.

    With neither, ``image`` (what a caller's error should then name).
    """
    present = set(names)
    if IMAGE_FIELD not in present and LEGACY_IMAGE_FIELD in present:
        return LEGACY_IMAGE_FIELD
    return IMAGE_FIELD


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


def load_image(path: Path, max_side: int | None = None) -> bytes:
    """The bytes stored for one image file: the file itself, or a re-encode with ``max_side``.

    The file is fully decoded first, so a truncated or corrupt file raises
    :class:`~datafuel.errors.DecodeError` naming it.
    """
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


def check_image(path: Path) -> DecodeError | None:
    """Validate one file by a full decode: ``None``, or the :class:`DecodeError` naming it."""
    try:
        load_image(path)
    except DecodeError as exc:
        return exc
    return None
