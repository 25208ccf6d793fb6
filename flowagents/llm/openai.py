"""`OpenAIClient`: the `LLMClient` on the official `openai` package (any OpenAI-compatible server)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from flowagents.llm.base import ChatMessage, LLMUsage, M


class OpenAIClient:
    """Chat completions through `openai.AsyncOpenAI`. Constructing it makes no network call.

    Arguments fall back to `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `OPENAI_MODEL`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        from openai import AsyncOpenAI

        self.model = model or os.environ.get("OPENAI_MODEL") or "gpt-4o-mini"
        self._client = AsyncOpenAI(
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "missing-key",
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or None,
            timeout=timeout,
            max_retries=max_retries,
        )
        self.usage: dict[str, LLMUsage] = {}

    async def complete(
        self, messages: Sequence[ChatMessage], *, tenant_id: str | None = None, **options: Any
    ) -> str:
        response = await self._client.chat.completions.create(
            model=self.model, messages=list(messages), **options  # type: ignore[arg-type]
        )
        return response.choices[0].message.content or ""

    async def stream(
        self, messages: Sequence[ChatMessage], *, tenant_id: str | None = None, **options: Any
    ) -> AsyncIterator[str]:
        stream = await self._client.chat.completions.create(
            model=self.model, messages=list(messages), stream=True, **options  # type: ignore[arg-type]
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def structured(
        self, messages: Sequence[ChatMessage], schema: type[M], *, tenant_id: str | None = None, **options: Any
    ) -> M:
        response = await self._client.chat.completions.parse(
            model=self.model, messages=list(messages), response_format=schema, **options  # type: ignore[arg-type]
        )
        parsed = response.choices[0].message.parsed
        if parsed is None:
            raise ValueError("the model returned no structured answer")
        return parsed

    async def close(self) -> None:
        await self._client.close()
