"""Vision: decode, resize and augment encoded images on the CPU (pillow-simd) or with DALI.

One :class:`ImageSpec` describes the pipeline (decode, EXIF orientation, RGB,
RandomResizedCrop or Resize+CenterCrop, HorizontalFlip, Rotate, Normalize) and is
checked when built; :func:`loader_transform` turns it into the Loader's per-batch
transform on either backend; :func:`list_image_folder`, :func:`check_image` and
:func:`load_image` are the records ``datafuel.build.images`` writes as image shard sets.
"""

from __future__ import annotations

import typing as _typing

from datafuel._lazy import lazy_getattr as _lazy_getattr

from ._cpu import (
    CPUTransform,
    augment_image,
    batch_decode_available,
    pil_build,
    region_decode_available,
)
from ._dali import DALITransform, dali_available, dali_unavailable_reason
from ._decode import decode_image, image_info
from ._folder import IMAGE_FIELDS, check_image, list_image_folder, load_image
from ._loader import loader_transform
from ._params import SampleParams, sample_params
from ._spec import (
    CenterCrop,
    HorizontalFlip,
    ImageSpec,
    Normalize,
    RandomResizedCrop,
    Resize,
    Rotate,
)

if _typing.TYPE_CHECKING:
    from ._torch import normalize_on_device

# torch loads on first use: the CPU backend's worker processes (CPUTransform(processes=N))
# import this package and need only numpy and Pillow.
__getattr__ = _lazy_getattr(__name__, {"normalize_on_device": "._torch"})


__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "CPUTransform",
    "CenterCrop",
    "DALITransform",
    "HorizontalFlip",
    "IMAGE_FIELDS",
    "ImageSpec",
    "Normalize",
    "RandomResizedCrop",
    "Resize",
    "Rotate",
    "SampleParams",
    "augment_image",
    "batch_decode_available",
    "check_image",
    "dali_available",
    "dali_unavailable_reason",
    "decode_image",
    "image_info",
    "list_image_folder",
    "load_image",
    "loader_transform",
    "normalize_on_device",
    "pil_build",
    "region_decode_available",
    "sample_params",
]
