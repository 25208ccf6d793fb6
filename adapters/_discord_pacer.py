"""Pacing of message edits within Discord's unannounced per-channel budget and the per-bot global limit."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Stamp:
    """When a request used its slot: its start, moved to its end once the response arrived."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        self.at = at


class _Window:
    """Sliding window: at most ``limit`` requests in any ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.stamps: list[_Stamp] = []

    def empty(self, now: float) -> bool:
        """True when no request counts any more (the stale ones are dropped)."""
        self.stamps = [s for s in self.stamps if now - s.at < self.window]
        return not self.stamps

    def wait_time(self, now: float) -> float:
        if self.empty(now) or len(self.stamps) < self.limit:
            return 0.0
        times = sorted(s.at for s in self.stamps)
        return times[-self.limit] + self.window - now

    def record(self, now: float) -> _Stamp:
        stamp = _Stamp(now)
        self.stamps.append(stamp)
        return stamp


class EditPacer:
    """Hands out request slots so edits stay inside Discord's budgets and never draw a 429.

    ``per_channel`` is the edit budget of one channel (Discord: about 5 edits per 5 seconds, not announced in
    headers); ``per_bot`` the global request limit (50 per second). A request's slot counts from its start
    until its response arrived, then from that moment on: so however late Discord saw a request, the next one
    that needs its slot starts a full window later. Windows are also widened by ``margin`` (a fraction).
    Waiters of one channel are served first come, first served, so concurrent answers in a channel share its
    budget fairly. After a 429, :meth:`cool_off` holds a channel (or everything) for the ``Retry-After``.
    Every DM is a channel of its own: a channel's lock lives while requests use it, and while more than
    ``keep`` channels are tracked, windows and cool-offs that constrain nothing are dropped (at most once
    per window: a sweep visits every channel).
    """

    def __init__(
        self,
        per_channel: tuple[int, float] = (5, 5.0),
        per_bot: tuple[int, float] = (50, 1.0),
        margin: float = 0.1,
        *,
        keep: int = 256,
    ) -> None:
        limit, window = per_channel
        self._channel_budget = (limit, window * (1 + margin))
        self._global = _Window(per_bot[0], per_bot[1] * (1 + margin))
        self._channels: dict[int, _Window] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._users: Counter[int] = Counter()  # requests waiting for, holding or using a slot, per lock
        self._cool: dict[int | None, float] = {}
        self._keep = keep
        self._next_sweep = 0.0
        self.spacing = self._channel_budget[1] / limit
        """Seconds between two edits of one answer when it has the channel to itself."""
        self.waits = 0
        """How many times a request had to wait for a slot (for metrics and tests)."""

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _window(self, channel_id: int) -> _Window:
        window = self._channels.get(channel_id)
        if window is None:
            window = self._channels[channel_id] = _Window(*self._channel_budget)
        return window

    def _sweep(self) -> None:
        """Drop expired cool-offs and the windows of unused channels with nothing left in them."""
        now = self._now()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._channel_budget[1]
        self._cool = {key: until for key, until in self._cool.items() if until > now}
        self._channels = {
            key: window
            for key, window in self._channels.items()
            if key in self._users or not window.empty(now)
        }

    def _wait_time(self, channel_id: int | None, edit: bool, now: float) -> float:
        wait = max(self._global.wait_time(now), self._cool.get(None, 0.0) - now)
        if channel_id is not None:
            wait = max(wait, self._cool.get(channel_id, 0.0) - now)
            if edit:
                wait = max(wait, self._window(channel_id).wait_time(now))
        return wait

    @asynccontextmanager
    async def slot(self, channel_id: int | None, *, edit: bool = True) -> AsyncIterator[None]:
        """Hold a slot for one request in ``channel_id`` (an edit unless ``edit=False``) while it runs."""
        if len(self._channels) + len(self._cool) > self._keep:
            self._sweep()
        key = channel_id if channel_id is not None else -1
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        self._users[key] += 1
        try:
            async with lock:
                while True:
                    now = self._now()
                    wait = self._wait_time(channel_id, edit, now)
                    if wait <= 0:
                        break
                    self.waits += 1
                    await asyncio.sleep(wait)
                stamps = [self._global.record(now)]
                if edit and channel_id is not None:
                    stamps.append(self._window(channel_id).record(now))
            try:
                yield
            finally:
                done = self._now()
                for stamp in stamps:
                    stamp.at = done
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]

    def cool_off(self, channel_id: int | None, seconds: float) -> None:
        """Hold requests of ``channel_id`` (``None``: all requests) for ``seconds`` after a 429."""
        until = self._now() + seconds
        self._cool[channel_id] = max(self._cool.get(channel_id, 0.0), until)
