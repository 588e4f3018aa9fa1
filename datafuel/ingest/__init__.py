"""datafuel.ingest: REST API -> Parquet, resumable, exactly once, with schema drift.

One node per module: :mod:`._paginate` (page, offset, cursor, RFC 8288 link),
:mod:`._retry` (exponential backoff with full jitter, ``Retry-After``),
:mod:`._ratelimit`, :mod:`._source` (httpx GET + records path), :mod:`._flatten` and
:mod:`._schema` (nested objects -> ``parent.child``, lists -> JSON text, lossless
promotion, drift events), :mod:`._sink` (atomic Parquet parts), :mod:`._checkpoint`
(atomic JSON state, drift report) and :mod:`._ingest` (the loop that ties them).

Examples
--------
>>> from datafuel.ingest import ingest, read_ingested
>>> ingest("https://api.example.com/items", "out/items", paginate="cursor:next",
...        records_path="data.items", primary_key="id")  # doctest: +SKIP
>>> read_ingested("out/items").num_rows  # doctest: +SKIP
"""

from __future__ import annotations

from ._checkpoint import Checkpoint, DriftLog
from ._flatten import flatten_record
from ._ingest import IngestProgress, IngestResult, ingest
from ._paginate import (
    CursorPaginator,
    LinkPaginator,
    OffsetPaginator,
    PagePaginator,
    PageRequest,
    PageResponse,
    Paginator,
    make_paginator,
    parse_link_header,
)
from ._ratelimit import RateLimiter
from ._retry import RetryPolicy, parse_retry_after
from ._schema import DriftEvent, SchemaTracker
from ._sink import ParquetSink, read_ingested
from ._source import RestSource

__all__ = [
    "Checkpoint",
    "CursorPaginator",
    "DriftEvent",
    "DriftLog",
    "IngestProgress",
    "IngestResult",
    "LinkPaginator",
    "OffsetPaginator",
    "PagePaginator",
    "PageRequest",
    "PageResponse",
    "Paginator",
    "ParquetSink",
    "RateLimiter",
    "RestSource",
    "RetryPolicy",
    "SchemaTracker",
    "flatten_record",
    "ingest",
    "make_paginator",
    "parse_link_header",
    "parse_retry_after",
    "read_ingested",
]
