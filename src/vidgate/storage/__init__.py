"""Where finished videos live: `storage_from_settings` builds the one the settings name."""

from __future__ import annotations

from pathlib import Path

from vidgate.settings import Settings
from vidgate.storage.base import Storage, StorageConfigError
from vidgate.storage.local import LocalStorage

__all__ = ["LocalStorage", "Storage", "StorageConfigError", "storage_from_settings"]


def storage_from_settings(settings: Settings, *, check: bool = True) -> Storage:
    """Local disk (`data_dir/media`, or `file:///path`) or S3 (`s3://bucket[/prefix]`). With `check`, a
    bucket that is missing or unreachable is a StorageConfigError now, naming the setting."""
    url = settings.storage_url
    if not url:
        return LocalStorage(settings.media_dir)
    if url.startswith("file://"):
        return LocalStorage(Path(url[len("file://"):]))
    if url.startswith("s3://"):
        from vidgate.storage.s3 import S3Storage

        storage = S3Storage(url, endpoint_url=settings.s3_endpoint_url, scratch=settings.data_dir / "scratch")
        if check:
            storage.check()
        return storage
    raise StorageConfigError(f"VIDGATE_STORAGE_URL={url!r}: expected s3://bucket[/prefix] or file:///path")
