"""S3 storage: finished videos in a bucket of any S3-compatible service (AWS, MinIO, R2, Ceph, ...).

`VIDGATE_STORAGE_URL=s3://bucket[/prefix]`, `VIDGATE_S3_ENDPOINT_URL` for a service other than AWS, and the
standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_PROFILE, ...),
which boto3 reads itself. Uploads stream from the file with boto3's managed (multipart) transfer; downloads
are ranged GETs streamed in chunks. Every method blocks: async callers run them in a thread.

An endpoint that cannot be reached, or answers 5xx (after boto3's own retries), is StorageUnavailable: a 503
with Retry-After for the API's client, not a 500. Errors that an operator must fix (credentials, permissions, a
missing bucket) are raised as they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vidgate.storage.base import StorageConfigError, StorageUnavailable
from vidgate.storage.local import check_key

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK_SIZE = 8 * 1024 * 1024
READ_CHUNK_SIZE = 1024 * 1024


def is_outage(exc: BaseException | None) -> bool:
    """The service is not there now: refused, reset or timed out, or a 5xx (503 SlowDown, 500 InternalError)."""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, S3UploadFailedError):  # boto3's transfer manager wraps the service's ClientError in it
        return is_outage(exc.__cause__ or exc.__context__)
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) >= 500
    return isinstance(exc, BotoConnectionError | HTTPClientError)


@contextlib.contextmanager
def service_errors() -> Iterator[None]:
    """Raise an outage as StorageUnavailable; let every other error through as it is."""
    try:
        yield
    except Exception as exc:
        if is_outage(exc):
            raise StorageUnavailable() from exc
        raise


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
        with service_errors():
            self.client.upload_file(str(source), self.bucket, self.object_key(key),
                                    ExtraArgs={"ContentType": "video/mp4"}, Config=self.transfer_config)
        source.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        with service_errors():
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            with service_errors():
                head = self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def keys_with_prefix(self, prefix: str) -> list[str]:
        start = self.object_key(prefix)
        strip = len(start) - len(prefix)  # our key prefix (`videos/`) is not part of the storage key
        keys: list[str] = []
        with service_errors():
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        # The response has started by the time this runs (delivery streams it), so an outage here cuts the
        # transfer short rather than answering 503; it is raised as one all the same, for any other caller.
        with service_errors():
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key),
                                              Range=f"bytes={start}-{end}")
        body = response["Body"]
        try:
            with service_errors():
                yield from body.iter_chunks(READ_CHUNK_SIZE)
        finally:
            with contextlib.suppress(Exception):
                body.close()

    def local_path(self, key: str) -> Path | None:
        return None

    def scratch_dir(self) -> Path:
        return self._scratch
