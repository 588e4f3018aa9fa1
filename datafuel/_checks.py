"""Argument checks shared by every layer: one message shape for one kind of mistake.

Each raises :class:`~datafuel.errors.ConfigError` naming the parameter, the
constraint and the value received (sklearn's "must be an int in the range [2, 255].
Got 511 instead."). ``bool`` is refused where an int is asked for: ``True`` is an int
to Python, never a count to a user.
"""

from __future__ import annotations

from typing import Any

from datafuel.errors import ConfigError

__all__ = ["check_fraction", "check_int"]


def check_int(
    name: str,
    value: Any,
    *,
    low: int = 1,
    high: int | None = None,
    none_ok: bool = False,
) -> Any:
    """``value`` if it is an int in ``[low, high]`` (or ``None`` where allowed); else refuse.

    >>> check_int("batch_size", 8)
    8
    >>> check_int("batch_size", 0)
    Traceback (most recent call last):
    ...
    datafuel.errors.ConfigError: batch_size must be a positive int. Got 0 instead.
    """
    if value is None and none_ok:
        return value
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        if high is not None:
            what = f"an int in the range [{low}, {high}]"
        else:
            what = {1: "a positive int", 0: "a non-negative int"}.get(low, f"an int >= {low}")
        if none_ok:
            what += " or None"
        raise ConfigError(f"{name} must be {what}. Got {value!r} instead.")
    return value


def check_fraction(name: str, value: Any, *, low: float = 0.0, high: float = 1.0) -> float:
    """``float(value)`` if it is a real number in ``[low, high]``; else refuse.

    >>> check_fraction("p", 0.5)
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}]. Got {value!r} instead.")
    return float(value)
