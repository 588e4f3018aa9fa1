from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafuel.vision import ImageSpec, sample_params
from datafuel.vision._params import (
    center_crop_box,
    draft_scale,
    random_resized_crop_box,
    sample_rng,
)


@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(1, 3000),
    h=st.integers(1, 3000),
    lo=st.floats(0.01, 1.0),
    span=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_random_resized_crop_box_stays_inside_and_respects_bounds(
    w: int, h: int, lo: float, span: float, seed: int
) -> None:
    scale = (lo, min(1.0, lo + span))
    ratio = (3 / 4, 4 / 3)
    x0, y0, x1, y1 = random_resized_crop_box(w, h, scale, ratio, sample_rng(seed, 0, 0))
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    cw, ch = x1 - x0, y1 - y0
    if cw == w and ch == h:
        return  # the fallback (whole image) when no try fits
    if (cw == w or ch == h) and (x0, y0) == ((w - cw) // 2, (h - ch) // 2):
        return  # the fallback: central crop clamped to the ratio
    # a successful try: area and aspect within bounds, up to integer rounding
    area = w * h
    assert scale[0] * area - (cw + ch + 1) <= cw * ch <= scale[1] * area + (cw + ch + 1)
    assert ratio[0] - 1.0 / min(cw, ch) - 1e-9 <= cw / ch <= ratio[1] + 1.0 / min(cw, ch) + 1e-9


def test_random_crops_cover_the_scale_range_statistically() -> None:
    w, h = 500, 375
    fracs, aspects = [], []
    for i in range(2000):
        x0, y0, x1, y1 = random_resized_crop_box(
            w, h, (0.08, 1.0), (3 / 4, 4 / 3), sample_rng(0, 0, i)
        )
        fracs.append((x1 - x0) * (y1 - y0) / (w * h))
        x0, y0, x1, y1 = random_resized_crop_box(
            400, 400, (0.08, 1.0), (3 / 4, 4 / 3), sample_rng(0, 0, i)
        )
        aspects.append(math.log((x1 - x0) / (y1 - y0)))
    fracs_a = np.array(fracs)
    assert fracs_a.min() < 0.1 and fracs_a.max() > 0.9
    assert 0.4 < np.median(fracs_a) < 0.65  # uniform area on [0.08, 1], a few large tries rejected
    assert abs(np.mean(aspects)) < 0.03  # log-uniform ratio: symmetric on a square image


def test_fallback_is_a_central_crop_clamped_to_ratio() -> None:
    # a 1000x10 strip: no try fits the ratio bounds, so the fallback crops the centre
    x0, y0, x1, y1 = random_resized_crop_box(
        1000, 10, (0.9, 1.0), (3 / 4, 4 / 3), sample_rng(0, 0, 0)
    )
    assert (y0, y1) == (0, 10) and x1 - x0 == round(10 * 4 / 3)
    assert x0 == (1000 - (x1 - x0)) // 2


def test_same_seed_epoch_index_gives_the_same_params_and_each_key_matters() -> None:
    spec = ImageSpec.train(224, rotate_degrees=20)
    a = sample_params(spec, 640, 480, seed=7, epoch=2, index=11)
    assert a == sample_params(spec, 640, 480, seed=7, epoch=2, index=11)
    others = [
        sample_params(spec, 640, 480, seed=8, epoch=2, index=11),
        sample_params(spec, 640, 480, seed=7, epoch=3, index=11),
        sample_params(spec, 640, 480, seed=7, epoch=2, index=12),
        sample_params(spec, 640, 480, seed=7, epoch=2, index=11, salt=1),
    ]
    assert all(o != a for o in others)
    assert -20 <= a.angle <= 20
    flips = [sample_params(spec, 640, 480, 0, 0, i).flip for i in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


@pytest.mark.parametrize(("w", "h"), [(500, 375), (375, 500), (256, 256), (1920, 1080), (100, 60)])
def test_center_crop_box_matches_resize_then_center_crop(w: int, h: int) -> None:
    x0, y0, x1, y1 = center_crop_box(w, h, 256, 224)
    short = min(w, h)
    # the box is 224/256 of the shorter side, centred (up to torchvision's integer rounding)
    assert abs((x0 + x1) / 2 - w / 2) <= w / 256 and abs((y0 + y1) / 2 - h / 2) <= h / 256
    assert min(x1 - x0, y1 - y0) == pytest.approx(224 / 256 * short, rel=0.01)
    spec = ImageSpec.eval(224)
    p = sample_params(spec, w, h, 0, 0, 0)
    assert p.box == (x0, y0, x1, y1) and not p.flip and p.angle == 0


def test_draft_scale_never_upsamples() -> None:
    assert draft_scale((0, 0, 223, 500), 224) == 1
    assert draft_scale((0, 0, 448, 448), 224) == 2
    assert draft_scale((10, 10, 10 + 900, 10 + 1000), 224) == 4
    assert draft_scale((0, 0, 1920, 1080), 128) == 8
    for a in (1, 2, 4, 8):
        side = 224 * a
        assert draft_scale((0, 0, side, side), 224) == a
        assert side / draft_scale((0, 0, side - 1, side - 1), 224) >= 224 - 1
