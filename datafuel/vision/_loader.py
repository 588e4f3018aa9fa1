"""``loader_transform``: the one call that plugs the vision stage into the Loader."""

from __future__ import annotations

from typing import Any

from datafuel.errors import ConfigError, SchemaError

from ._cpu import CPUTransform
from ._dali import DALITransform
from ._folder import image_field_of
from ._spec import ImageSpec

__all__ = ["loader_transform"]


def loader_transform(
    shards: Any = None,
    backend: str = "cpu",
    *,
    train: bool = True,
    size: int = 224,
    seed: int = 0,
    spec: ImageSpec | None = None,
    flip_p: float = 0.5,
    rotate_degrees: float = 0.0,
    normalize: bool = False,
    threads: int | None = None,
    processes: int = 0,
    native: bool = True,
    batch_size: int = 256,
    device: str | None = None,
    image_field: str | None = None,
    label_field: str | None = "label",
) -> CPUTransform | DALITransform:
    """A per-batch transform for :class:`datafuel.loaders.Loader` over an image shard set.

    Parameters
    ----------
    shards
        The :class:`~datafuel.loaders.ShardSet` it will read (checked: a bytes field
        ``image_field`` and an int64 ``label_field``), or ``None`` to skip the check.
    image_field, label_field
        The encoded-image and label fields. ``image_field=None`` takes ``image``, or
        ``jpeg`` in a set built before the field was renamed (format note in
        ``datafuel/loaders/FORMAT.md``).
    backend
        ``"cpu"`` (Pillow/pillow-simd, :class:`CPUTransform`) or ``"dali"``
        (:class:`DALITransform`; nvJPEG when CUDA is available, else DALI on the CPU).
    train, size
        ``ImageSpec.train(size)`` (RandomResizedCrop + flip) or ``ImageSpec.eval(size)``
        (resize to size/0.875 + center crop). ``spec`` overrides both.
    seed
        Salt mixed with the loader's ``(seed, epoch, index)``: each sample's crop,
        flip and angle are a pure function of those, so resume is exact.
    threads, processes, native
        CPU backend: threads per batch (None: the native batch path shares the cores
        among the loader's workers), or worker processes per batch (0: none); native
        (default True): a batch's plain JPEGs in one native call without the GIL, no
        Python per image (see :class:`CPUTransform`).
    batch_size, device
        DALI backend: maximum batch per pipeline run, ``"cpu"`` or ``"mixed"``.

    Returns
    -------
    A transform with ``output_spec == {"image": ("uint8", (size, size, 3)), "label": ("int64", ())}``:
    images are HWC, channels last; use :func:`normalize_on_device` on the GPU.

    Examples
    --------
    >>> from datafuel.vision import loader_transform
    >>> t = loader_transform(None, "cpu", train=True, size=128)
    >>> t.output_spec["image"]
    ('uint8', (128, 128, 3))
    """
    if spec is None:
        spec = _default_spec(train, size, flip_p, rotate_degrees, normalize)
    if shards is not None:
        image_field = _check_shards(shards, image_field, label_field)
    return _make_transform(
        backend,
        spec,
        image_field=image_field,
        label_field=label_field,
        seed=seed,
        threads=threads,
        processes=processes,
        native=native,
        batch_size=batch_size,
        device=device,
    )


def _default_spec(
    train: bool, size: int, flip_p: float, rotate_degrees: float, normalize: bool
) -> ImageSpec:
    """``ImageSpec.train`` (RandomResizedCrop + flip + rotation) or ``ImageSpec.eval``."""
    if train:
        return ImageSpec.train(
            size, flip_p=flip_p, rotate_degrees=rotate_degrees, normalize=normalize
        )
    return ImageSpec.eval(size, normalize=normalize)


def _check_shards(shards: Any, image_field: str | None, label_field: str | None) -> str:
    """The image field; refuse a set without a bytes ``image_field`` or an int ``label_field``."""
    fields = getattr(shards, "fields", None)
    if not isinstance(fields, dict):
        raise ConfigError(
            f"shards must be a datafuel.loaders.ShardSet or None. Got {type(shards).__name__}."
        )
    if image_field is None:
        image_field = image_field_of(fields)
    where = getattr(shards, "directory", "the shard set")
    f = fields.get(image_field)
    if f is None or f.kind != "bytes":
        raise SchemaError(
            f"{where}: needs a bytes field {image_field!r} of encoded images (fields: {sorted(fields)}); "
            "build one with `datafuel build images`.",
            path=str(where),
            field=image_field,
        )
    if label_field is not None and not _is_int_scalar(fields.get(label_field)):
        raise SchemaError(
            f"{where}: needs an integer scalar field {label_field!r} (fields: {sorted(fields)}); "
            "pass label_field=None for unlabelled images.",
            path=str(where),
            field=label_field,
        )
    return image_field


def _is_int_scalar(field: Any) -> bool:
    """Whether a shard field holds one (unsigned) integer per sample."""
    return (
        field is not None
        and field.kind == "fixed"
        and field.shape == ()
        and field.dtype.startswith(("int", "uint"))
    )


def _make_transform(
    backend: str,
    spec: ImageSpec,
    *,
    image_field: str | None,
    label_field: str | None,
    seed: int,
    threads: int | None,
    processes: int,
    native: bool = True,
    batch_size: int,
    device: str | None,
) -> CPUTransform | DALITransform:
    """The backend's transform; each takes only its own options."""
    if backend == "cpu":
        return CPUTransform(
            spec,
            image_field=image_field,
            label_field=label_field,
            seed=seed,
            threads=threads,
            processes=processes,
            native=native,
        )
    if backend == "dali":
        return DALITransform(
            spec,
            device=device,
            batch_size=batch_size,
            image_field=image_field,
            label_field=label_field,
            seed=seed,
        )
    raise ConfigError(f"backend must be 'cpu' or 'dali'. Got {backend!r} instead.")
