"""Local-disk storage: one file per job under the data directory."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

_SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")
CHUNK_SIZE = 1024 * 1024


def check_key(key: str) -> str:
    if not _SAFE_KEY.match(key) or key in (".", ".."):
        raise ValueError(f"unsafe storage key {key!r}")
    return key


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / ".scratch").mkdir(exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, source: Path) -> None:
        os.replace(source, self._path(key))

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys_with_prefix(self, prefix: str) -> list[str]:
        check_key(prefix)
        return sorted(path.name for path in self.root.glob(f"{prefix}*") if path.is_file())

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        with self._path(key).open("rb") as fh:
            fh.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = fh.read(min(CHUNK_SIZE, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def scratch_dir(self) -> Path:
        return self.root / ".scratch"
