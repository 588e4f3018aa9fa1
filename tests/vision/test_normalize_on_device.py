from __future__ import annotations

import numpy as np
import pytest
import torch

from datafuel.errors import SchemaError
from datafuel.vision import normalize_on_device
from datafuel.vision._spec import IMAGENET_MEAN, IMAGENET_STD


def test_uint8_hwc_becomes_normalised_nchw_channels_last() -> None:
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8))
    y = normalize_on_device(x)
    assert y.shape == (2, 3, 5, 7) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    expected = (x.numpy().astype(np.float64) - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(y.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-5, atol=1e-5)
    half = normalize_on_device(x, mean=(0, 0, 0), std=(255, 255, 255), dtype=torch.float64)
    assert half.dtype == torch.float64 and float(half.max()) <= 1.0


def test_wrong_layout_is_refused() -> None:
    with pytest.raises(SchemaError, match=r"\(B, H, W, 3\)"):
        normalize_on_device(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
