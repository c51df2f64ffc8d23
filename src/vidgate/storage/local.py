"""Local-disk storage: one file per job under the data directory."""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".scratch").mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        if not _SAFE_KEY.match(key):
            raise ValueError(f"unsafe storage key {key!r}")
        return self.root / key

    def put_file(self, key: str, source: Path) -> None:
        os.replace(source, self._path(key))

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def scratch_dir(self) -> Path:
        return self.root / ".scratch"
