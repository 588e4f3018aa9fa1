"""Scaling: standard and min-max scalers with streaming ``partial_fit``.

Fitted on the train split only; float32 in, float32 out; constant columns never
divide by zero.
"""

from __future__ import annotations

from ._minmax import MinMaxScaler
from ._standard import StandardScaler

__all__ = ["MinMaxScaler", "StandardScaler"]
