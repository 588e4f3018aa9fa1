"""The fast JSON decoder (msgspec) gives what ``json.loads`` gives, or hands the body to it.

:meth:`ResponseLimits.parse` decodes a page with msgspec and falls back to
``json.loads`` for what msgspec refuses. These tests hold the two equal on generated
documents (big ints, floats at the edges, unicode, deep nesting) and on bodies that
only ``json.loads`` accepts (NaN, ``1e400``, UTF-16, lone surrogates), so the records a
run writes do not depend on which decoder read them.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datafuel.errors import IngestError
from datafuel.ingest import _limits
from datafuel.ingest._limits import ResponseLimits

pytestmark = pytest.mark.skipif(_limits._fast_decode is None, reason="msgspec not installed")

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_documents = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (1 and 1.0 and True differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    return bool(a == b)


@settings(max_examples=300, deadline=None)
@given(_documents, st.booleans())
def test_parse_equals_json_loads_on_generated_documents(doc: Any, ascii_only: bool) -> None:
    body = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8")
    got = ResponseLimits().parse(body, where="page 0")
    assert _same(got, json.loads(body))


@pytest.mark.parametrize(
    "body",
    [
        b"[NaN, Infinity, -Infinity]",
        b'{"x": 1e400, "y": -1e400}',
        b'"\\ud800"',
        '{"a": ["\u00e9"]}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-32"),
        b'{"a": 1, "a": 2}',
        b'\xef\xbb\xbf{"bom": true}',
        b'{"big": 123456789012345678901234567890, "neg": -18446744073709551617}',
        b'{"f": 0.1, "g": 5e-324, "h": 1.7976931348623157e308, "z": -0.0}',
    ],
)
def test_bodies_only_json_loads_accepts_decode_as_json_loads_does(body: bytes) -> None:
    got = ResponseLimits().parse(body, where="page 0")
    assert _same(got, json.loads(body))


def test_big_ints_stay_exact() -> None:
    body = b'{"data": [18446744073709551616, -9223372036854775809, 9007199254740993]}'
    got = ResponseLimits().parse(body, where="page 0")
    assert got["data"] == [2**64, -(2**63) - 1, 2**53 + 1]
    assert all(type(v) is int for v in got["data"])


@pytest.mark.parametrize("body", [b"{", b"[1,]", b'{"a": 1} x', b'"a\x01b"', b"\xff", b"", b"01"])
def test_malformed_bodies_raise_value_error_as_json_loads(body: bytes) -> None:
    with pytest.raises(ValueError) as fast:
        ResponseLimits().parse(body, where="page 0")
    with pytest.raises(ValueError) as plain:
        json.loads(body)
    assert type(fast.value) is type(plain.value)  # the source's retry sees the same error


def test_nesting_at_and_beyond_the_limit() -> None:
    limits = ResponseLimits(max_depth=300)
    at = b"[" * 300 + b"]" * 300
    value = limits.parse(at, where="page 3")
    for _ in range(299):
        value = value[0]
    assert value == []
    with pytest.raises(IngestError, match="nested deeper than --max-depth 300"):
        limits.parse(b"[" * 301 + b"]" * 301, where="page 3")
    # brackets inside strings do not count: a wide, shallow page decodes (by either path)
    shallow = json.dumps({"s": "[" * 5000, "t": ["]" * 5000]}).encode()
    assert limits.parse(shallow, where="page 3") == json.loads(shallow)
