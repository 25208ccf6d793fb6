"""`OpenAIClient`: the `LLMClient` on the official `openai` package (any OpenAI-compatible server)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import openai
import pydantic
from openai.types.chat.chat_completion_chunk import ChatCompletionChunk, Choice, ChoiceDelta

from flowagents.errors import ConfigurationError, LLMError
from flowagents.llm.base import ChatMessage, M, UsageLedger, resolve_tenant
from flowagents.llm.errors import (
    LLMAuthError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
)

log = logging.getLogger("flowagents.llm")

DEFAULT_MODEL = "gpt-4o-mini"
NO_KEY = "no-key"
"""The key sent to a server given by `base_url` when no key is set (local servers often need none)."""


class OpenAIClient:
    """Chat completions through `openai.AsyncOpenAI`. Constructing it makes no network call.

    `api_key`, `base_url` and `model` fall back to `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `OPENAI_MODEL`,
    so any OpenAI-compatible server works (vLLM, Ollama, LiteLLM and other gateways). `timeout` (seconds,
    per request attempt) and `max_retries` are the `openai` client's own: it retries connection errors,
    408/409/429 and 5xx with backoff, honouring `retry-after`. Errors come out as `flowagents.llm.errors`
    types. Token usage of every call is added to `usage` under the call's tenant.
    """

    def __init__(
        self,
        api_key: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 2,
        stream_usage: bool = True,
        default_headers: dict[str, str] | None = None,
        usage: UsageLedger | None = None,
    ) -> None:
        key = api_key or os.environ.get("OPENAI_API_KEY") or None
        url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        if key is None and url is None:
            raise ConfigurationError(
                "OpenAIClient needs an API key: pass api_key=... or set OPENAI_API_KEY. For a local "
                "OpenAI-compatible server that needs no key, set base_url=... or OPENAI_BASE_URL instead."
            )
        self.model = model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        self.timeout = timeout
        self.max_retries = max_retries
        self.stream_usage = stream_usage
        self.usage: UsageLedger = usage if usage is not None else UsageLedger()
        """Tokens spent, per tenant: `client.usage.for_tenant("T1").total_tokens`."""
        self.openai = openai.AsyncOpenAI(
            api_key=key or NO_KEY,
            base_url=url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
        )
        """The underlying `openai.AsyncOpenAI`, for calls this class does not wrap (usage is not recorded)."""
        self._server = _host(str(self.openai.base_url))

    def __repr__(self) -> str:
        return f"OpenAIClient(model={self.model!r}, server={self._server!r})"

    # ------------------------------------------------------------------------------------ the protocol

    async def complete(
        self, messages: Sequence[ChatMessage], *, tenant_id: str | None = None, **options: Any
    ) -> str:
        """The model's whole answer as text (empty if it answered only with tool calls).

        Raises `LLMResponseError` when the answer is not a chat completion, was refused, cut off at the token
        limit or withheld by a content filter.
        """
        tenant = resolve_tenant(tenant_id)
        model = options.pop("model", self.model)
        with self._errors():
            raw = await self.openai.chat.completions.with_raw_response.create(
                model=model,
                messages=_wire(messages),
                **options,
            )
        return self._answer(tenant, raw.http_response) or ""

    async def stream(
        self, messages: Sequence[ChatMessage], *, tenant_id: str | None = None, **options: Any
    ) -> AsyncIterator[str]:
        """The answer as text chunks, each yielded as soon as it arrives.

        Closing this generator, cancelling the task that reads it or a timeout around it closes the HTTP
        response at once, so the server stops generating. Raises `LLMResponseError` (after the text received)
        when the answer was refused, cut off or filtered, or the server sent no chat completion chunks, and
        `LLMUnavailableError` when the stream ended before the model finished (no finish_reason).
        """
        tenant = resolve_tenant(tenant_id)
        model = options.pop("model", self.model)
        if self.stream_usage:
            options.setdefault("stream_options", {"include_usage": True})
        received = 0
        seen = 0
        finished = False
        usage: Any = None
        refusal = ""
        finish_reason: Any = None
        with self._errors():
            stream: Any = await self.openai.chat.completions.create(
                model=model,
                messages=_wire(messages),
                stream=True,
                **options,
            )
            try:
                async for chunk in stream:
                    if not isinstance(chunk, ChatCompletionChunk):
                        raise self._malformed("a stream chunk that is not a chat completion chunk")
                    seen += 1
                    if chunk.usage is not None:
                        usage = chunk.usage
                    if not chunk.choices:
                        continue
                    choice = chunk.choices[0] if isinstance(chunk.choices, list) else None
                    if not isinstance(choice, Choice):
                        raise self._malformed("a stream chunk without a proper choice")
                    finish_reason = choice.finish_reason or finish_reason
                    delta = choice.delta
                    if delta is None:
                        continue
                    if not isinstance(delta, ChoiceDelta) or not isinstance(delta.content, str | None):
                        raise self._malformed("a stream chunk whose delta is not text")
                    if isinstance(delta.refusal, str):
                        refusal += delta.refusal
                    text = delta.content
                    if text:
                        received += 1
                        yield text
                if not seen:
                    finished = True
                    kind = stream.response.headers.get("content-type", "no Content-Type")
                    raise self._malformed(f"no stream of chat completion chunks ({kind})")
                if finish_reason is None:  # ended cleanly mid-answer (a proxy, a restarted server)
                    raise LLMUnavailableError(
                        f"The LLM server at {self._server} ended the stream before the answer was finished "
                        "(no finish_reason); the connection was probably cut. Try again."
                    )
                finished = True
                _check_answer(refusal or None, finish_reason)
            finally:
                await stream.close()
                counts = self._stream_counts(usage)
                if counts is not None:
                    self.usage.record(tenant, *counts)
                else:
                    self.usage.record(tenant, 0, received, interrupted=not finished)

    async def structured(
        self,
        messages: Sequence[ChatMessage],
        schema: type[M],
        *,
        tenant_id: str | None = None,
        **options: Any,
    ) -> M:
        """The answer parsed into the pydantic model `schema`, via `response_format` json_schema (strict).

        Raises `LLMResponseError` when the answer is not valid JSON of that shape, was cut off or refused.
        """
        tenant = resolve_tenant(tenant_id)
        model = options.pop("model", self.model)
        with self._errors():
            raw = await self.openai.chat.completions.with_raw_response.parse(
                model=model,
                messages=_wire(messages),
                response_format=schema,
                **options,
            )
            text = self._answer(tenant, raw.http_response)
            if text is None:
                raise LLMResponseError(f"The model's answer was not a {schema.__name__} (no JSON content).")
            return schema.model_validate_json(text)

    async def close(self) -> None:
        """Close the HTTP connections."""
        await self.openai.close()

    # ------------------------------------------------------------------------------------ internals

    def _answer(self, tenant: str | None, http_response: Any) -> str | None:
        """The text of a (non-streamed) chat completion, its usage recorded first (an unusable answer
        is paid for too). Raises `LLMResponseError` when the body is not a usable chat completion."""
        try:
            data = http_response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            kind = http_response.headers.get("content-type", "no Content-Type")
            raise self._malformed(f"something that is not a chat completion ({kind})")
        usage = data.get("usage")
        if usage is not None and not isinstance(usage, dict):
            raise self._malformed("a malformed usage block")
        self.usage.record(tenant, *self._counts(usage or {}))
        choices = data.get("choices")
        if not isinstance(choices, list):
            raise self._malformed("a completion without choices")
        if not choices:
            raise LLMResponseError(f"The model at {self._server} returned no answer (empty choices).")
        choice = choices[0]
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise self._malformed("a choice without a message")
        content, refusal = message.get("content"), message.get("refusal")
        if not isinstance(content, str | None) or not isinstance(refusal, str | None):
            raise self._malformed("a message whose content is not text")
        _check_answer(refusal, choice.get("finish_reason"))
        return content

    def _counts(self, usage: Any) -> tuple[int, int]:
        """Prompt and completion tokens of a usage block (a dict or openai's object; missing counts are 0)."""
        counts = []
        for name in ("prompt_tokens", "completion_tokens"):
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if value is None:
                value = 0
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise self._malformed(f"a malformed usage block ({name} {value!r:.20})")
            counts.append(value)
        return counts[0], counts[1]

    def _stream_counts(self, usage: Any) -> tuple[int, int] | None:
        """A stream's reported usage, or None (estimate instead): its text was already delivered, so a
        malformed usage block is logged rather than raised."""
        if usage is None:
            return None
        try:
            return self._counts(usage)
        except LLMResponseError as exc:
            log.warning("%s Counting the stream's chunks instead.", exc)
            return None

    def _malformed(self, what: str) -> LLMResponseError:
        return LLMResponseError(
            f"The LLM server at {self._server} answered with {what}. Check that OPENAI_BASE_URL is the "
            "server's OpenAI-compatible API (usually ending in /v1), not a web page or another API."
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate `openai` exceptions into `flowagents.llm.errors` with messages that say what to do."""
        server = self._server
        retries = f"after {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'}"
        try:
            yield
        except LLMError:
            raise
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise LLMAuthError(
                f"The LLM server at {server} rejected the API key (HTTP {exc.status_code}). "
                "Set OPENAI_API_KEY (or api_key=...) to a valid key for this server."
            ) from exc
        except openai.RateLimitError as exc:
            hint = _retry_after(exc)
            raise LLMRateLimitError(
                f"The LLM server at {server} is rate limiting us (HTTP 429) {retries}. Wait"
                + (f" {hint:g}s" if hint is not None else "")
                + " or raise the account's rate limit or quota.",
                retry_after=hint,
            ) from exc
        except openai.APITimeoutError as exc:
            raise LLMTimeoutError(
                f"The LLM server at {server} did not answer within {self.timeout:g}s {retries}. "
                "Try again, or raise OpenAIClient(timeout=...)."
            ) from exc
        except openai.APIConnectionError as exc:
            raise LLMUnavailableError(
                f"Could not reach the LLM server at {server} {retries}. "
                "Check OPENAI_BASE_URL and the network."
            ) from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise LLMUnavailableError(
                    f"The LLM server at {server} failed (HTTP {exc.status_code}) {retries}. Try again later."
                ) from exc
            raise LLMError(
                f"The LLM server at {server} refused the request (HTTP {exc.status_code}: "
                f"{_server_message(exc)}). Check the model name (OPENAI_MODEL={self.model}) and options."
            ) from exc
        except (openai.APIResponseValidationError, pydantic.ValidationError, json.JSONDecodeError) as exc:
            raise LLMResponseError(
                f"The model at {server} answered in an unexpected shape ({type(exc).__name__}); "
                "use a model that supports structured outputs."
            ) from exc
        except openai.OpenAIError as exc:
            raise LLMError(f"The LLM call failed: {type(exc).__name__}: {exc}") from exc


def _check_answer(refusal: str | None, finish_reason: Any) -> None:
    """Raise `LLMResponseError` for an answer that was refused, cut off or filtered."""
    if refusal:
        raise LLMResponseError(f"The model refused to answer: {refusal[:200]}")
    if finish_reason == "length":
        raise LLMResponseError(
            "The model's answer was cut off at its token limit (finish_reason length): "
            "raise max_tokens or ask for a shorter answer."
        )
    if finish_reason == "content_filter":
        raise LLMResponseError(
            "The model's answer was withheld by the provider's content filter (finish_reason content_filter)."
        )


def _host(url: str) -> str:
    """host[:port] of a URL, without credentials, path or query (error messages may be logged)."""
    parts = urlsplit(url)
    host = parts.hostname or "the configured base_url"
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{host}:{port}" if port is not None else host


def _wire(messages: Sequence[ChatMessage]) -> Any:
    """Our messages as the `openai` package's message params (the same JSON shape)."""
    return [dict(m) for m in messages]


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if isinstance(message, str):
            return message[:200]
    return exc.message[:200]


def client_from_env(environ: dict[str, str] | None = None, **overrides: Any) -> OpenAIClient | None:
    """An `OpenAIClient` when `OPENAI_API_KEY` or `OPENAI_BASE_URL` is set, else None."""
    env = os.environ if environ is None else environ
    key = env.get("OPENAI_API_KEY") or None
    url = env.get("OPENAI_BASE_URL") or None
    if key is None and url is None:
        return None
    return OpenAIClient(api_key=key, base_url=url, model=env.get("OPENAI_MODEL") or None, **overrides)
