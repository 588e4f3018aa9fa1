"""Secrets in an ingest: which origins may see the user's headers, and what is redacted.

Headers the user gives (``--header``, ``headers=``) are sent only to the *origin*
(scheme, host, port) of the start URL and to the origins allowed explicitly
(``--allow-origin``, ``allow_origins=``) — on every request, whether its URL came from
the user, a paginator (a cursor or ``Link`` URL), a redirect, or a checkpoint.

Query parameters named like secrets (``key``, ``api_key``, ``apikey``, ``token``,
``access_token``, ``secret``, ``password``, ``signature``, ``sig``, and any name
ending in ``_`` or ``-`` plus one of them, such as ``x_api_key``; case-insensitive)
plus the names given with ``--secret-param`` are written and printed as ``***``
(``_state.json``, logs, error messages), and so is the password of a URL's userinfo.
The real values are still sent. A checkpoint therefore holds no secret: on resume the
redacted values are taken again from the user's start URL (:meth:`SecretPolicy.unredact`).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit, urlunsplit

import httpx

from datafuel.errors import ConfigError, IngestError

__all__ = [
    "REDACTED",
    "SECRET_PARAMS",
    "SecretPolicy",
    "check_headers",
    "is_secret_param",
    "origin",
    "redact_url",
]

#: What a secret is written as.
REDACTED = "***"

#: Query parameter names treated as secrets (also as a ``_``/``-`` suffix: ``x_api_key``).
SECRET_PARAMS = (
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "secret",
    "password",
    "signature",
    "sig",
)

_SECRET_RE = re.compile(
    r"(?:^|[_\-.])(?:" + "|".join(re.escape(n) for n in SECRET_PARAMS) + r")$", re.IGNORECASE
)
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_secret_param(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether a query parameter called ``name`` holds a secret.

    >>> [is_secret_param(n) for n in ("api_key", "X-Api-Key", "apikey", "monkey", "page")]
    [True, True, True, False, False]
    >>> is_secret_param("session", ["Session"])
    True
    """
    lowered = name.lower()
    return bool(_SECRET_RE.search(lowered)) or lowered in {e.lower() for e in extra}


@functools.lru_cache(maxsize=256)
def origin(url: str) -> str:
    """``scheme://host:port`` of ``url`` (default ports made explicit, host lower-cased).

    >>> origin("HTTPS://Api.Example.com/items?page=2")
    'https://api.example.com:443'
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"not a valid URL: {url!r} ({exc})") from exc
    scheme = parsed.scheme.lower()
    port = parsed.port or _DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{parsed.host.lower()}:{port}"


def check_headers(headers: Mapping[str, str]) -> None:
    """Refuse header names that are not tokens and values with CR, LF or non-ASCII.

    The error names the header, never its value (the value is usually a token).

    >>> check_headers({"X-Api-Key": "abc"})
    >>> check_headers({"X-Api-Key": "abc\\r\\nHost: evil"})
    Traceback (most recent call last):
    ...
    datafuel.errors.ConfigError: header 'X-Api-Key' has a value with a CR or LF in it ...
    """
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            raise ConfigError(
                f"header names must be non-empty tokens (letters, digits, !#$%&'*+.^_`|~-); "
                f"got {name!r}"
            )
        if not isinstance(value, str):
            raise ConfigError(
                f"header {name!r} must have a string value; got a {type(value).__name__}"
            )
        if "\r" in value or "\n" in value:
            raise ConfigError(
                f"header {name!r} has a value with a CR or LF in it (the value is not shown); "
                "a header value is one line"
            )
        if not value.isascii() or any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
            raise ConfigError(
                f"header {name!r} has a value with non-ASCII or control characters in it (the "
                "value is not shown); HTTP header values are printable ASCII"
            )


@dataclass(eq=False)
class SecretPolicy:
    """The origins that may see the user's headers, and the redaction of URLs and text.

    Parameters
    ----------
    start_url
        The user's start URL; its origin may see the headers, and its secret query
        values are what :meth:`unredact` puts back.
    allow_origins
        More origins (``https://host[:port]``) that may see the headers.
    secret_params
        More query parameter names to redact, besides :data:`SECRET_PARAMS`.
    headers
        The user's headers: their values are scrubbed from any text too.

    Examples
    --------
    >>> p = SecretPolicy("https://api.example.com/items?api_key=k3y&page=1")
    >>> p.redact("https://api.example.com/items?api_key=k3y&page=2")
    'https://api.example.com/items?api_key=***&page=2'
    >>> p.allowed("https://cdn.example.com/items")
    False
    """

    start_url: str = field(repr=False)  # its query may hold secrets; so may the headers
    allow_origins: Iterable[str] = ()
    secret_params: Iterable[str] = ()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.secret_params = tuple(self.secret_params)
        for name in self.secret_params:
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(f"secret_params must be non-empty names. Got {name!r} instead.")
        allowed = {origin(self.start_url)}
        for o in self.allow_origins:
            allowed.add(_check_origin(o))
        self.origins = frozenset(allowed)
        self._secrets: set[str] = {v for v in self.headers.values() if len(v) >= 4}
        split = urlsplit(self.start_url)
        self._start_values: dict[str, str] = {}
        for k, v in parse_qsl(split.query, keep_blank_values=True):
            if self.is_secret(k):
                self._start_values.setdefault(k, v)
                self._remember(v)
        self._start_password = split.password
        if split.password:
            self._remember(split.password)

    # what is secret ---------------------------------------------------------------------
    def is_secret(self, name: str) -> bool:
        return is_secret_param(name, self.secret_params)  # type: ignore[arg-type]

    def allowed(self, url: str) -> bool:
        """Whether ``url`` is on an origin that may see the user's headers."""
        try:
            return origin(url) in self.origins
        except ConfigError:
            return False

    def headers_for(self, url: str) -> dict[str, str]:
        """The user's headers if ``url`` may see them, else none."""
        return dict(self.headers) if self.allowed(url) else {}

    def _remember(self, value: str) -> None:
        if len(value) >= 4:  # scrubbing "1" out of every message would only garble them
            self._secrets.add(value)

    # redaction --------------------------------------------------------------------------
    def redact(self, url: str) -> str:
        """``url`` with secret query values and the userinfo password as ``***``."""
        return redact_url(url, self.secret_params, seen=self._remember)  # type: ignore[arg-type]

    def _note(self, name: str, value: str) -> bool:
        """Whether ``name`` is secret (remembering ``value`` to scrub it from text)."""
        if self.is_secret(name):
            self._remember(value)
            return True
        return False

    def redact_params(self, params: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """``params`` with the values of secret names as ``***``."""
        return [(k, REDACTED if self._note(k, v) else v) for k, v in params]

    def scrub(self, text: str) -> str:
        """``text`` with every secret value seen so far replaced by ``***``."""
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
                quoted = quote(secret, safe="")
                if quoted != secret:
                    text = text.replace(quoted, REDACTED)
            elif quote(secret, safe="") in text:
                text = text.replace(quote(secret, safe=""), REDACTED)
        return text

    # taking a redacted request back -----------------------------------------------------
    def unredact(
        self, url: str, params: Iterable[tuple[str, str]], *, where: str
    ) -> tuple[str, list[tuple[str, str]]]:
        """Put the start URL's secret values back in place of ``***`` (resuming a checkpoint).

        Refuses (:class:`~datafuel.errors.IngestError` naming ``where``) a URL on an
        origin that may not see them, and a redacted value the start URL does not have.
        """
        split = urlsplit(url)
        params = list(params)
        pairs = [*parse_qsl(split.query, keep_blank_values=True), *params]
        needs = [k for k, v in pairs if v == REDACTED and self.is_secret(k)]
        needs_password = split.password == REDACTED
        if not needs and not needs_password:
            return url, params
        if not self.allowed(url):
            raise IngestError(
                f"{where} points to {origin(url)}, which is not the origin of the start URL or "
                "one given with --allow-origin; refusing to resume there (secret query values "
                "and headers go only to those origins)",
                field=where,
            )
        missing = sorted({k for k in needs if k not in self._start_values})
        if needs_password and self._start_password is None:
            missing.append("(userinfo password)")
        if missing:
            raise IngestError(
                f"{where} needs the secret value of {', '.join(missing)}, which checkpoints never "
                "store and the start URL does not have (the server gave it); cannot resume this "
                "ingest, delete its directory to start over",
                field=where,
            )

        def value(k: str, v: str) -> str | None:
            return self._start_values[k] if v == REDACTED and self.is_secret(k) else None

        netloc = split.netloc
        if needs_password:
            user = quote(split.username or "", safe="")
            netloc = (
                f"{user}:{quote(self._start_password or '', safe='')}@{netloc.rpartition('@')[2]}"
            )
        query = _map_query(split.query, value)
        real = urlunsplit((split.scheme, netloc, split.path, query, split.fragment))
        return real, [(k, value(k, v) or v) for k, v in params]


def redact_url(
    url: str, secret_params: Iterable[str] = (), *, seen: Callable[[str], None] | None = None
) -> str:
    """``url`` with the values of secret query parameters and a userinfo password as ``***``.

    ``seen`` is called with each value redacted. Everything else is kept byte for byte.

    >>> redact_url("https://u:pw@h/x?page=2&api_key=abc&X-Amz-Signature=f00", ["page"])
    'https://u:***@h/x?page=***&api_key=***&X-Amz-Signature=***'
    """
    try:
        split = urlsplit(url)
        password = split.password
    except ValueError:
        return url
    netloc = split.netloc
    if password:
        if seen is not None:
            seen(password)
        user = netloc.rpartition("@")[0].partition(":")[0]
        netloc = f"{user}:{REDACTED}@{netloc.rpartition('@')[2]}"
    extra = tuple(secret_params)

    def hide(name: str, value: str) -> str | None:
        if not is_secret_param(name, extra):
            return None
        if seen is not None:
            seen(value)
        return REDACTED

    query = _map_query(split.query, hide)
    if netloc == split.netloc and query == split.query:
        return url
    return urlunsplit((split.scheme, netloc, split.path, query, split.fragment))


def _map_query(query: str, new_value: Callable[[str, str], str | None]) -> str:
    """``query`` with each value for which ``new_value(name, value)`` is not ``None`` replaced.

    The other pieces are kept byte for byte (no re-encoding).
    """
    if not query:
        return query
    pieces = query.split("&")
    for i, piece in enumerate(pieces):
        raw_name, _, raw_value = piece.partition("=")
        name, val = unquote_plus(raw_name), unquote_plus(raw_value)
        replacement = new_value(name, val)
        if replacement is not None:
            enc = replacement if replacement == REDACTED else quote(replacement, safe="")
            pieces[i] = f"{raw_name}={enc}"
    return "&".join(pieces)


def _check_origin(value: str) -> str:
    """``value`` as an origin, refusing anything with a path, query or non-http scheme."""
    if not isinstance(value, str):
        raise ConfigError(f"allow_origins must hold strings. Got {value!r} instead.")
    split = urlsplit(value.strip())
    if (
        split.scheme.lower() not in _DEFAULT_PORTS
        or not split.hostname
        or split.path not in ("", "/")
        or split.query
        or split.fragment
        or "@" in split.netloc
    ):
        raise ConfigError(
            "--allow-origin must be an origin such as https://api.example.com or "
            f"http://127.0.0.1:8080 (scheme, host, optional port; no path). Got {value!r} instead."
        )
    return origin(value.strip())
