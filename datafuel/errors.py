"""The datafuel error hierarchy.

Every error datafuel raises on bad input is a :class:`DatafuelError`. Each subclass
also inherits the built-in exception it stands in for (as scikit-learn does with
``NotFittedError(ValueError, AttributeError)``), so ``except ValueError`` clauses in
existing code keep working.

Errors carry the place they are about as attributes (``path``, ``field``, ``row``,
``page``, ``indices``) besides naming it in the message, so callers can react to
them without parsing text.

Errors from third-party libraries (pyarrow, Pillow, tokenizers, httpx) are translated
at the boundary and raised ``from`` the original.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

__all__ = [
    "ConfigError",
    "CorruptShardError",
    "DatafuelError",
    "DecodeError",
    "EngineError",
    "HTTPError",
    "IngestError",
    "InputDataError",
    "LeakageError",
    "LockedError",
    "ManifestError",
    "NonFiniteError",
    "NotFittedError",
    "OutputError",
    "PaginationError",
    "RemoteError",
    "RemoteNotFoundError",
    "RetryExhaustedError",
    "SchemaError",
    "ShardError",
    "TokenizerError",
    "WorkerError",
]


class DatafuelError(Exception):
    """Base class of every error datafuel raises on purpose.

    Parameters
    ----------
    message
        A sentence naming the parameter, file, field, row or page, the constraint,
        the value received and why it was refused.
    path, field, row, page, indices
        Where the problem is, when it is about a place. Stored as attributes.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike[str] | None = None,
        field: str | None = None,
        row: int | None = None,
        page: int | str | None = None,
        indices: Sequence[int] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.field = field
        self.row = row
        self.page = page
        self.indices = None if indices is None else list(indices)
        for key, value in extra.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class ConfigError(DatafuelError, ValueError):
    """A parameter has a value outside what it accepts."""


class SchemaError(DatafuelError, ValueError):
    """Data does not match a declared schema: wrong field, dtype or shape."""


class InputDataError(DatafuelError, ValueError):
    """Input data is unusable: empty file, strings in a numeric column, all-NaN column..."""


class NonFiniteError(InputDataError):
    """A NaN or an infinity where only finite values may go (a shard, a batch)."""


class NotFittedError(DatafuelError, ValueError, AttributeError):
    """A transformer or recipe was used before ``fit``."""


class LeakageError(DatafuelError, ValueError):
    """Something would be fitted on data that is not the train split."""


class ShardError(DatafuelError, OSError):
    """Base class for problems with a shard set on disk."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        DatafuelError.__init__(self, message, **kwargs)


class OutputError(DatafuelError, OSError):
    """The output directory cannot be created or written (the path and the OS reason are named)."""


class LockedError(DatafuelError, BlockingIOError):
    """Another live process holds the output directory (its pid is named)."""


class ManifestError(ShardError, ValueError):
    """A manifest is missing, unreadable, of an unknown version, or points outside its directory."""


class CorruptShardError(ShardError, ValueError):
    """A shard file is missing, truncated, resized or fails its checksum."""


class RemoteError(ShardError):
    """An object store could not be read or written: ``path`` is the object's URL (never a
    credential), ``attempts`` how many tries were made."""


class RemoteNotFoundError(RemoteError, FileNotFoundError):
    """An object (or a shard set's manifest) is not in the bucket."""


class DecodeError(InputDataError):
    """An image or document could not be decoded."""


class TokenizerError(DatafuelError, ValueError):
    """A tokenizer could not be trained, loaded or applied."""


class IngestError(DatafuelError, RuntimeError):
    """Base class for problems while pulling records from an API."""


class HTTPError(IngestError):
    """The server answered with a status that is not retried (4xx other than 429)."""


class RetryExhaustedError(IngestError):
    """Retries ran out; the checkpoint holds every page written so far."""


class PaginationError(IngestError):
    """Pagination went wrong: a cursor seen twice, a malformed page, a missing records path."""


class WorkerError(DatafuelError, RuntimeError):
    """A loader worker failed; ``indices`` names the samples it was working on."""


class EngineError(DatafuelError, RuntimeError):
    """A distributed build could not run: no cluster at the address, or a worker kept dying."""
