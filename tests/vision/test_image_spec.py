from __future__ import annotations

import pytest

from datafuel.errors import ConfigError
from datafuel.vision import (
    CenterCrop,
    HorizontalFlip,
    ImageSpec,
    Normalize,
    RandomResizedCrop,
    Resize,
    Rotate,
)


def test_train_and_eval_specs_declare_their_output() -> None:
    t = ImageSpec.train(160)
    assert t.output_spec == {"image": ("uint8", (160, 160, 3))}
    assert t.random_crop == RandomResizedCrop(160) and t.flip_p == 0.5 and t.max_degrees == 0
    e = ImageSpec.eval(224)
    assert e.ops == (Resize(256), CenterCrop(224))
    assert e.output_spec == {"image": ("uint8", (224, 224, 3))}
    n = ImageSpec.train(64, normalize=True, rotate_degrees=10)
    assert n.output_spec == {"image": ("float32", (64, 64, 3))}
    assert "Rotate(10)" in n.describe() and "slow" in n.describe()
    assert "float32" in n.describe()
    assert ImageSpec.train(32) == ImageSpec([RandomResizedCrop(32), HorizontalFlip(0.5)])
    assert hash(ImageSpec.eval(32)) == hash(ImageSpec.eval(32))


@pytest.mark.parametrize(
    ("ops", "match"),
    [
        ([], "geometry"),
        ([HorizontalFlip()], "geometry"),
        ([Resize(256)], "geometry"),
        ([CenterCrop(224)], "geometry"),
        ([RandomResizedCrop(224), Resize(256), CenterCrop(224)], "not both"),
        ([HorizontalFlip(), RandomResizedCrop(224)], "order"),
        ([RandomResizedCrop(224), Normalize(), HorizontalFlip()], "order"),
        ([RandomResizedCrop(224), HorizontalFlip(), HorizontalFlip()], "once"),
        ([Resize(100), CenterCrop(224)], "larger than Resize"),
        (["flip"], "datafuel.vision ops"),
    ],
)
def test_bad_op_sequences_fail_at_construction(ops: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ImageSpec(ops)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: RandomResizedCrop(0), "size must be an int"),
        (lambda: RandomResizedCrop(224.0), "size must be an int"),  # type: ignore[arg-type]
        (lambda: RandomResizedCrop(224, scale=(0.5, 0.1)), "scale"),
        (lambda: RandomResizedCrop(224, scale=(0.0, 1.0)), "scale"),
        (lambda: RandomResizedCrop(224, scale=(0.1, 1.5)), "scale"),
        (lambda: RandomResizedCrop(224, ratio=(2.0, 1.0)), "ratio"),
        (lambda: RandomResizedCrop(224, ratio="wide"), "ratio"),  # type: ignore[arg-type]
        (lambda: HorizontalFlip(1.5), "p must be"),
        (lambda: Rotate(0), "max_degrees"),
        (lambda: Rotate(500), "max_degrees"),
        (lambda: Normalize(mean=(1, 2)), "mean"),
        (lambda: Normalize(std=(1, 0, 1)), "std must be > 0"),
        (lambda: ImageSpec([RandomResizedCrop(8)], draft="yes"), "draft"),  # type: ignore[arg-type]
    ],
)
def test_bad_op_parameters_name_the_parameter(make, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()
