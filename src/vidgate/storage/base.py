"""The storage interface: where finished videos live until they are completed or deleted."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    def put_file(self, key: str, source: Path) -> None:
        """Move a finished file into storage under `key` (atomically: readers see all of it or nothing)."""

    def local_path(self, key: str) -> Path | None:
        """A path on this machine to stream the object from, or None if it does not exist."""

    def delete(self, key: str) -> None: ...

    def scratch_dir(self) -> Path:
        """A directory on the same filesystem where engines write before `put_file`."""
