"""Rate-limit bookkeeping of the fake Discord: announced buckets, a hidden edit budget and a global limit."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class FixedWindow:
    """A Discord-style bucket: ``limit`` requests, then wait until the window that began first resets."""

    limit: int
    window: float
    started: float = 0.0
    used: int = 0

    def _roll(self, now: float) -> None:
        if now - self.started >= self.window:
            self.started = now
            self.used = 0

    def take(self, now: float) -> float:
        """Count a request; returns 0 when allowed, else the seconds until the bucket resets."""
        self._roll(now)
        if self.used >= self.limit:
            return self.started + self.window - now
        self.used += 1
        return 0.0

    def headers(self, now: float, bucket: str) -> dict[str, str]:
        """The X-RateLimit-* headers Discord sends for this bucket."""
        self._roll(now)
        reset_after = max(self.started + self.window - now, 0.0)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.limit - self.used, 0)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": bucket,
        }


@dataclass
class SlidingWindow:
    """At most ``limit`` events in any interval of ``window`` seconds (stricter than a fixed window)."""

    limit: int
    window: float
    stamps: deque[float] = field(default_factory=deque)

    def take(self, now: float) -> float:
        """Count an event; returns 0 when allowed, else the seconds until a slot frees."""
        while self.stamps and now - self.stamps[0] >= self.window:
            self.stamps.popleft()
        if len(self.stamps) >= self.limit:
            return self.stamps[0] + self.window - now
        self.stamps.append(now)
        return 0.0
