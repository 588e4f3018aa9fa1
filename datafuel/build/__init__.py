"""Builds: one Python call per ``datafuel`` verb, composed from the stages' pure pieces.

Every build has one shape::

    build.<kind>(inputs, out, *, fractions=(0.8, 0.1, 0.1), seed=0, engine=None,
                 on_progress=None, ...) -> summary

It reads its inputs, splits them before anything is fitted, fits on the train split
only (``recipe.json``, ``tokenizer.json``), hands its per-record units to an
:class:`~datafuel.engine.Engine` (local threads by default, or Ray: the same bytes
either way), and writes ``split.json``. Each returns a summary with the same keys
(:data:`SUMMARY_KEYS`: ``counts`` per shard set, ``out``, what was ``fitted``, what
was ``skipped``, ``engine``, ``seconds``, ``kind``) plus its kind's own.

========================  ===========================  ==================================
call                      command                      writes
========================  ===========================  ==================================
:func:`table`             ``datafuel build table``     ``train/val/test``, ``recipe.json``
:func:`images`            ``datafuel build images``    ``train/val/test``, ``skipped.json``
:func:`text`              ``datafuel build text``      ``train/val/test``, ``tokenizer.json``
:func:`resample`          ``datafuel resample``        one shard set and its report
:func:`profile`           ``datafuel profile``         nothing: a loader starvation report
:func:`apply`             ``datafuel apply``           one shard set, with a saved recipe
========================  ===========================  ==================================

``resample`` takes one split and splits nothing, so it has no ``fractions``;
``profile`` writes nothing, so it has no ``out`` and no engine.

Examples
--------
>>> import tempfile
>>> from importlib.resources import files
>>> from datafuel import build
>>> s = build.table(str(files("datafuel") / "data" / "houses.csv"), tempfile.mkdtemp(),
...                 target="price", drop=["id"])
>>> sorted(set(build.SUMMARY_KEYS) - set(s)), s["kind"], s["engine"]
([], 'table', 'local')
"""

from __future__ import annotations

import typing as _typing

from datafuel._lazy import lazy_getattr as _lazy_getattr

from ._common import SUMMARY_KEYS, Progress

if _typing.TYPE_CHECKING:
    from ._apply import apply
    from ._audit import audit
    from ._images import images
    from ._profile import profile
    from ._resample import resample
    from ._table import table
    from ._tablecols import read_table
    from ._text import text

# each build loads its stages on first use: `datafuel build table` never imports
# tokenizers, torch or the image decoders
__getattr__ = _lazy_getattr(
    __name__,
    {
        "apply": "._apply",
        "audit": "._audit",
        "images": "._images",
        "profile": "._profile",
        "read_table": "._tablecols",
        "resample": "._resample",
        "table": "._table",
        "text": "._text",
    },
)

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "Progress",
    "SUMMARY_KEYS",
    "apply",
    "audit",
    "images",
    "profile",
    "read_table",
    "resample",
    "table",
    "text",
]
