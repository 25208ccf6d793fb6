"""A loopback fake OpenAI server for testing LLM features with the real `openai` client.

`FakeOpenAI` is an aiohttp server on 127.0.0.1 (random port) that speaks the parts of the OpenAI HTTP API
flowagents uses:

- ``POST /v1/chat/completions``: JSON answers and SSE streaming with real chunk shapes (a final usage
  chunk when ``stream_options.include_usage`` is set), ``tools`` / ``tool_calls`` (streamed as argument
  fragments too), ``response_format`` json_schema (what ``client.chat.completions.parse()`` sends);
- ``POST /v1/embeddings`` (float or base64 encoding, deterministic bag-of-words vectors by default);
- ``GET /v1/models``.

Point the client at it with ``base_url``; nothing is mocked::

    pytest_plugins = ["flowagents.testing.openai"]

    async def test_answer(fake_openai):
        fake_openai.script("Hello!", Fail(500), Reply(chunks=["Hel", "lo"]))
        llm = fake_openai.client()              # an OpenAIClient(base_url=fake_openai.base_url, ...)
        assert await llm.complete([{"role": "user", "content": "hi"}]) == "Hello!"

Scripted answers are consumed one per chat request, in order; when the script is empty, `default`
answers (a `Reply`, a `Fail`, a `Raw` body, a string, or a callable that sees the `ChatRequest`).
Every request is recorded in `requests`. `streams_closed_by_client` counts streams the client closed
before the end, and `stream_closed` is set when that happens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import json
import re
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pytest_asyncio
from aiohttp import web
from pydantic import BaseModel

__all__ = [
    "ChatRequest",
    "Fail",
    "FakeOpenAI",
    "Raw",
    "Reply",
    "ToolCall",
    "fake_openai",
]


@dataclass
class ToolCall:
    """A function call the fake model makes; `arguments` is a dict (sent as JSON text) or raw text."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    @property
    def arguments_text(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    """One model answer.

    `content` is the text (a dict or pydantic model is sent as its JSON, for structured output). For a
    streaming request it is sent in `chunks` if given, else word by word. A chunk may also be a float
    (sleep that many seconds) or an `asyncio.Event` (wait until the test sets it): neither is sent.
    `delay` holds the response back before anything is sent (for client timeouts).
    """

    content: str | dict[str, Any] | BaseModel | None = ""
    chunks: Sequence[str | float | asyncio.Event] | None = None
    tool_calls: Sequence[ToolCall] = ()
    refusal: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    delay: float = 0.0

    @property
    def text(self) -> str | None:
        if isinstance(self.content, BaseModel):
            return self.content.model_dump_json()
        if isinstance(self.content, dict):
            return json.dumps(self.content)
        if self.content is None and self.chunks is not None:
            return "".join(c for c in self.chunks if isinstance(c, str))
        return self.content


_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: (
        "invalid_request_error",
        "invalid_api_key",
        "Incorrect API key provided: sk-***. You can find your "
        "API key at https://platform.openai.com/account/api-keys.",
    ),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Access denied."),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass
class Fail:
    """An HTTP error answer in OpenAI's error shape; `retry_after` (seconds) adds the retry headers."""

    status: int
    message: str | None = None
    retry_after: float | None = None
    delay: float = 0.0


@dataclass
class Raw:
    """An answer sent exactly as given, for servers that misbehave: an HTML page, a body that is not a chat
    completion, hand-written SSE (`content_type="text/event-stream"`). A dict or list body is sent as JSON."""

    body: str | bytes | dict[str, Any] | list[Any]
    status: int = 200
    content_type: str = "application/json"


Answer: TypeAlias = "Reply | Fail | Raw | str | dict[str, Any] | BaseModel"
Responder: TypeAlias = "Answer | Callable[[ChatRequest], Answer | Awaitable[Answer]]"


@dataclass
class ChatRequest:
    """A request the fake received (chat completions, embeddings or models)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else None

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or [])

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def include_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))

    @property
    def tools(self) -> list[dict[str, Any]]:
        return list(self.body.get("tools") or [])

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema of `response_format` json_schema, if any."""
        fmt = self.body.get("response_format") or {}
        if fmt.get("type") != "json_schema":
            return None
        schema = (fmt.get("json_schema") or {}).get("schema")
        return schema if isinstance(schema, dict) else None

    def text_of(self, role: str) -> str:
        """All message contents of one role, joined by newlines."""
        return "\n".join(_content_text(m.get("content")) for m in self.messages if m.get("role") == role)

    @property
    def user_text(self) -> str:
        """The last user message."""
        users = [m for m in self.messages if m.get("role") == "user"]
        return _content_text(users[-1].get("content")) if users else ""

    @property
    def system_text(self) -> str:
        return self.text_of("system") or self.text_of("developer")


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


_WORDS = re.compile(r"[a-z0-9]+")


def bag_of_words_vector(text: str, dimensions: int = 64) -> list[float]:
    """A deterministic unit vector: hashed word counts (texts sharing words are close)."""
    vec = [0.0] * dimensions
    for word in _WORDS.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest[:4], "little") % dimensions
        vec[index] += 1.0 if digest[4] & 1 else -1.0
    norm = sum(v * v for v in vec) ** 0.5
    return [v / norm for v in vec] if norm else vec


def _tokens(text: str) -> int:
    return len(text.split())


class FakeOpenAI:
    """The fake server. Use `async with FakeOpenAI() as fake:` or the `fake_openai` pytest fixture.

    `api_key`: the only key accepted (others get a real-shaped 401); None accepts any key.
    """

    def __init__(self, *, api_key: str | None = "sk-test", model: str = "gpt-fake") -> None:
        self.api_key = api_key
        self.model = model
        self.default: Responder = Reply("OK")
        """What answers a chat request when the script is empty."""
        self.embed: Callable[[str, int], list[float]] = bag_of_words_vector
        """Text and dimensions to vector, for /v1/embeddings."""
        self.embedding_dimensions = 64
        self.embedding_failure: Fail | None = None
        """While set, answers every embedding request the script does not (an embeddings service that is
        down: `Fail(503)`; slow: `Fail(503, delay=...)` longer than the client's timeout)."""
        self.requests: list[ChatRequest] = []
        self.streams_completed = 0
        self.streams_closed_by_client = 0
        self.stream_closed = asyncio.Event()
        """Set when a client closed a stream before its end (cancel, timeout, consumer stopped)."""
        self.chunks_sent = 0
        self._script: deque[Responder] = deque()
        self._embedding_script: deque[Fail | list[list[float]]] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        assert server is not None and server.sockets
        self._port = server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """Give this to the client as `base_url` (it ends in /v1)."""
        return f"http://127.0.0.1:{self._port}/v1"

    def client(self, **options: Any) -> Any:
        """An `OpenAIClient` pointed at this server (fast defaults: timeout 2 s, max_retries 0)."""
        from flowagents.llm.openai import OpenAIClient

        options.setdefault("timeout", 2.0)
        options.setdefault("max_retries", 0)
        return OpenAIClient(
            api_key=options.pop("api_key", self.api_key or "sk-any"),
            base_url=self.base_url,
            model=options.pop("model", self.model),
            **options,
        )

    # ------------------------------------------------------------------------------------ scripting

    def script(self, *answers: Responder) -> None:
        """Queue answers for the next chat requests, one per request, in order."""
        self._script.extend(answers)

    def script_embeddings(self, *answers: Fail | list[list[float]]) -> None:
        """Queue answers (a `Fail` or explicit vectors) for the next embedding requests."""
        self._embedding_script.extend(answers)

    @property
    def pending(self) -> int:
        """Scripted chat answers not used yet."""
        return len(self._script)

    @property
    def chat_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[ChatRequest]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    # ------------------------------------------------------------------------------------ handlers

    async def _record(self, request: web.Request) -> ChatRequest | web.Response:
        try:
            body = await request.json() if request.can_read_body else {}
        except json.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.")
        recorded = ChatRequest(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        self.requests.append(recorded)
        if self.api_key is not None and recorded.api_key != self.api_key:
            return _error(401)
        return recorded

    async def _models(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if isinstance(recorded, web.Response):
            return recorded
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "flowagents-fake"}],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        if isinstance(recorded, web.Response):
            return recorded
        responder = self._script.popleft() if self._script else self.default
        answer = await self._resolve(responder, recorded)
        if isinstance(answer, Fail):
            if answer.delay:
                await asyncio.sleep(answer.delay)
            return _error(answer.status, answer.message, answer.retry_after)
        if isinstance(answer, Raw):
            body = answer.body
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            return web.Response(
                status=answer.status,
                body=body.encode() if isinstance(body, str) else body,
                headers={"Content-Type": answer.content_type},
            )
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if recorded.stream:
            return await self._stream(request, recorded, answer)
        return web.json_response(self._completion(recorded, answer))

    async def _resolve(self, responder: Responder, request: ChatRequest) -> Reply | Fail | Raw:
        answer: Any = responder
        if callable(responder) and not isinstance(responder, (Reply, Fail, Raw, BaseModel)):
            answer = responder(request)
            if inspect.isawaitable(answer):
                answer = await answer
        if isinstance(answer, (Reply, Fail, Raw)):
            return answer
        if isinstance(answer, (str, dict, BaseModel)):
            return Reply(answer)
        raise TypeError(f"a FakeOpenAI answer must be a Reply, Fail, Raw, str, dict or model, not {answer!r}")

    def _usage(self, request: ChatRequest, answer: Reply, completion: int) -> dict[str, Any]:
        prompt = answer.prompt_tokens
        if prompt is None:
            prompt = sum(_tokens(_content_text(m.get("content"))) + 3 for m in request.messages)
        done = answer.completion_tokens if answer.completion_tokens is not None else completion
        return {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _envelope(self, request: ChatRequest, obj: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": obj,
            "created": int(time.time()),
            "model": request.model or self.model,
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
        }

    def _completion(self, request: ChatRequest, answer: Reply) -> dict[str, Any]:
        text = answer.text
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text,
            "refusal": answer.refusal,
            "annotations": [],
        }
        if answer.refusal is not None:
            message["content"] = None
        if answer.tool_calls:
            message["content"] = text or None
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments_text}}
                for c in answer.tool_calls
            ]
        finish = answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")
        body = self._envelope(request, "chat.completion")
        body["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
        body["usage"] = self._usage(request, answer, _tokens(text or "") + 10 * len(answer.tool_calls))
        return body

    async def _stream(self, request: web.Request, recorded: ChatRequest, answer: Reply) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        base = self._envelope(recorded, "chat.completion.chunk")
        with_usage = recorded.include_usage

        async def send(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> None:
            payload = dict(base, choices=choices)
            if with_usage:
                payload["usage"] = usage
            await self._write(request, response, "data: " + json.dumps(payload) + "\n\n")

        def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

        sent = 0
        try:
            await send(delta({"role": "assistant", "content": "", "refusal": None}))
            pieces: Sequence[str | float | asyncio.Event]
            if answer.chunks is not None:
                pieces = answer.chunks
            else:
                text = answer.text or ""
                pieces = re.findall(r"\S+\s*|\s+", text) if text else []
            for piece in pieces:
                if isinstance(piece, asyncio.Event):
                    await self._wait(request, piece.wait())
                elif isinstance(piece, (int, float)):
                    await self._wait(request, asyncio.sleep(piece))
                elif piece:
                    await send(delta({"content": piece}))
                    sent += 1
            for i, call in enumerate(answer.tool_calls):
                await send(
                    delta(
                        {
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call.id,
                                    "type": "function",
                                    "function": {"name": call.name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                args = call.arguments_text
                for start in range(0, len(args), 8):
                    await send(
                        delta(
                            {"tool_calls": [{"index": i, "function": {"arguments": args[start : start + 8]}}]}
                        )
                    )
            if answer.refusal is not None:
                await send(delta({"refusal": answer.refusal}))
            finish = answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")
            await send(delta({}, finish))
            if with_usage:
                usage = self._usage(recorded, answer, sent + 10 * len(answer.tool_calls))
                await self._write(
                    request, response, "data: " + json.dumps(dict(base, choices=[], usage=usage)) + "\n\n"
                )
            await self._write(request, response, "data: [DONE]\n\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError, _ClientGone):
            self.streams_closed_by_client += 1
            self.stream_closed.set()
            return response
        self.streams_completed += 1
        return response

    async def _write(self, request: web.Request, response: web.StreamResponse, text: str) -> None:
        if _gone(request):
            raise _ClientGone
        await response.write(text.encode())
        self.chunks_sent += 1

    async def _wait(self, request: web.Request, awaitable: Awaitable[Any]) -> None:
        """Wait for a gate or a pause, noticing if the client goes away meanwhile."""
        task = asyncio.ensure_future(awaitable)
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.01)
                if _gone(request):
                    raise _ClientGone
        finally:
            task.cancel()

    async def _embeddings(self, request: web.Request) -> web.Response:
        recorded = await self._record(request)
        if isinstance(recorded, web.Response):
            return recorded
        raw = recorded.body.get("input")
        texts = [raw] if isinstance(raw, str) else [str(t) for t in (raw or [])]
        dims = int(recorded.body.get("dimensions") or self.embedding_dimensions)
        scripted = self._embedding_script.popleft() if self._embedding_script else self.embedding_failure
        if isinstance(scripted, Fail):
            if scripted.delay:
                await asyncio.sleep(scripted.delay)
            return _error(scripted.status, scripted.message, scripted.retry_after)
        vectors = scripted if scripted is not None else [self.embed(t, dims) for t in texts]
        b64 = recorded.body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 else v,
            }
            for i, v in enumerate(vectors)
        ]
        tokens = sum(_tokens(t) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": recorded.model or "text-embedding-fake",
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class _ClientGone(Exception):
    pass


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _error(status: int, message: str | None = None, retry_after: float | None = None) -> web.Response:
    kind, code, text = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}")
    )
    headers = {"x-request-id": "req_" + uuid.uuid4().hex[:16]}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    body = {"error": {"message": message or text, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


@pytest_asyncio.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    """A started `FakeOpenAI` (key "sk-test"); closed after the test."""
    async with FakeOpenAI() as fake:
        yield fake
