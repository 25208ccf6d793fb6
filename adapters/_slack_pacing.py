"""Call budgets that keep a Slack workspace under Slack's per-method rate limits.

One :class:`CallBudget` exists per (workspace, method[, channel]) and is shared by every conversation
of that workspace, so 20 answers streaming at once draw from the same budget instead of each
assuming it has Slack to itself. A budget is a sliding window ("at most ``calls`` in any
``per_seconds``"), which is what a token bucket with a burst of ``calls`` guarantees without letting
a refilled burst exceed the window. After a 429 the whole budget cools off for ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

__all__ = ["DEFAULT_SLACK_LIMITS", "PER_CHANNEL_METHODS", "BudgetRegistry", "CallBudget", "RateLimit"]


@dataclass(frozen=True)
class RateLimit:
    """At most ``calls`` calls in any window of ``per_seconds`` seconds."""

    calls: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.per_seconds <= 0:
            raise ValueError("RateLimit needs calls >= 1 and per_seconds > 0")


#: Slack's published tiers (Tier 2 = 20/min, Tier 3 = 50/min, Tier 4 = 100/min); chat.postMessage is
#: "about one message per second per channel" and is budgeted per channel (see PER_CHANNEL_METHODS).
DEFAULT_SLACK_LIMITS: Mapping[str, RateLimit] = {
    "chat.postMessage": RateLimit(1, 1.0),
    "chat.update": RateLimit(50, 60.0),
    "chat.startStream": RateLimit(20, 60.0),
    "chat.appendStream": RateLimit(100, 60.0),
    "chat.stopStream": RateLimit(20, 60.0),
}

#: Methods whose budget is per channel rather than per workspace.
PER_CHANNEL_METHODS = frozenset({"chat.postMessage"})


class CallBudget:
    """A sliding-window budget for one method of one workspace, shared by all its conversations.

    A call holds a slot from before it is sent until its answer arrives, and its slot is dated by
    the answer: Slack counted the call before answering, so the window we keep always contains
    Slack's, whatever the network delay.
    """

    def __init__(
        self,
        limit: RateLimit,
        *,
        margin: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        poll: float = 0.01,
    ) -> None:
        self.limit = limit
        self._window = limit.per_seconds * (1.0 + margin)
        self._clock = clock
        self._poll = poll
        self._slots: list[list[float]] = []  # [end time]; inf while the call is in flight
        self._cool_off_until = 0.0
        self._lock = asyncio.Lock()
        self._waiting = 0

    def _prune(self, now: float) -> None:
        self._slots = [s for s in self._slots if now - s[0] < self._window]

    def _delay(self, now: float) -> float:
        """Seconds until one call may be made (0 when one may be made now)."""
        self._prune(now)
        delay = max(0.0, self._cool_off_until - now)
        if len(self._slots) >= self.limit.calls:
            finished = [s[0] for s in self._slots if s[0] != math.inf]
            delay = max(delay, min(finished) + self._window - now if finished else self._poll)
        return delay

    @property
    def tight(self) -> bool:
        """True when callers are queueing, Slack asked us to cool off, or at most one call is left."""
        now = self._clock()
        self._prune(now)
        return self._waiting > 0 or now < self._cool_off_until or self.limit.calls - len(self._slots) <= 1

    @property
    def idle(self) -> bool:
        """True when nothing constrains a call: no call in the window, in flight or waiting, no cool-off."""
        now = self._clock()
        self._prune(now)
        return not self._slots and not self._waiting and now >= self._cool_off_until

    def _take(self) -> list[float]:
        slot = [math.inf]
        self._slots.append(slot)
        return slot

    def _release(self, slot: list[float]) -> None:
        slot[0] = self._clock()

    def try_slot(self) -> AbstractAsyncContextManager[None] | None:
        """A slot for one call if one is free right now (use with ``async with``), else None."""
        if self._waiting or self._lock.locked() or self._delay(self._clock()) > 0:
            return None
        return self._hold(self._take())

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Wait (first come, first served) for a slot and hold it while the call runs."""
        return self._wait_and_hold()

    @asynccontextmanager
    async def _wait_and_hold(self) -> AsyncIterator[None]:
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    delay = self._delay(self._clock())
                    if delay <= 0:
                        break
                    await asyncio.sleep(delay)
                slot = self._take()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._release(slot)

    @asynccontextmanager
    async def _hold(self, slot: list[float]) -> AsyncIterator[None]:
        try:
            yield
        finally:
            self._release(slot)

    async def acquire(self) -> None:
        """Take one call's slot, dated now (for calls whose answer is not awaited here)."""
        async with self.slot():
            pass

    def cool_off(self, seconds: float) -> None:
        """Stop every caller of this budget for ``seconds`` (Slack's Retry-After)."""
        self._cool_off_until = max(self._cool_off_until, self._clock() + max(0.0, seconds))


class BudgetRegistry:
    """Creates and keeps one :class:`CallBudget` per (workspace, method[, channel]).

    Every DM is a channel of its own, so while the registry holds more than ``keep`` budgets, the idle
    ones are dropped (at most once a second: a sweep visits every budget).
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit] | None = None,
        *,
        keep: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = dict(DEFAULT_SLACK_LIMITS)
        if limits:
            self._limits.update(limits)
        self._budgets: dict[tuple[str, str, str], CallBudget] = {}
        self._keep = keep
        self._clock = clock
        self._next_sweep = 0.0

    def get(self, workspace: str, method: str, channel: str = "") -> CallBudget | None:
        """Budget for a call, or None when the method is not paced."""
        limit = self._limits.get(method)
        if limit is None:
            return None
        if len(self._budgets) > self._keep:
            self._drop_idle()
        key = (workspace, method, channel if method in PER_CHANNEL_METHODS else "")
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = CallBudget(limit, clock=self._clock)
        return budget

    def _drop_idle(self) -> None:
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        # An idle budget holds nothing, so a fresh one for its key enforces the same limit. Callers hold on
        # to a budget across an await only while it is busy (a slot taken or awaited, or a cool-off).
        self._budgets = {key: budget for key, budget in self._budgets.items() if not budget.idle}
