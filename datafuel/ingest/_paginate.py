"""Paginators: page number, offset/limit, cursor from a body field, RFC 8288 ``Link``.

A paginator turns one page's response into the request for the next page, or ``None``
when the listing is over. Requests are plain JSON-able values (:class:`PageRequest`),
so the checkpoint can store "the next request" and a rerun continues from it.

Stop conditions: an empty page (every paginator), a missing/null cursor, a missing
``rel="next"`` link. Loop detection: a cursor or next link seen twice in one listing
is a :class:`~datafuel.errors.PaginationError`, not an infinite loop.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any
from urllib.parse import urlencode, urljoin

from datafuel.errors import ConfigError, PaginationError

from ._secrets import REDACTED, is_secret_param, redact_url

__all__ = [
    "CursorPaginator",
    "LinkPaginator",
    "OffsetPaginator",
    "PagePaginator",
    "PageRequest",
    "PageResponse",
    "Paginator",
    "get_path",
    "make_paginator",
    "parse_link_header",
]

#: How many cursor fingerprints the checkpoint keeps for loop detection across reruns
#: (within one run every cursor is remembered).
SEEN_WINDOW = 256


@dataclass(frozen=True)
class PageRequest:
    """One GET request: ``url`` plus query ``params``; ``index`` is the 0-based page number.

    ``secret_params`` names query parameters to redact besides the usual secret names
    (see :mod:`datafuel.ingest._secrets`): :meth:`describe` and :meth:`to_json` (what
    messages and the checkpoint show) hold ``***`` in place of their values;
    :meth:`full_url` is what is sent.
    """

    url: str
    params: tuple[tuple[str, str], ...] = ()
    index: int = 0
    secret_params: tuple[str, ...] = dc_field(default=(), compare=False, repr=False)

    def full_url(self) -> str:
        """The URL with its query string, secrets included: what is requested."""
        if not self.params:
            return self.url
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{urlencode(self.params)}"

    def describe(self) -> str:
        """The URL with its query string, secret values as ``***`` (never headers)."""
        return redact_url(self.full_url(), self.secret_params)

    def to_json(self) -> dict[str, Any]:
        """What the checkpoint stores: secret values as ``***``."""
        params = [
            [k, REDACTED if is_secret_param(k, self.secret_params) else v] for k, v in self.params
        ]
        return {
            "url": redact_url(self.url, self.secret_params),
            "params": params,
            "index": self.index,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> PageRequest:
        return cls(
            url=str(obj["url"]),
            params=tuple((str(k), str(v)) for k, v in obj["params"]),
            index=int(obj["index"]),
        )


@dataclass
class PageResponse:
    """What a paginator may look at: the parsed body, headers, final URL and records.

    ``size`` is the body's length in bytes as received (what it costs to keep it).
    """

    body: Any
    headers: Mapping[str, str]
    url: str
    records: Sequence[Any]
    size: int = 0


class RecordCount(Sequence[Any]):
    """A flattened page's ``records`` once the records themselves are dropped: only their count.

    :class:`~datafuel.ingest._concurrent.ConcurrentFetcher` flattens each page on its
    fetch thread; pages then wait in its buffer for the writer, often long enough for
    the garbage collector to move their record dicts into its oldest generation, and every
    object moved there costs a share of a full collection (about 0.25 ms a page of 100
    nested records here, a sixth of the client's time). Page and offset pagination need
    only the count once the page is flattened, so the dicts are freed on the fetch thread.
    Reading a record from it is a bug, and raises.

    Examples
    --------
    >>> r = RecordCount(3); len(r), bool(r), bool(RecordCount(0))
    (3, True, False)
    """

    __slots__ = ("_n",)

    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        raise TypeError("this page's records were dropped once it was flattened into columns")

    def __repr__(self) -> str:
        return f"RecordCount({self._n})"


def get_path(obj: Any, path: str) -> Any:
    """Follow a dotted ``path`` (``"data.items"``) into nested dicts; ``KeyError`` if absent."""
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(part)
        cur = cur[part]
    return cur


def _fingerprint(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def _with_params(base: Sequence[tuple[str, str]], **updates: Any) -> tuple[tuple[str, str], ...]:
    keep = [(k, v) for k, v in base if k not in updates]
    keep += [(k, str(v)) for k, v in updates.items() if v is not None]
    return tuple(keep)


_LINK_RE = re.compile(r'<([^>]*)>((?:\s*;\s*[^;,=\s]+\s*(?:=\s*(?:"[^"]*"|[^;,]*))?)*)')
_PARAM_RE = re.compile(r";\s*([^=;,\s]+)\s*(?:=\s*(\"[^\"]*\"|[^;,]*))?")


def parse_link_header(value: str) -> dict[str, str]:
    """Map each ``rel`` of an RFC 8288 ``Link`` header to its target URL (first one wins).

    Examples
    --------
    >>> parse_link_header('<https://x/items?page=2>; rel="next", <https://x/items?page=9>; rel="last"')
    {'next': 'https://x/items?page=2', 'last': 'https://x/items?page=9'}
    """
    links: dict[str, str] = {}
    for match in _LINK_RE.finditer(value):
        target, params = match.group(1).strip(), match.group(2)
        for pm in _PARAM_RE.finditer(params):
            if pm.group(1).lower() != "rel" or pm.group(2) is None:
                continue
            for rel in pm.group(2).strip().strip('"').lower().split():
                links.setdefault(rel, target)
    return links


@dataclass
class Paginator:
    """Base class: subclasses implement :meth:`first` and :meth:`next`."""

    seen: list[str] = dc_field(default_factory=list, repr=False)

    @property
    def spec(self) -> str:
        raise NotImplementedError

    def first(self, url: str, page_size: int | None) -> PageRequest:
        raise NotImplementedError

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        raise NotImplementedError

    def stop_reason(self) -> str:
        return "empty page"

    def planned(self, first: PageRequest, index: int, step: int) -> PageRequest | None:
        """The request for page ``index`` knowing only ``first`` and the page size ``step``.

        ``None`` (the default) when the next request depends on the last response
        (cursor, link): such a listing is walked one page at a time. Page and offset
        paginators override it, which lets :mod:`._concurrent` keep many in flight.
        """
        return None

    def position(self, request: PageRequest, step: int) -> int:
        """How many records of the listing come before ``request``'s page."""
        return request.index * step

    # loop detection ------------------------------------------------------------------
    def _remember(
        self, value: str, request: PageRequest, what: str, *, shown: str | None = None
    ) -> None:
        fp = _fingerprint(value)
        if fp in self._seen_set():
            raise PaginationError(
                f"page {request.index} ({request.describe()}) points to the same {what} "
                f"{shown if shown is not None else value!r} as an earlier page: the listing loops; stopping instead of "
                "fetching forever",
                page=request.index,
            )
        self.seen.append(fp)
        self._set.add(fp)  # every cursor of this run; the list keeps the checkpoint window
        if len(self.seen) > 2 * SEEN_WINDOW:
            del self.seen[:-SEEN_WINDOW]

    def _seen_set(self) -> set[str]:
        if not hasattr(self, "_set"):
            self._set: set[str] = set(self.seen)
        return self._set

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen[-SEEN_WINDOW:]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.seen = [str(s) for s in state["seen"]]
        self._set = set(self.seen)


@dataclass
class PagePaginator(Paginator):
    """``?page=1``, ``?page=2``, ... until an empty page."""

    page_param: str = "page"
    size_param: str = "page_size"
    first_page: int = 1

    @property
    def spec(self) -> str:
        return "page"

    def first(self, url: str, page_size: int | None) -> PageRequest:
        return PageRequest(
            url,
            _with_params((), **{self.page_param: self.first_page, self.size_param: page_size}),
            0,
        )

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        if not response.records:
            return None
        number = self._number(request) + 1  # from the request: a later run restarts at page 1
        return PageRequest(
            request.url,
            _with_params(request.params, **{self.page_param: number}),
            request.index + 1,
        )

    def _number(self, request: PageRequest) -> int:
        value = dict(request.params).get(self.page_param)
        try:
            return int(value) if value is not None else self.first_page + request.index
        except ValueError:
            raise PaginationError(
                f"page {request.index} ({request.describe()}): --paginate page needs an integer "
                f"{self.page_param!r} parameter. Got {value!r} instead.",
                page=request.index,
                field=self.page_param,
            ) from None

    def position(self, request: PageRequest, step: int) -> int:
        return (self._number(request) - self.first_page) * step

    def planned(self, first: PageRequest, index: int, step: int) -> PageRequest | None:
        number = self._number(first) + (index - first.index)
        return PageRequest(
            first.url, _with_params(first.params, **{self.page_param: number}), index
        )


@dataclass
class OffsetPaginator(Paginator):
    """``?offset=0&limit=N``; the offset advances by the records received."""

    offset_param: str = "offset"
    limit_param: str = "limit"
    default_limit: int = 100

    @property
    def spec(self) -> str:
        return "offset"

    def first(self, url: str, page_size: int | None) -> PageRequest:
        limit = page_size if page_size is not None else self.default_limit
        return PageRequest(
            url, _with_params((), **{self.offset_param: 0, self.limit_param: limit}), 0
        )

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        if not response.records:
            return None
        offset = int(dict(request.params).get(self.offset_param, "0")) + len(response.records)
        return PageRequest(
            request.url,
            _with_params(request.params, **{self.offset_param: offset}),
            request.index + 1,
        )

    def position(self, request: PageRequest, step: int) -> int:
        return int(dict(request.params).get(self.offset_param, "0"))

    def planned(self, first: PageRequest, index: int, step: int) -> PageRequest | None:
        start = int(dict(first.params).get(self.offset_param, "0"))
        offset = start + (index - first.index) * step
        return PageRequest(
            first.url, _with_params(first.params, **{self.offset_param: offset}), index
        )


@dataclass
class CursorPaginator(Paginator):
    """The next cursor is read from a body field (dotted path) and sent as ``?cursor=``.

    A cursor that is an absolute ``http(s)://`` URL is followed as the next URL.
    """

    field: str = "next"
    cursor_param: str = "cursor"
    size_param: str = "limit"
    _last_reason: str = dc_field(default="empty page", init=False, repr=False)

    @property
    def spec(self) -> str:
        return f"cursor:{self.field}"

    def first(self, url: str, page_size: int | None) -> PageRequest:
        return PageRequest(url, _with_params((), **{self.size_param: page_size}), 0)

    def stop_reason(self) -> str:
        return self._last_reason

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        if not response.records:
            self._last_reason = "empty page"
            return None
        try:
            value = get_path(response.body, self.field)
        except KeyError:
            value = None
        if value is None or value == "" or value is False:
            self._last_reason = f"no cursor in field {self.field!r}"
            return None
        if not isinstance(value, (str, int, float)):
            raise PaginationError(
                f"page {request.index} ({request.describe()}): cursor field {self.field!r} "
                f"holds a {type(value).__name__}, expected a string or number",
                page=request.index,
                field=self.field,
            )
        cursor = str(value)
        self._remember(cursor, request, "cursor", shown=redact_url(cursor, request.secret_params))
        if cursor.startswith(("http://", "https://")):
            return PageRequest(cursor, (), request.index + 1)
        return PageRequest(
            request.url,
            _with_params(request.params, **{self.cursor_param: cursor}),
            request.index + 1,
        )


@dataclass
class LinkPaginator(Paginator):
    """Follow the RFC 8288 ``Link: <...>; rel="next"`` header (relative URLs resolved)."""

    size_param: str = "limit"
    _last_reason: str = dc_field(default="empty page", init=False, repr=False)

    @property
    def spec(self) -> str:
        return "link"

    def first(self, url: str, page_size: int | None) -> PageRequest:
        return PageRequest(url, _with_params((), **{self.size_param: page_size}), 0)

    def stop_reason(self) -> str:
        return self._last_reason

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        if not response.records:
            self._last_reason = "empty page"
            return None
        header = response.headers.get("link")
        target = parse_link_header(header).get("next") if header else None
        if not target:
            self._last_reason = "no rel=next link"
            return None
        absolute = urljoin(response.url, target)
        self._remember(
            absolute, request, "next link", shown=redact_url(absolute, request.secret_params)
        )
        return PageRequest(absolute, (), request.index + 1)


def make_paginator(spec: str) -> Paginator:
    """Build a paginator from the CLI spelling: ``page``, ``offset``, ``cursor:FIELD``, ``link``.

    Examples
    --------
    >>> make_paginator("cursor:meta.next").field
    'meta.next'
    """
    text = spec.strip()
    if text == "page":
        return PagePaginator()
    if text == "offset":
        return OffsetPaginator()
    if text == "link":
        return LinkPaginator()
    if text.startswith("cursor:") and text[len("cursor:") :].strip():
        return CursorPaginator(field=text[len("cursor:") :].strip())
    raise ConfigError(
        f"--paginate must be one of page, offset, cursor:FIELD, link. Got {spec!r} instead."
    )
