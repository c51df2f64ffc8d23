"""S3 storage: finished videos in a bucket of any S3-compatible service (AWS, MinIO, R2, Ceph, ...).

`VIDGATE_STORAGE_URL=s3://bucket[/prefix]`, `VIDGATE_S3_ENDPOINT_URL` for a service other than AWS, and the
standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE, ...),
which boto3 reads itself. Uploads stream from the file with boto3's managed (multipart) transfer; downloads
are ranged GETs streamed in chunks. Every method blocks: async callers run them in a thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidgate.storage.base import StorageConfigError
from vidgate.storage.local import check_key

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK_SIZE = 8 * 1024 * 1024
READ_CHUNK_SIZE = 1024 * 1024


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket[/prefix]` -> (bucket, prefix without slashes at either end)."""
    rest = url[len("s3://"):] if url.startswith("s3://") else ""
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise StorageConfigError(f"VIDGATE_STORAGE_URL={url!r}: expected s3://bucket[/prefix]")
    return bucket, prefix.strip("/")


class S3Storage:
    def __init__(self, url: str, *, endpoint_url: str | None, scratch: Path, client: Any = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.url = url
        self.endpoint_url = endpoint_url
        self.bucket, self.prefix = parse_s3_url(url)
        # A custom endpoint (MinIO, a loopback port) rarely has per-bucket DNS names: address by path there.
        config = Config(connect_timeout=5, read_timeout=60, max_pool_connections=32,
                        retries={"max_attempts": 3, "mode": "standard"},
                        s3={"addressing_style": "path" if endpoint_url else "auto"})
        self.client = client or boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        self.transfer_config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD,
                                              multipart_chunksize=MULTIPART_CHUNK_SIZE, max_concurrency=4)
        self._scratch = scratch
        self._scratch.mkdir(parents=True, exist_ok=True)

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def check(self) -> None:
        """Fail at start, naming the settings, if the bucket is missing, forbidden or unreachable."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            where = f"VIDGATE_S3_ENDPOINT_URL={self.endpoint_url}" if self.endpoint_url else "AWS S3"
            code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
            reason = {"404": "does not exist", "NoSuchBucket": "does not exist",
                      "403": "access denied (check the AWS credentials)"}.get(code, str(exc))
            raise StorageConfigError(
                f"VIDGATE_STORAGE_URL={self.url}: bucket {self.bucket!r} at {where}: {reason}"
            ) from exc

    def put_file(self, key: str, source: Path) -> None:
        """Upload (multipart above MULTIPART_THRESHOLD, streamed from the file), then remove the source."""
        self.client.upload_file(str(source), self.bucket, self.object_key(key),
                                ExtraArgs={"ContentType": "video/mp4"}, Config=self.transfer_config)
        source.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key), Range=f"bytes={start}-{end}")
        body = response["Body"]
        try:
            yield from body.iter_chunks(READ_CHUNK_SIZE)
        finally:
            with contextlib.suppress(Exception):
                body.close()

    def local_path(self, key: str) -> Path | None:
        return None

    def scratch_dir(self) -> Path:
        return self._scratch
