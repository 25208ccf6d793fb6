"""Built-in guards for the orchestrator's `should_process` hook: a rate limit and a message length limit.

A guard looks at a message and its context and either lets it through (returns None) or refuses it with
the polite reply the user sees (returns a string). Nothing runs and no state changes for a refused
message. Use them through `GuardedOrchestrator`, or call `check_guards` from your own hook::

    class MyOrchestrator(Orchestrator):
        guards = [MaxMessageLength(4000), RateLimit(per_user=(20, 60), per_tenant=(600, 60))]

        async def should_process(self, message, context):
            refusal = await check_guards(self.guards, message, context)
            context["refusal"] = refusal
            return refusal is None

        async def rejection_reply(self, message, context):
            return context.get("refusal") or ""
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from flowagents import observability
from flowagents.orchestrator import Orchestrator

Clock = Callable[[], float]


class Guard(Protocol):
    """Decides whether a message may be processed."""

    name: str

    async def check(self, message: str, context: dict[str, Any]) -> str | None:
        """None to let the message through, else the reply that explains the refusal."""
        ...


class MaxMessageLength:
    """Refuses messages longer than `max_chars` characters."""

    name = "max_length"

    def __init__(self, max_chars: int) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be at least 1")
        self.max_chars = max_chars

    async def check(self, message: str, context: dict[str, Any]) -> str | None:
        if len(message) <= self.max_chars:
            return None
        return (
            f"Sorry, that message is too long for me ({len(message):,} characters). "
            f"Please keep it under {self.max_chars:,} characters."
        )


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class TokenBuckets:
    """Token buckets by key: `count` messages per `per_seconds`, refilled continuously. Bounded in size."""

    def __init__(
        self, count: int, per_seconds: float, *, clock: Clock = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if count < 1 or per_seconds <= 0:
            raise ValueError("a rate needs count >= 1 and per_seconds > 0")
        self.count = count
        self.per_seconds = per_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[Any, _Bucket] = OrderedDict()

    def _refilled(self, key: Any, now: float) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.count), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            rate = self.count / self.per_seconds
            bucket.tokens = min(float(self.count), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        return bucket

    def available(self, key: Any) -> bool:
        """True when `key` may send a message now (takes nothing)."""
        return self._refilled(key, self.clock()).tokens >= 1.0

    def take(self, key: Any) -> None:
        """Spend one message of `key`."""
        self._refilled(key, self.clock()).tokens -= 1.0

    def retry_after(self, key: Any) -> float:
        """Seconds until `key` may send again (0 when it may now)."""
        bucket = self._refilled(key, self.clock())
        return max(0.0, (1.0 - bucket.tokens) * self.per_seconds / self.count)


class RateLimit:
    """Limits messages per user and per tenant (token buckets, in this process's memory).

    `per_user=(20, 60)` allows bursts of 20 and 20 messages a minute on average. A refused message does
    not use up the budget. With several bot processes each keeps its own budget (see docs/operations.md).

    A message whose context metadata says `shared_tenant=False` counts against its user's budget only: its
    tenant gathers unrelated people rather than one team (the Discord channel sets it on DMs, which all
    share the tenant `discord-dm`), so some of them must not use up everyone's budget.
    """

    name = "rate_limit"

    def __init__(
        self,
        per_user: tuple[int, float] | None = (20, 60.0),
        per_tenant: tuple[int, float] | None = (600, 60.0),
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.users = TokenBuckets(*per_user, clock=clock) if per_user else None
        self.tenants = TokenBuckets(*per_tenant, clock=clock) if per_tenant else None

    async def check(self, message: str, context: dict[str, Any]) -> str | None:
        tenant = context.get("tenant_id")
        user_key = (tenant, context.get("user_id"))
        tenants = self.tenants if (context.get("metadata") or {}).get("shared_tenant", True) else None
        if self.users is not None and not self.users.available(user_key):
            wait = self.users.retry_after(user_key)
            return (
                "You're sending messages faster than I can keep up. "
                f"Please wait {_seconds(wait)} and try again."
            )
        if tenants is not None and not tenants.available(tenant):
            wait = tenants.retry_after(tenant)
            return (
                "I'm getting a lot of messages from your team right now. "
                f"Please try again in {_seconds(wait)}."
            )
        if self.users is not None:
            self.users.take(user_key)
        if tenants is not None:
            tenants.take(tenant)
        return None


def _seconds(value: float) -> str:
    """A friendly duration, rounded up: 1 second, 45 seconds, 30 minutes, 2 hours."""
    whole = max(1, int(value + 0.999))
    for size, unit in ((3600, "hour"), (60, "minute")):
        if whole >= 2 * size:
            count = -(-whole // size)
            return f"{count} {unit}s"
    return "1 second" if whole == 1 else f"{whole} seconds"


async def check_guards(guards: Sequence[Guard], message: str, context: dict[str, Any]) -> str | None:
    """Run guards in order; the first refusal wins (later guards are not consulted)."""
    for guard in guards:
        refusal = await guard.check(message, context)
        if refusal is not None:
            observability.guard_rejected(
                guard.name, str(context.get("tenant_id")), str(context.get("user_id"))
            )
            return refusal
    return None


class GuardedOrchestrator(Orchestrator):
    """An orchestrator whose default `should_process` applies `guards` and replies with their refusal."""

    def __init__(self, *args: Any, guards: Sequence[Guard] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guards: list[Guard] = list(guards)

    async def should_process(self, message: str, context: dict[str, Any]) -> bool:
        refusal = await check_guards(self.guards, message, context)
        context["refusal"] = refusal
        return refusal is None

    async def rejection_reply(self, message: str, context: dict[str, Any]) -> str:
        refusal: str | None = context.get("refusal")
        return refusal or ""
