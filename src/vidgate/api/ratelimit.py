"""Per-key request limits per minute (SPEC §8), kept in this process's memory.

A fixed one-minute window per (principal, bucket). The embedded server is one API process, so this is exact
there; several API nodes would each enforce the limit separately.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Window:
    start: float
    count: int


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


class RateLimiter:
    def __init__(self, limits_per_minute: dict[str, int]) -> None:
        self.limits = limits_per_minute
        self._windows: dict[tuple[str, str], Window] = {}

    def hit(self, principal: str, bucket: str, now: float | None = None) -> RateDecision:
        limit = self.limits.get(bucket, 0)
        if limit <= 0:
            return RateDecision(True, 0, 0, 0)
        now = time.time() if now is None else now
        key = (principal, bucket)
        window = self._windows.get(key)
        if window is None or now - window.start >= 60:
            window = Window(start=now, count=0)
            self._windows[key] = window
            if len(self._windows) > 100_000:  # forget idle principals
                self._windows = {k: w for k, w in self._windows.items() if now - w.start < 60}
        reset_ms = int((window.start + 60) * 1000)
        if window.count >= limit:
            return RateDecision(False, limit, 0, reset_ms)
        window.count += 1
        return RateDecision(True, limit, limit - window.count, reset_ms)
