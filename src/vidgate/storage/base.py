"""The storage interface: where finished videos live until they are completed or deleted.

Two implementations: `LocalStorage` (a directory on this machine; delivery sends the file itself, with
sendfile) and `S3Storage` (any S3-compatible bucket; delivery streams ranged GETs through vidgate).
`storage_from_settings` (storage/__init__.py) picks one; the API and the workers both build it that way.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from vidgate.errors import ServiceUnavailable


class StorageConfigError(RuntimeError):
    """The storage settings cannot work (unknown scheme, bucket missing or unreachable); names the setting."""


class StorageUnavailable(ServiceUnavailable):
    """503: the storage service cannot be reached now (down, restarting, overloaded). Every storage call may be
    repeated (an upload replaces, a delete of a missing object succeeds), so the client retries after
    `Retry-After`; the node reconnects by itself."""

    code = "STORAGE_UNAVAILABLE"

    def __init__(self, message: str = "The video storage is unavailable; retry shortly") -> None:
        super().__init__(message, headers={"Retry-After": "5"})


@runtime_checkable
class Storage(Protocol):
    """Every method may raise StorageUnavailable (a 503 for an API request) when the service cannot be reached."""

    def put_file(self, key: str, source: Path) -> None:
        """Move (or upload, then remove) a finished file into storage under `key`; readers see all of it or
        nothing. Blocking: call it from a thread in async code."""

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error. Blocking."""

    def exists(self, key: str) -> bool: ...

    def keys_with_prefix(self, prefix: str) -> list[str]:
        """The keys of the objects whose key starts with `prefix` (a job's attempts: `<job id>-`). Blocking."""

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None if it does not exist. Blocking."""

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """The bytes start..end (inclusive) of the object, in chunks. Blocking: iterate it in a thread."""

    def local_path(self, key: str) -> Path | None:
        """A path on this machine to send the object from (the fast path), or None: the object does not exist,
        or this storage is not local (then use `size` and `iter_range`)."""

    def scratch_dir(self) -> Path:
        """A local directory where engines write before `put_file` (on the same filesystem for local storage)."""
