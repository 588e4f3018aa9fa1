"""Device-side normalisation: ship uint8 HWC batches, widen and normalise on the GPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from datafuel.errors import SchemaError

from ._spec import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["normalize_on_device"]


def normalize_on_device(
    images: torch.Tensor,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(B, H, W, 3)`` uint8 images -> ``(B, 3, H, W)`` normalised floats, channels-last in memory.

    ``mean`` and ``std`` are in 0..255 units (ImageNet's by default). Run it after the
    loader has copied the batch to the device: a uint8 batch is 4x smaller to copy
    than float32, and the arithmetic is free on a GPU. The result is an NCHW tensor
    with ``torch.channels_last`` strides (what convolutions prefer on GPUs).

    >>> import torch
    >>> x = torch.full((2, 4, 4, 3), 255, dtype=torch.uint8)
    >>> y = normalize_on_device(x, mean=(0, 0, 0), std=(255, 255, 255))
    >>> y.shape, float(y.max())
    (torch.Size([2, 3, 4, 4]), 1.0)
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise SchemaError(
            f"images must be (B, H, W, 3), as datafuel.vision transforms return. Got shape {tuple(images.shape)}."
        )
    x = images.permute(0, 3, 1, 2).to(dtype)
    m = torch.as_tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)
