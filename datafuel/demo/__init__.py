"""The demo: sample data, a sample REST server, small models and the ``datafuel demo`` walkthrough.

Sample data, all deterministic and offline: an English-like corpus
(:func:`generate_documents`, :func:`write_corpus`, the shipped
:func:`sample_corpus_path`), an ImageFolder tree (:func:`write_sample_images`) and
house listings (:func:`sample_listings`) served by :class:`FakeAPI`, a local paginated
JSON API that injects faults on request (the ingest tests and benchmark use it too).
:class:`TinyLM`, :class:`TinyCNN` and :class:`TabularMLP` are the models the demo and
``examples/`` train. :func:`run_demo` runs the walkthrough, one step of :data:`STEPS`
at a time.

Importing this package does not import torch: the models load on first use.

Examples
--------
>>> from datafuel.demo import FakeAPI, sample_listings
>>> with FakeAPI(sample_listings()[:25], page_size=10) as api:
...     api.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import typing as _typing

from datafuel._lazy import lazy_getattr as _lazy_getattr

from ._api import FakeAPI, ServedRequest, decode_cursor, encode_cursor
from ._context import STEPS, DemoContext
from ._corpus import generate_documents, sample_corpus_path, write_corpus
from ._images import IMAGE_CLASSES, write_sample_images
from ._listings import LISTINGS_DRIFT_AT, sample_listings
from ._run import run_demo

if _typing.TYPE_CHECKING:
    from ._models import TabularMLP, TinyCNN, TinyLM

# The models need torch; they load on first use so sample data and the API stay light.
__getattr__ = _lazy_getattr(
    __name__, {"TabularMLP": "._models", "TinyCNN": "._models", "TinyLM": "._models"}
)

__all__ = [  # noqa: RUF022 - plain sorted(), as tests/test_public_api.py checks
    "DemoContext",
    "FakeAPI",
    "IMAGE_CLASSES",
    "LISTINGS_DRIFT_AT",
    "STEPS",
    "ServedRequest",
    "TabularMLP",
    "TinyCNN",
    "TinyLM",
    "decode_cursor",
    "encode_cursor",
    "generate_documents",
    "run_demo",
    "sample_corpus_path",
    "sample_listings",
    "write_corpus",
    "write_sample_images",
]
