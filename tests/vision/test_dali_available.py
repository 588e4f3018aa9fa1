"""``dali_available()`` is a bool that reads the right way round; the reason is separate."""

from __future__ import annotations

import builtins
from typing import Any

import pytest

from datafuel.errors import ConfigError
from datafuel.vision import DALITransform, ImageSpec, dali_available, dali_unavailable_reason


def test_available_is_a_bool_agreeing_with_the_reason() -> None:
    available, reason = dali_available(), dali_unavailable_reason()
    assert isinstance(available, bool)
    assert available is (reason is None)


def test_without_dali_it_is_false_and_the_reason_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_import = builtins.__import__

    def no_dali(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "nvidia.dali" or name.startswith("nvidia.dali."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dali)
    assert dali_available() is False
    if dali_available():  # the way a caller writes it: must not run without DALI
        pytest.fail("dali_available() is truthy without DALI")
    reason = dali_unavailable_reason()
    assert reason is not None and "pip install nvidia-dali" in reason
    with pytest.raises(ConfigError, match="needs NVIDIA DALI: nvidia-dali is not installed"):
        DALITransform(ImageSpec.eval(32), device="cpu")
