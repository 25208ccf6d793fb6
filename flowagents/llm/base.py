"""The small protocol every language-model client implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol, TypedDict, TypeVar, runtime_checkable

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


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


@runtime_checkable
class LLMClient(Protocol):
    """What the orchestrator and agents need from a language model.

    Implement these three calls (plus `close`) to plug in another provider; `tenant_id` lets the client
    account usage per tenant.
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
        self, messages: Sequence[ChatMessage], schema: type[M], *, tenant_id: str | None = None, **options: Any
    ) -> M:
        """The model's answer parsed into `schema` (structured output)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
