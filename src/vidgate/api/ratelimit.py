"""Per-key request limits per minute (SPEC §8), counted with the `limits` library.

A fixed one-minute window per (principal, bucket) that opens at the principal's first request in it.
`VIDGATE_RATE_LIMIT_STORAGE_URL` says where the counters live:

- `memory://` (the default): this process's memory. Exact for one API process; several API nodes would each
  allow the whole limit. The sync storage is used: it is a dict and a lock, so retrieve polling stays cheap.
- `redis://host:port[/db]` (or `rediss://`): one Redis shared by every API node, so a key's limit holds across
  all of them. Counted through limits' asyncio API so a slow Redis waits without blocking the event loop.

The counting is limits' fixed-window strategy (`FixedWindowRateLimiter.hit` is `storage.incr(key) <= amount`),
done on the storage directly: the count incr returns gives `remaining`, where `hit()` + `get_window_stats()`
would build the key three times and read it back (6.6 µs instead of 2.8 µs per memory:// request; three Redis
round trips instead of two).

An unreachable Redis stops the start (RateLimitConfigError, naming the setting). While running, a count that
fails raises RateLimitStorageDown, which the API answers with 503 + Retry-After: a request is never let through
uncounted (that would silently lift every key's limit while Redis is down).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import Storage as AsyncStorage
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string

from vidgate.settings import Settings

log = logging.getLogger("vidgate.api.ratelimit")

SETTING = "VIDGATE_RATE_LIMIT_STORAGE_URL"
REDIS_SCHEMES = ("redis", "rediss")
# Redis answers in well under a millisecond on a LAN; a second means it is gone, and every request waiting on it
# would pile up behind the timeout. One immediate retry covers a pooled connection that a Redis restart closed.
REDIS_TIMEOUT_S = 1.0
REDIS_RETRIES = 1
REDIS_KEY_PREFIX = "vidgate-ratelimit"  # so the counters can share a Redis with other applications


class RateLimitConfigError(RuntimeError):
    """The rate-limit storage setting cannot work (unknown scheme, Redis unreachable); names the setting."""


class RateLimitStorageDown(RuntimeError):
    """The shared counter store failed while counting a request; the request must not go through uncounted."""


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset_ms: int

    def headers(self) -> dict[str, str]:
        if self.limit <= 0:
            return {}
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": str(self.reset_ms),
            "x-ratelimit-type": "requests",
        }


UNLIMITED = RateDecision(True, 0, 0, 0)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RateLimiter:
    """`limits_per_minute`: bucket name -> requests per minute per principal (0 or less: no limit)."""

    def __init__(self, limits_per_minute: dict[str, int], storage_url: str = "memory://") -> None:
        self.limits = limits_per_minute
        self.storage_url = storage_url
        self._items: dict[str, RateLimitItem] = {
            bucket: RateLimitItemPerMinute(n) for bucket, n in limits_per_minute.items() if n > 0
        }
        self._sync: Storage | None = None
        self._async: AsyncStorage | None = None
        self._pool: Any = None  # redis.asyncio.ConnectionPool; ours to close (limits' storage never closes it)
        self._down = False  # log the failure and the recovery once each, not on every request
        scheme = urlsplit(storage_url).scheme
        try:
            if scheme == "memory":
                self._sync = cast(Storage, storage_from_string(storage_url))
            elif scheme in REDIS_SCHEMES:
                self._async = self._redis_storage(storage_url)
            else:
                raise RateLimitConfigError(
                    f"{SETTING}={redacted(storage_url)!r}: expected memory:// (one API process) or "
                    "redis://host:port[/db] (shared by every API node)"
                )
        except (ConfigurationError, ValueError) as exc:
            raise RateLimitConfigError(f"{SETTING}={redacted(storage_url)!r}: {exc}") from None

    def _redis_storage(self, url: str) -> AsyncStorage:
        from redis.asyncio import ConnectionPool
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._pool = ConnectionPool.from_url(
            url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), REDIS_RETRIES),
        )
        options: dict[str, Any] = {"implementation": "redispy", "connection_pool": self._pool,
                                   "key_prefix": REDIS_KEY_PREFIX, "wrap_exceptions": True}
        return cast(AsyncStorage, storage_from_string(f"async+{url}", **options))

    def check(self) -> None:
        """At start: raise RateLimitConfigError, naming the setting, if Redis does not answer a PING.

        Sync (AppContext.build is), so it uses its own short-lived sync client rather than the asyncio pool,
        whose connections belong to the event loop that serves requests."""
        if self._async is None:
            return
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(self.storage_url, socket_connect_timeout=REDIS_TIMEOUT_S,
                                      socket_timeout=REDIS_TIMEOUT_S, retry=Retry(NoBackoff(), REDIS_RETRIES))
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            raise RateLimitConfigError(
                f"{SETTING}={redacted(self.storage_url)!r}: cannot reach Redis for the shared rate limits: {exc}"
            ) from None
        finally:
            client.close()

    async def hit(self, principal: str, bucket: str) -> RateDecision:
        """Count one request of `principal` in `bucket`. Raises RateLimitStorageDown if Redis fails."""
        item = self._items.get(bucket)
        if item is None:
            return UNLIMITED
        key = item.key_for(bucket, principal)
        if self._sync is not None:
            count = self._sync.incr(key, item.get_expiry())
            reset = self._sync.get_expiry(key)
        else:
            assert self._async is not None
            try:
                count = await self._async.incr(key, item.get_expiry())
                reset = await self._async.get_expiry(key)
            except (StorageError, OSError) as exc:  # OSError: a socket error redis-py did not wrap
                if not self._down:
                    log.warning("rate-limit storage %s failed: %s", redacted(self.storage_url), exc)
                self._down = True
                raise RateLimitStorageDown(str(exc)) from exc
            if self._down:
                log.warning("rate-limit storage %s answers again", redacted(self.storage_url))
                self._down = False
        # A refused request is counted too (as limits does), which changes nothing: the window's reset is fixed by
        # its first request (memory: that + 60 s; Redis: the key's TTL, in whole seconds).
        return RateDecision(count <= item.amount, item.amount, max(0, item.amount - count), int(reset * 1000))

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def rate_limiter_from_settings(settings: Settings) -> RateLimiter:
    """The API's limiter; a Redis that is unreachable at start is a RateLimitConfigError now, naming the setting."""
    limiter = RateLimiter(
        {"queue": settings.rate_limit_queue_per_min, "retrieve": settings.rate_limit_retrieve_per_min},
        settings.rate_limit_storage_url,
    )
    limiter.check()
    return limiter
