"""The small protocol every language-model client implements, and usage accounting per tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Protocol, TypedDict, TypeVar, runtime_checkable

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

UNATTRIBUTED = "unattributed"
"""The usage key of calls made with no tenant (outside a conversation and without `tenant_id=`)."""


class ChatMessage(TypedDict):
    """One chat message: role is system, user or assistant."""

    role: str
    content: str


class LLMUsage(BaseModel):
    """Tokens spent, summed over calls."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    interrupted_calls: int = 0
    """Streams closed before the server reported usage (cancelled, timed out); their completion tokens
    are estimated from the chunks received (about one token each) and their prompt tokens are unknown."""

    def add(self, prompt: int, completion: int, *, interrupted: bool = False) -> None:
        """Count one call."""
        total = prompt + completion  # first: bad counts raise before anything is changed
        self.calls += 1
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens += total
        if interrupted:
            self.interrupted_calls += 1


class UsageLedger:
    """Token usage per tenant. `OpenAIClient.usage` is one; read it for billing and quotas."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, LLMUsage] = {}

    def record(
        self, tenant_id: str | None, prompt: int, completion: int, *, interrupted: bool = False
    ) -> None:
        """Add one call's tokens to `tenant_id` (None counts as `UNATTRIBUTED`)."""
        key = tenant_id or UNATTRIBUTED
        usage = self._by_tenant.get(key)
        if usage is None:
            usage = self._by_tenant[key] = LLMUsage()
        usage.add(prompt, completion, interrupted=interrupted)

    def for_tenant(self, tenant_id: str) -> LLMUsage:
        """A copy of one tenant's usage (zero if it made no call)."""
        usage = self._by_tenant.get(tenant_id)
        return usage.model_copy() if usage is not None else LLMUsage()

    def by_tenant(self) -> dict[str, LLMUsage]:
        """Copies of every tenant's usage."""
        return {tenant: usage.model_copy() for tenant, usage in self._by_tenant.items()}

    @property
    def total(self) -> LLMUsage:
        """Usage summed over all tenants."""
        out = LLMUsage()
        for usage in self._by_tenant.values():
            out.calls += usage.calls
            out.prompt_tokens += usage.prompt_tokens
            out.completion_tokens += usage.completion_tokens
            out.total_tokens += usage.total_tokens
            out.interrupted_calls += usage.interrupted_calls
        return out

    def reset(self, tenant_id: str | None = None) -> None:
        """Forget one tenant's usage, or everyone's."""
        if tenant_id is None:
            self._by_tenant.clear()
        else:
            self._by_tenant.pop(tenant_id, None)


current_tenant: ContextVar[str | None] = ContextVar("flowagents_llm_tenant", default=None)
"""The tenant LLM calls are billed to when they pass no `tenant_id` (the orchestrator sets it per turn)."""


_tenant_tokens: ContextVar[tuple[Token[str | None], ...]] = ContextVar(
    "flowagents_llm_tenant_tokens", default=()
)
"""The `current_tenant` tokens of the `llm_tenant` blocks open in this context, innermost last."""


class llm_tenant:
    """Bill LLM calls made inside this block (sync or async `with`) to `tenant_id`.

    One instance may be reused, nested and shared by concurrent tasks: each entry keeps its own token in
    the current context, and leaving restores the tenant seen on entry.
    """

    def __init__(self, tenant_id: str | None) -> None:
        self.tenant_id = tenant_id

    def __enter__(self) -> None:
        token = current_tenant.set(self.tenant_id)
        _tenant_tokens.set((*_tenant_tokens.get(), token))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        tokens = _tenant_tokens.get()
        if tokens:
            _tenant_tokens.set(tokens[:-1])
            current_tenant.reset(tokens[-1])

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def resolve_tenant(tenant_id: str | None) -> str | None:
    """`tenant_id` if given, else the tenant of the current turn (see `llm_tenant`)."""
    return tenant_id if tenant_id is not None else current_tenant.get()


@runtime_checkable
class LLMClient(Protocol):
    """What the orchestrator and agents need from a language model.

    Implement these three calls (plus `close`) to plug in another provider; `tenant_id` lets the client
    account usage per tenant (when None, use `resolve_tenant(None)`: the tenant of the current turn).
    Raise the `flowagents.llm.errors` types (all `LLMError`) so callers handle every provider alike.
    """

    async def complete(
        self, messages: Sequence[ChatMessage], *, tenant_id: str | None = None, **options: Any
    ) -> str:
        """The model's whole answer."""
        ...

    def stream(
        self, messages: Sequence[ChatMessage], *, tenant_id: str | None = None, **options: Any
    ) -> AsyncIterator[str]:
        """The model's answer as text chunks, as they arrive."""
        ...

    async def structured(
        self,
        messages: Sequence[ChatMessage],
        schema: type[M],
        *,
        tenant_id: str | None = None,
        **options: Any,
    ) -> M:
        """The model's answer parsed into `schema` (structured output)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
