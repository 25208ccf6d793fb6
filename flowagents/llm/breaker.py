"""A small circuit breaker: after repeated LLM failures, stop calling for a while instead of waiting
on retries every turn."""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from typing import Any

from flowagents.errors import LLMError
from flowagents.llm.errors import (
    LLMAuthError,
    LLMRateLimitError,
    LLMTimeoutError,
    LLMUnavailableError,
)

_OUTAGES = (LLMTimeoutError, LLMUnavailableError, LLMRateLimitError, LLMAuthError)


class CircuitBreaker:
    """Closed until `failures` consecutive failures, then open for `cooldown` seconds (doubling on each
    failed probe, up to `max_cooldown`). A wrong key opens it at once for `max_cooldown`: it will not fix
    itself. A 429 whose Retry-After asks for longer than the cooldown pauses that long (up to `max_cooldown`).
    While open, `allow()` is False; after the cooldown one probe call is allowed. Only outages count
    (timeouts, unreachable server, 5xx, 429, a wrong key); an answer the server gave quickly does not (a
    malformed answer, or a request it refused, e.g. a message too long for the model's context)."""

    def __init__(
        self,
        failures: int = 2,
        cooldown: float = 30.0,
        max_cooldown: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self._clock = clock
        self._consecutive = 0
        self._open_until = 0.0
        self._current_cooldown = cooldown
        self._probe_since: float | None = None

    @property
    def is_open(self) -> bool:
        """True while calls are paused."""
        return self._clock() < self._open_until

    def allow(self) -> bool:
        """Whether a call may be made now (after the cooldown, one probe at a time)."""
        if self._open_until == 0.0:
            return True
        now = self._clock()
        if now < self._open_until:
            return False
        if self._probe_since is not None and now < self._probe_since + self._current_cooldown:
            return False  # a probe is under way (one that never reported expires after a cooldown)
        self._probe_since = now
        return True

    def success(self) -> None:
        """The call worked: close the circuit."""
        self._consecutive = 0
        self._open_until = 0.0
        self._current_cooldown = self.cooldown
        self._probe_since = None

    def failure(self, exc: BaseException | None = None) -> None:
        """The call failed: count it, and open the circuit when due.

        An `LLMError` other than a timeout, unavailable, rate-limit or auth error does not count: the server
        is up and answered (a malformed answer, or a 4xx refusal of this one request). Other exceptions do.
        """
        if isinstance(exc, LLMError) and not isinstance(exc, _OUTAGES):
            self._probe_since = None
            return
        self._consecutive += 1
        hint = exc.retry_after if isinstance(exc, LLMRateLimitError) else None
        if isinstance(exc, LLMAuthError):
            self._open(self.max_cooldown)
        elif self._probe_since is not None:
            self._current_cooldown = min(self._current_cooldown * 2, self.max_cooldown)
            self._open(self._current_cooldown, hint)
        elif self._consecutive >= self.failures:
            self._open(self._current_cooldown, hint)
        self._probe_since = None

    def abandoned(self) -> None:
        """The call was cancelled by our side (turn cancelled): it proves nothing; free the probe slot."""
        self._probe_since = None

    def _open(self, seconds: float, retry_after: float | None = None) -> None:
        """Pause for `seconds`, or as long as a 429's Retry-After asks (up to `max_cooldown`)."""
        if retry_after is not None and math.isfinite(retry_after):
            seconds = max(seconds, min(retry_after, self.max_cooldown))
        self._open_until = self._clock() + seconds


_shared: weakref.WeakKeyDictionary[Any, CircuitBreaker] = weakref.WeakKeyDictionary()


def shared_breaker(llm_client: Any) -> CircuitBreaker:
    """The breaker of one LLM client, shared by its router and slot extractor (a dead LLM pauses both)."""
    try:
        breaker = _shared.get(llm_client)
        if breaker is None:
            breaker = _shared[llm_client] = CircuitBreaker()
        return breaker
    except TypeError:  # not weak-referenceable: a private breaker
        return CircuitBreaker()
