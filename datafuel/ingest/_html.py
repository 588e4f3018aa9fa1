"""HTML listings: records from CSS selectors, the next page from a link, ``robots.txt``.

The parser is selectolax's Lexbor backend: a C implementation of the WHATWG HTML5
parsing algorithm (what browsers do), so malformed markup (unclosed tags, stray
``</div>``) parses the way a browser shows it instead of raising; it is several times
faster than lxml and has no Python dependencies (parsel would add lxml, cssselect and
w3lib). It is an optional dependency: ``pip install selectolax`` (``datafuel[html]``).

Selectors follow parsel's spelling: ``'h2::text'`` (the element's text, stripped),
``'a::attr(href)'`` (an attribute; ``href``/``src`` are resolved against the page URL)
and a bare ``'h2'`` (its text). A field whose selector matches nothing is null.
"""

from __future__ import annotations

import json
import re
import urllib.robotparser
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from datafuel.errors import ConfigError, IngestError

from ._paginate import CursorPaginator, PageRequest, PageResponse
from ._secrets import redact_url

__all__ = ["DEFAULT_HTML_RATE", "HtmlPaginator", "HtmlSpec", "RobotsPolicy", "parse_field"]

#: requests per second for HTML listings unless --rate says otherwise (polite crawling)
DEFAULT_HTML_RATE = 1.0
USER_AGENT = "datafuel-ingest"
_PSEUDO = re.compile(r"^(?P<css>.*?)(?:::(?P<kind>text|attr)(?:\((?P<attr>[^)]*)\))?)?$", re.S)
_URL_ATTRS = frozenset({"href", "src"})
#: a path-absolute reference (``/item/7?x=1#top``) with no dot segment, empty segment,
#: ``;``, empty query or empty fragment, of plain URL characters only: ``urljoin`` gives
#: the base's origin + it verbatim
_PLAIN_PATH = re.compile(
    r"/(?:[A-Za-z0-9_~!$&'()*+,=:@%-][A-Za-z0-9._~!$&'()*+,=:@%-]*"
    r"(?:/[A-Za-z0-9_~!$&'()*+,=:@%-][A-Za-z0-9._~!$&'()*+,=:@%-]*)*/?)?"
    r"(?:\?[A-Za-z0-9._~!$&'()*+,=:@%/?-]+)?(?:#[A-Za-z0-9._~!$&'()*+,=:@%/?#-]+)?\Z"
)


class _Base:
    """A page URL to resolve references against: ``urljoin``, with its result for the
    common ``/path`` reference built without re-parsing the base each time."""

    def __init__(self, url: str) -> None:
        self.url = url
        parts = urlsplit(url)
        plain = parts.scheme in ("http", "https") and bool(parts.netloc)
        self._origin = f"{parts.scheme}://{parts.netloc}" if plain else None

    def join(self, ref: str) -> str:
        if self._origin is not None and _PLAIN_PATH.match(ref):
            return self._origin + ref
        return urljoin(self.url, ref)


@dataclass(frozen=True)
class _Selector:
    css: str
    attr: str | None  # None: the text

    def first(self, node: Any, base: _Base) -> str | None:
        found = node.css_first(self.css) if self.css else node
        if found is None:
            return None
        if self.attr is None:
            text = found.text(separator=" ", strip=True)
            return " ".join(text.split()) or None
        value = found.attributes.get(self.attr)
        if value is None:
            return None
        return base.join(value.strip()) if self.attr in _URL_ATTRS else value


def _selector(text: str, what: str) -> _Selector:
    m = _PSEUDO.match(text.strip())
    if m is None or (m.group("kind") == "attr" and not m.group("attr")):
        raise ConfigError(
            f"{what} must be CSS, CSS::text or CSS::attr(NAME). Got {text!r} instead."
        )
    return _Selector(m.group("css").strip(), m.group("attr") if m.group("kind") == "attr" else None)


def parse_field(text: str) -> tuple[str, str]:
    """``'name=h2::text'`` -> ``("name", "h2::text")``."""
    name, sep, sel = text.partition("=")
    if not sep or not name.strip() or not sel.strip():
        raise ConfigError(f"--field must look like NAME=SELECTOR. Got {text!r} instead.")
    return name.strip(), sel.strip()


class HtmlSpec:
    """What to pull from each HTML page.

    Parameters
    ----------
    select
        CSS selector of one record's element (``'article.listing'``).
    fields
        Column name -> selector inside that element.
    next
        Selector of the next page's URL (``'a[rel=next]::attr(href)'``), or ``None``.

    Examples
    --------
    >>> spec = HtmlSpec("li", {"name": "b::text", "url": "a::attr(href)"}, "a.next::attr(href)")
    >>> body = b'<ul><li><b>x</b><a href="/1">1</a></li></ul><a class=next href="?p=2">n</a>'
    >>> spec.extract(body, "http://h/list")  # doctest: +SKIP
    ([{'name': 'x', 'url': 'http://h/1'}], 'http://h/list?p=2')
    """

    def __init__(
        self,
        select: str,
        fields: Mapping[str, str],
        next: str | None = None,
        *,
        on_empty: str = "skip",
    ) -> None:
        if on_empty not in ("fail", "skip"):
            raise ConfigError(f"--on-empty must be fail or skip. Got {on_empty!r} instead.")
        self.on_empty = on_empty
        if not select or not select.strip():
            raise ConfigError("--select must be a CSS selector of a record. Got an empty one.")
        if not fields:
            raise ConfigError("an HTML listing needs at least one --field NAME=SELECTOR")
        self.select = select.strip()
        self.fields = {name: _selector(sel, f"--field {name}") for name, sel in fields.items()}
        self.next = _selector(next, "--next") if next else None
        self.spec = {"select": self.select, "fields": dict(fields), "next": next}
        try:
            from selectolax.lexbor import LexborHTMLParser
        except ImportError as exc:
            raise ConfigError(
                "HTML listings need selectolax: pip install selectolax (or datafuel[html])"
            ) from exc
        self._parser = LexborHTMLParser

    def extract(self, body: bytes, url: str) -> tuple[list[dict[str, Any]], str | None]:
        """The page's records and the absolute URL of the next page (``None``: the last)."""
        tree = self._parser(body)
        base = _Base(url)
        fields = list(self.fields.items())
        records = [
            {name: sel.first(node, base) for name, sel in fields} for node in tree.css(self.select)
        ]
        nxt = self.next.first(tree, base) if self.next is not None else None
        if nxt is not None and self.next is not None and self.next.attr not in _URL_ATTRS:
            nxt = urljoin(url, nxt)
        return records, nxt


class RobotsPolicy:
    """``robots.txt`` of the start URL's origin, read once; :meth:`check` refuses a URL."""

    def __init__(self, origin: str, lines: Sequence[str] | None) -> None:
        self.origin = origin
        self._parser = urllib.robotparser.RobotFileParser()
        self._parser.parse(list(lines) if lines is not None else [])

    def check(self, url: str, shown: str, page: int) -> None:
        """Refuse ``url`` if ``robots.txt`` disallows it (``shown``: the URL, secrets redacted)."""
        if not self._parser.can_fetch(USER_AGENT, url):
            raise IngestError(
                f"page {page}: {self.origin}/robots.txt disallows {shown} for {USER_AGENT!r}; "
                "not fetching it (--ignore-robots to override, if you may)",
                page=page,
            )


class HtmlPaginator(CursorPaginator):
    """Follow the ``--next`` link of an HTML listing (relative URLs resolved).

    A page where ``--select`` matches nothing is layout drift, not the end: with
    ``on_empty="skip"`` its next link is still followed; with ``"fail"`` the source has
    refused it already (:class:`IngestError` naming the page).
    """

    def __init__(self, spec: HtmlSpec) -> None:
        super().__init__(field="next")
        self.html = spec
        self._last_reason = "no next link"

    @property
    def spec(self) -> str:
        return "html " + json.dumps(self.html.spec, sort_keys=True, separators=(",", ":"))

    def next(self, request: PageRequest, response: PageResponse) -> PageRequest | None:
        target = response.body.get("next") if isinstance(response.body, dict) else None
        if not target:
            self._last_reason = "no next link"
            return None
        self._remember(
            target, request, "next link", shown=redact_url(target, request.secret_params)
        )
        return PageRequest(target, (), request.index + 1)
