"""Object storage for shard sets: ``s3://``, ``gs://``, ``az://`` and read-only ``https://``.

Why obstore (the Python binding of the Apache Arrow project's Rust ``object_store``)
rather than fsspec with s3fs/gcsfs/adlfs: one small wheel with no Python dependency
tree for all four stores (s3fs alone pulls aiobotocore, aiohttp and an asyncio loop per
process, which does not survive ``fork``); a synchronous API that worker threads call
directly and that releases the GIL while it waits on the network; and each cloud's
standard configuration read the way its own SDK reads it (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``;
``GOOGLE_APPLICATION_CREDENTIALS``/``GOOGLE_SERVICE_ACCOUNT``; ``AZURE_STORAGE_ACCOUNT_NAME``,
``AZURE_STORAGE_ACCOUNT_KEY``...). AWS profiles (``AWS_PROFILE``, ``~/.aws/config``) go
through boto3's credential chain when boto3 is installed.

Plain-http endpoints (an S3-compatible store on a LAN, Azurite, a GCS emulator) are allowed
when the environment names one: ``AWS_ENDPOINT_URL=http://…``, ``AZURE_STORAGE_ENDPOINT=http://…``
(or ``AZURE_STORAGE_USE_EMULATOR=true`` with ``AZURITE_BLOB_STORAGE_URL``, which obstore
handles itself), ``GOOGLE_BASE_URL=http://…`` or a service-account key whose
``gcs_base_url`` is ``http://…`` (with ``"disable_oauth": true`` for an emulator).

Retries are ours, not obstore's (its own are turned off): tenacity with exponential
backoff and jitter on timeouts, 5xx answers (S3's ``503 SlowDown`` included), 408/429
and dropped connections, so that every retry is counted and an exhausted one raises
:class:`~datafuel.errors.RemoteError` naming the object. A missing object is
:class:`~datafuel.errors.RemoteNotFoundError` at once. Messages carry the object's URL
without user info or query string: no credential reaches an error, a log or a file.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from datafuel.errors import ConfigError, CorruptShardError, RemoteError, RemoteNotFoundError

__all__ = ["REMOTE_SCHEMES", "ObjectStore", "RetryPolicy", "is_remote", "redact_url"]

#: URL schemes read through an object store (``http`` only for plain-http LAN servers)
REMOTE_SCHEMES = ("s3", "gs", "az", "abfs", "abfss", "azure", "https", "http")
_CHUNK = 1 << 20
_T = TypeVar("_T")


def is_remote(source: Any) -> bool:
    """Whether ``source`` is an object-store URL (``s3://…``, ``gs://…``, ``az://…``, ``https://…``)."""
    if not isinstance(source, str):
        return False
    scheme, sep, _ = source.partition("://")
    return bool(sep) and scheme.lower() in REMOTE_SCHEMES


def redact_url(url: str) -> str:
    """``url`` without user info, query string or fragment (where credentials hide).

    >>> redact_url("https://user:secret@host/a/b?X-Amz-Signature=abc")
    'https://host/a/b'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class RetryPolicy:
    """How transient object-store errors are retried (exponential backoff with jitter)."""

    attempts: int = 8
    initial: float = 0.05
    maximum: float = 5.0
    timeout: float = 60.0  #: per request: connect and read (seconds)

    def retrying(self, on_retry: Callable[[RetryCallState], None] | None = None) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(
                **{_BACKOFF_BASE: self.initial}, max=self.maximum, jitter=self.initial
            ),
            retry=retry_if_exception(is_transient),
            before_sleep=on_retry,
            reraise=True,
        )


# newer tenacity (9.2 here) renamed wait_exponential_jitter's ``initial`` to ``multiplier`` (the old
# name warns: an error under ``-W error``); older releases know only ``initial``
_BACKOFF_BASE = (
    "multiplier"
    if "multiplier" in inspect.signature(wait_exponential_jitter.__init__).parameters
    else "initial"
)


_STATUS = re.compile(r"status(?: code)?:? (\d{3})", re.IGNORECASE)
_TRANSIENT_TEXT = (
    "slowdown",
    "timed out",
    "timeout",
    "connection",
    "error sending request",
    "error decoding response body",
    "incomplete",
    "broken pipe",
    "reset by peer",
    "unexpected eof",
)


def is_transient(exc: BaseException) -> bool:
    """Whether an error from the store is worth another try (never: missing, refused, bad input)."""
    if isinstance(exc, _ShortRead):
        return True
    if isinstance(exc, (FileNotFoundError, PermissionError, ConfigError, CorruptShardError)):
        return False
    name = type(exc).__name__
    if name in (
        "UnauthenticatedError",
        "PermissionDeniedError",
        "InvalidPathError",
        "NotSupportedError",
        "UnknownConfigurationKeyError",
        "AlreadyExistsError",
        "PreconditionError",
        "NotModifiedError",
    ):
        return False
    text = str(exc)
    status = _STATUS.search(text)
    if status is not None:
        code = int(status.group(1))
        return code >= 500 or code in (408, 429)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # obstore's "Debug source" dump names its own ``retry_timeout`` in every error: not a timeout
    low = text.lower().replace("retry_timeout", "")
    if "builder error" in low:  # a request that cannot be built (a URL the client refuses)
        return False
    return any(t in low for t in _TRANSIENT_TEXT)


class _ShortRead(OSError):
    """A body that ended before the object's size (a dropped connection): retried."""


@dataclass
class StoreCounters:
    """What one :class:`ObjectStore` did (for tests, benchmarks and ``stats``)."""

    requests: int = 0
    retries: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **kw: int) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


def _client_options(url: str, policy: RetryPolicy) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "timeout": timedelta(seconds=policy.timeout),
        "connect_timeout": timedelta(seconds=min(policy.timeout, 10.0)),
    }
    scheme = urlsplit(url).scheme.lower()
    if scheme == "http" or _endpoint_of(scheme).lower().startswith("http://"):
        opts["allow_http"] = True  # an S3-compatible store on a LAN, Azurite, a GCS emulator
    return opts


_AZURE_SCHEMES = ("az", "abfs", "abfss", "azure")


def _endpoint_of(scheme: str) -> str:
    """The endpoint the environment gives ``scheme``'s store (``""``: the cloud's own).

    The variables obstore reads itself: ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``;
    ``AZURE_STORAGE_ENDPOINT``/``AZURE_ENDPOINT`` (with ``AZURE_STORAGE_USE_EMULATOR``
    obstore goes to ``AZURITE_BLOB_STORAGE_URL`` and allows http itself);
    ``GOOGLE_BASE_URL``, else the ``gcs_base_url`` of the service-account key
    (``GOOGLE_SERVICE_ACCOUNT_KEY``, or the file at ``GOOGLE_SERVICE_ACCOUNT``/
    ``GOOGLE_SERVICE_ACCOUNT_PATH``: the way to point obstore at a GCS emulator).
    Only the URL is taken from a key; nothing else in it is kept.
    """
    env = os.environ.get
    if scheme == "s3":
        return env("AWS_ENDPOINT_URL_S3") or env("AWS_ENDPOINT_URL") or ""
    if scheme in _AZURE_SCHEMES:
        return env("AZURE_STORAGE_ENDPOINT") or env("AZURE_ENDPOINT") or ""
    if scheme == "gs":
        return env("GOOGLE_BASE_URL") or _gcs_key_base_url()
    return ""


def _gcs_key_base_url() -> str:
    text = os.environ.get("GOOGLE_SERVICE_ACCOUNT_KEY", "")
    path = os.environ.get("GOOGLE_SERVICE_ACCOUNT") or os.environ.get("GOOGLE_SERVICE_ACCOUNT_PATH")
    if not text and path:
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as fh:
                text = fh.read(1 << 20)
        except OSError:
            return ""  # obstore reports the unreadable key when it opens the store
    try:
        key = json.loads(text) if text else None
    except ValueError:
        return ""
    base = key.get("gcs_base_url") if isinstance(key, dict) else None
    return base if isinstance(base, str) else ""


def _s3_credential_provider() -> Any:
    """boto3's credential chain (profiles, SSO, instance roles) when keys are not in the env."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return None  # obstore reads the keys (and session token) from the environment itself
    if not (
        os.environ.get("AWS_PROFILE")
        or os.path.exists(os.path.expanduser(os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")))
        or os.path.exists(
            os.path.expanduser(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
        )
    ):
        return None
    try:
        import boto3
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        return None
    return Boto3CredentialProvider(boto3.Session())


def _open_store(url: str, policy: RetryPolicy) -> Any:
    try:
        from obstore.store import HTTPStore, from_url
    except ImportError as exc:  # pragma: no cover - obstore is a dependency
        raise ConfigError(
            f"{redact_url(url)}: reading object storage needs obstore (pip install obstore)."
        ) from exc
    opts = _client_options(url, policy)
    retry = {"max_retries": 0, "retry_timeout": timedelta(seconds=policy.timeout)}
    scheme = urlsplit(url).scheme.lower()
    try:
        if scheme in ("http", "https"):
            return HTTPStore.from_url(url, client_options=opts, retry_config=retry)  # type: ignore[arg-type]
        kwargs: dict[str, Any] = {"client_options": opts, "retry_config": retry}
        if scheme == "s3":
            provider = _s3_credential_provider()
            if provider is not None:
                kwargs["credential_provider"] = provider
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region:
                kwargs["config"] = {"region": region}
        return from_url(url, **kwargs)
    except Exception as exc:
        raise ConfigError(
            f"{redact_url(url)}: cannot open this object store ({_reason(exc)})."
        ) from None


_XML_BODY = re.compile(r"<\?xml|<Error\b")
_XML_FIELD = re.compile(r"<(Code|Message)>([^<]*)</\1>")


def _reason(exc: BaseException) -> str:
    """A one-line, credential-free reason from a store error."""
    text = str(exc).strip() or type(exc).__name__
    body = _XML_BODY.search(text)
    if body is not None:  # an S3/Azure error body: its code and message, not the rest
        # (S3 echoes <AWSAccessKeyId>, <StringToSign> and <CanonicalRequest> in refusals)
        found = dict.fromkeys(v for _, v in _XML_FIELD.findall(text[body.start() :]))
        fields = " ".join(found)  # (obstore repeats the body: once each)
        text = f"{text[: body.start()].rstrip()} {fields}".strip()
    text = (text.splitlines() or [type(exc).__name__])[0]
    text = re.sub(r"(https?://)[^/@\s]+@", r"\1", text)  # user info
    text = re.sub(r"\?[^\s]*", "", text)  # query strings (presigned signatures)
    return text[:300]


class ObjectStore:
    """A bucket prefix (``s3://bucket/prefix``) read and written by object name.

    Thread-safe: the underlying client is shared by every thread of the process. A
    forked child opens its own client on first use (a client's connections must not
    cross a ``fork``).
    """

    def __init__(self, url: str, *, retry: RetryPolicy | None = None) -> None:
        if not is_remote(url):
            raise ConfigError(f"{url!r} is not an object-store URL ({', '.join(REMOTE_SCHEMES)}).")
        self.url = url.rstrip("/")
        self.read_only = urlsplit(url).scheme.lower() in ("http", "https")
        self.policy = retry or RetryPolicy()
        self.counters = StoreCounters()
        self._store: Any = None
        self._pid = -1
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ObjectStore({redact_url(self.url)!r})"

    @property
    def store(self) -> Any:
        if self._store is None or self._pid != os.getpid():
            with self._lock:
                if self._store is None or self._pid != os.getpid():
                    self._store = _open_store(self.url, self.policy)
                    self._pid = os.getpid()
        return self._store

    def url_of(self, name: str) -> str:
        """The credential-free URL of object ``name`` (for messages)."""
        return redact_url(f"{self.url}/{name}")

    def child(self, name: str) -> ObjectStore:
        """The store one level down (``s3://b/p`` → ``s3://b/p/name``), sharing the retry policy."""
        return ObjectStore(f"{self.url}/{name.strip('/')}", retry=self.policy)

    # -- retried calls ------------------------------------------------------------------
    def _call(self, what: str, name: str, fn: Callable[[], _T]) -> _T:
        """``fn()`` retried; its failure as a RemoteError naming ``name``, which ``what`` (``"read
        it"``, ``"look it up"``) was being done to."""
        attempts = 0

        def count_retry(state: RetryCallState) -> None:
            self.counters.add(retries=1)

        try:
            for attempt in self.policy.retrying(count_retry):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    self.counters.add(requests=1)
                    return fn()
        except (RemoteError, CorruptShardError, ConfigError):
            raise
        except FileNotFoundError:
            raise RemoteNotFoundError(
                f"{self.url_of(name)}: no such object (while trying to {what}).",
                path=self.url_of(name),
                attempts=attempts,
            ) from None
        except Exception as exc:
            retried = f" after {attempts} attempts" if attempts > 1 else ""
            raise RemoteError(
                f"{self.url_of(name)}: cannot {what}{retried}: {_reason(exc)}",
                path=self.url_of(name),
                attempts=attempts,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def get_bytes(self, name: str) -> bytes:
        """The whole object ``name`` (small objects: manifests)."""
        import obstore

        def get() -> bytes:
            data = bytes(obstore.get(self.store, name).bytes())
            self.counters.add(bytes_read=len(data))
            return data

        return self._call("read it", name, get)

    def head(self, name: str) -> dict[str, Any] | None:
        """``{"size", "attributes"}`` of object ``name``, or None when it is not there."""
        import obstore

        def head() -> dict[str, Any] | None:
            try:
                r = obstore.get(self.store, name, options={"head": True})
            except FileNotFoundError:
                return None
            return {"size": int(r.meta["size"]), "attributes": dict(r.attributes or {})}

        return self._call("look it up", name, head)

    def download(
        self,
        name: str,
        fd: int,
        *,
        size: int,
        sha256: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        """Stream object ``name`` into the file open at ``fd`` (from its start), checking it.

        A body shorter or longer than ``size`` (a dropped connection) is retried from the
        start; a body of the right size whose sha256 is not ``sha256`` raises
        :class:`~datafuel.errors.CorruptShardError` naming the object.
        """
        import obstore

        def fetch() -> None:
            h = hashlib.sha256()
            got = 0
            r = obstore.get(self.store, name)
            for chunk in r.stream(min_chunk_size=_CHUNK):
                view = memoryview(chunk)
                if got + len(view) > size:
                    raise _ShortRead(f"body longer than the manifest's {size} bytes")
                os.pwrite(fd, view, got)
                h.update(view)
                got += len(view)
                self.counters.add(bytes_read=len(view))
                if on_bytes is not None:
                    on_bytes(len(view))
            if got != size:
                raise _ShortRead(f"body ended after {got} of {size} bytes")
            digest = h.hexdigest()
            if digest != sha256:
                url = self.url_of(name)
                raise CorruptShardError(
                    f"{url}: checksum mismatch (sha256 {digest[:16]}..., manifest says "
                    f"{sha256[:16]}...); the object was modified or corrupted in the bucket.",
                    path=url,
                )

        self._call("download it", name, fetch)

    def put_file(
        self, name: str, path: str | os.PathLike[str], *, sha256: str | None = None
    ) -> None:
        """Upload the local file ``path`` as object ``name`` (its sha256 kept as metadata)."""
        import obstore

        self._check_writable(name)
        nbytes = os.path.getsize(path)

        def put() -> None:
            attrs = {"sha256": sha256} if sha256 else None
            with open(path, "rb") as fh:
                obstore.put(self.store, name, fh, attributes=attrs)
            self.counters.add(bytes_written=nbytes)

        self._call("upload it", name, put)

    def put_bytes(self, name: str, data: bytes, *, sha256: str | None = None) -> None:
        """Upload ``data`` as object ``name`` (one request: small objects, manifests)."""
        import obstore

        self._check_writable(name)

        def put() -> None:
            attrs = {"sha256": sha256} if sha256 else None
            obstore.put(self.store, name, data, attributes=attrs)
            self.counters.add(bytes_written=len(data))

        self._call("upload it", name, put)

    def delete(self, name: str) -> None:
        import obstore

        self._check_writable(name)
        self._call("delete it", name, lambda: obstore.delete(self.store, name))

    def list(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        """``{"path", "size"}`` of every object under ``prefix`` (paths relative to this store)."""
        import obstore

        def listing() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in obstore.list(self.store, prefix=prefix or None):
                out.extend({"path": m["path"], "size": int(m["size"])} for m in page)
            return out

        # named as a folder: ``s3://b/p/`` (``s3://b/p/.`` read as an object of that name)
        yield from self._call("list it", f"{prefix.strip('/')}/" if prefix else "", listing)

    def _check_writable(self, name: str) -> None:
        if self.read_only:
            raise ConfigError(
                f"{self.url_of(name)}: an https:// shard set is read-only; write to s3://, gs:// "
                "or az:// instead."
            )
