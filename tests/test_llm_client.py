"""OpenAIClient against the loopback fake OpenAI server, driven by the real `openai` package."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from flowagents import ConfigurationError, LLMClient, LLMError, OpenAIClient
from flowagents.llm import (
    UNATTRIBUTED,
    CircuitBreaker,
    LLMAuthError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
    LLMUnavailableError,
    llm_tenant,
)
from flowagents.llm.base import ChatMessage, current_tenant
from flowagents.llm.openai import client_from_env
from flowagents.testing.openai import Fail, FakeOpenAI, Raw, Reply, ToolCall


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


HI: list[ChatMessage] = [{"role": "user", "content": "hi"}]


class Weather(BaseModel):
    city: str
    celsius: float


async def test_complete_stream_and_structured_answers(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    assert isinstance(llm, LLMClient)
    fake_openai.script("Hello there", Reply(chunks=["Hel", "lo", "!"]), {"city": "Paris", "celsius": 21.5})

    assert await llm.complete(HI) == "Hello there"
    assert [c async for c in llm.stream(HI)] == ["Hel", "lo", "!"]
    weather = await llm.structured(HI, Weather)
    assert weather == Weather(city="Paris", celsius=21.5)

    first, streamed, parsed = fake_openai.chat_requests
    assert first.model == fake_openai.model and first.user_text == "hi" and not first.stream
    assert streamed.stream and streamed.include_usage
    assert parsed.json_schema is not None and set(parsed.json_schema["properties"]) == {"city", "celsius"}
    assert parsed.body["response_format"]["json_schema"]["strict"] is True
    await llm.close()


async def test_usage_is_recorded_per_tenant(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    fake_openai.script(
        Reply("a b c", prompt_tokens=10, completion_tokens=3),
        Reply(chunks=["x", "y"], prompt_tokens=7, completion_tokens=2),
        Reply("z", prompt_tokens=5, completion_tokens=1),
        Reply("w", prompt_tokens=1, completion_tokens=1),
    )
    await llm.complete(HI, tenant_id="T1")
    assert [c async for c in llm.stream(HI, tenant_id="T1")] == ["x", "y"]
    async with llm_tenant("T2"):  # what the orchestrator does around an agent
        await llm.complete(HI)
    await llm.complete(HI)

    t1 = llm.usage.for_tenant("T1")
    assert (t1.calls, t1.prompt_tokens, t1.completion_tokens, t1.total_tokens) == (2, 17, 5, 22)
    assert llm.usage.for_tenant("T2").total_tokens == 6
    assert llm.usage.for_tenant(UNATTRIBUTED).calls == 1
    assert llm.usage.total.total_tokens == 30
    assert llm.usage.for_tenant("nobody").calls == 0
    await llm.close()


async def test_a_stream_closed_early_is_counted_as_interrupted(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    gate = asyncio.Event()
    fake_openai.script(Reply(chunks=["one ", "two ", gate, "three"]))
    chunks = llm.stream(HI, tenant_id="T1")
    assert await anext(chunks) == "one "
    await chunks.aclose()  # the consumer stops reading: the HTTP response is closed at once
    await asyncio.wait_for(fake_openai.stream_closed.wait(), 10)
    usage = llm.usage.for_tenant("T1")
    assert usage.calls == 1 and usage.interrupted_calls == 1 and usage.completion_tokens == 1
    assert fake_openai.streams_completed == 0
    await llm.close()


async def test_wrong_key_is_an_auth_error_that_names_the_setting(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client(api_key="sk-wrong", max_retries=2)
    with pytest.raises(LLMAuthError, match="OPENAI_API_KEY") as info:
        await llm.complete(HI)
    assert "sk-wrong" not in str(info.value)
    assert len(fake_openai.chat_requests) == 1  # a 401 is not retried
    await llm.close()


async def test_429_is_retried_by_the_client_then_reported(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client(max_retries=1)
    fake_openai.script(Fail(429, retry_after=0.01), Fail(429, retry_after=0.01), "recovered")
    with pytest.raises(LLMRateLimitError) as info:
        await llm.complete(HI)
    assert info.value.retry_after == pytest.approx(0.01)
    assert len(fake_openai.chat_requests) == 2  # the first try and one retry, by the openai client
    assert await llm.complete(HI) == "recovered"
    await llm.close()


async def test_server_errors_are_retried_then_reported_as_unavailable(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client(max_retries=1)
    fake_openai.script(Fail(500, retry_after=0.01), "fine")
    assert await llm.complete(HI) == "fine"  # the openai client retried the 500
    fake_openai.script(Fail(503, retry_after=0.01), Fail(500))
    with pytest.raises(LLMUnavailableError, match="HTTP 500"):
        await llm.complete(HI)
    await llm.close()


async def test_timeout_is_reported(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client(timeout=0.2)
    fake_openai.script(Reply("late", delay=3))
    with pytest.raises(LLMTimeoutError, match="did not answer"):
        await llm.complete(HI)
    await llm.close()


async def test_unreachable_server_is_unavailable() -> None:
    async with FakeOpenAI() as fake:
        url = fake.base_url
    llm = OpenAIClient(api_key="sk-test", base_url=url, max_retries=0, timeout=1)
    with pytest.raises(LLMUnavailableError, match="OPENAI_BASE_URL"):
        await llm.complete(HI)
    await llm.close()


async def test_malformed_or_refused_structured_answers_are_response_errors(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    fake_openai.script(
        "this is not json",
        {"city": "Paris"},  # a required property is missing
        Reply(None, refusal="I can't help with that."),
        Reply('{"city": "Par', finish_reason="length"),
    )
    for _ in range(4):
        with pytest.raises(LLMResponseError):
            await llm.structured(HI, Weather, tenant_id="T1")
    assert llm.usage.for_tenant("T1").calls == 4  # paid for, even when unusable
    assert issubclass(LLMResponseError, LLMError)
    await llm.close()


async def test_other_client_errors_say_what_to_check(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    fake_openai.script(Fail(404))
    with pytest.raises(LLMError, match="OPENAI_MODEL"):
        await llm.complete(HI)
    await llm.close()


def completion(message: Any, usage: Any = None) -> dict[str, Any]:
    """A chat completion body as a (possibly misbehaving) server sends it."""
    body = {"id": "c", "object": "chat.completion", "created": 0, "model": "m"}
    body["choices"] = [{"index": 0, "message": message, "finish_reason": "stop"}]
    return body | ({"usage": usage} if usage is not None else {})


HTML_PAGE = Raw("<html><body>Open WebUI</body></html>", content_type="text/html")


@pytest.mark.parametrize(
    "answer",
    [
        HTML_PAGE,  # OPENAI_BASE_URL pointing at a web UI
        Raw({"data": []}),  # another API
        Raw(completion(None)),
        Raw(completion({"role": "assistant", "content": ["a", "b"]})),
        Raw(completion({"role": "assistant", "content": "hi"}, usage={"prompt_tokens": "n/a"})),
        Raw(completion({"role": "assistant", "content": "hi"}, usage=[1, 2])),
    ],
    ids=["html", "not-a-completion", "null-message", "content-list", "junk-usage", "usage-list"],
)
async def test_answers_that_are_not_chat_completions_are_response_errors(
    fake_openai: FakeOpenAI, answer: Raw
) -> None:
    llm = fake_openai.client()
    fake_openai.script(answer, answer)
    with pytest.raises(LLMResponseError, match="OPENAI_BASE_URL"):
        await llm.complete(HI, tenant_id="T1")
    with pytest.raises(LLMResponseError, match="OPENAI_BASE_URL"):
        await llm.structured(HI, Weather, tenant_id="T1")
    usage = llm.usage.for_tenant("T1")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens  # never half-counted
    await llm.close()


async def test_streams_that_are_not_chat_completion_chunks_are_response_errors(
    fake_openai: FakeOpenAI,
) -> None:
    llm = fake_openai.client()
    sse = "".join(
        "data: " + json.dumps(chunk) + "\n\n"
        for chunk in (
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": "Hi"}}],
            },
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"content": [1]}}],
            },
        )
    )
    fake_openai.script(
        HTML_PAGE,
        Raw(completion({"role": "assistant", "content": "hi"})),
        Raw(sse, content_type="text/event-stream"),
    )
    with pytest.raises(LLMResponseError, match="text/html"):  # not silently an empty answer
        _ = [c async for c in llm.stream(HI)]
    with pytest.raises(LLMResponseError, match="application/json"):  # the server ignored stream=True
        _ = [c async for c in llm.stream(HI)]
    received: list[str] = []
    with pytest.raises(LLMResponseError, match="not text"):
        async for chunk in llm.stream(HI):
            received.append(chunk)
    assert received == ["Hi"]
    await llm.close()


async def test_a_streams_junk_usage_is_estimated_from_its_chunks(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}],
    }
    last = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": "n/a"}}
    fake_openai.script(
        Raw(f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(last)}\n\n", content_type="text/event-stream")
    )
    assert [c async for c in llm.stream(HI, tenant_id="T1")] == ["Hi"]  # the answer was delivered
    usage = llm.usage.for_tenant("T1")
    assert (usage.calls, usage.completion_tokens, usage.interrupted_calls) == (1, 1, 0)
    await llm.close()


async def test_a_stream_that_ends_before_the_model_finished_is_an_error(fake_openai: FakeOpenAI) -> None:
    # A proxy or a crashed server may end the response cleanly mid-answer: no finish_reason, no [DONE].
    llm = fake_openai.client()
    chunks = [
        {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
        for text in ("The three steps are: ", "first, ope")
    ]
    sse = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks)
    fake_openai.script(Raw(sse, content_type="text/event-stream"))
    received: list[str] = []
    with pytest.raises(LLMUnavailableError, match="before the answer was finished"):
        async for chunk in llm.stream(HI, tenant_id="T1"):
            received.append(chunk)
    assert received == ["The three steps are: ", "first, ope"]  # shown as it came, then the verdict
    usage = llm.usage.for_tenant("T1")
    assert (usage.calls, usage.completion_tokens, usage.interrupted_calls) == (1, 2, 1)
    await llm.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Reply("The three steps are: first, ope", finish_reason="length"), "cut off"),
        (Reply(None, finish_reason="content_filter"), "content filter"),
        (Reply("I can't help with that", refusal="I can't help with that"), "refused"),
    ],
    ids=["cut-off", "filtered", "refused"],
)
async def test_cut_off_filtered_and_refused_answers_are_errors_in_complete_and_stream(
    fake_openai: FakeOpenAI, answer: Reply, message: str
) -> None:
    llm = fake_openai.client()
    fake_openai.script(answer, answer)
    with pytest.raises(LLMResponseError, match=message) as completed:
        await llm.complete(HI)
    received: list[str] = []
    with pytest.raises(LLMResponseError, match=message) as streamed:
        async for chunk in llm.stream(HI, tenant_id="T1"):
            received.append(chunk)
    assert str(streamed.value) == str(completed.value)
    assert "".join(received) == (answer.text or "")  # what came before the verdict was shown as it came
    assert llm.usage.for_tenant("T1").interrupted_calls == 0  # the whole answer was read and billed
    await llm.close()


async def test_credentials_in_base_url_are_never_shown(fake_openai: FakeOpenAI) -> None:
    port = fake_openai.base_url.split(":")[2].split("/")[0]
    fake_openai.api_key = None  # httpx sends the URL's credentials as basic auth
    url = fake_openai.base_url.replace("http://", "http://proxy:gw-SECRET@")
    llm = OpenAIClient(api_key="sk-test", base_url=url, max_retries=0, timeout=2)
    fake_openai.script(Fail(500))
    with pytest.raises(LLMUnavailableError) as info:
        await llm.complete(HI)
    assert f"127.0.0.1:{port}" in str(info.value) and f"127.0.0.1:{port}" in repr(llm)
    assert "SECRET" not in str(info.value) and "SECRET" not in repr(llm)
    await llm.close()
    query = OpenAIClient(api_key="sk-test", model="m", base_url="https://gw.example:8443/v1?api-key=q-SECRET")
    assert repr(query) == "OpenAIClient(model='m', server='gw.example:8443')"


def test_llm_tenant_can_be_reused_and_nested() -> None:
    acme = llm_tenant("acme")
    with acme:
        with llm_tenant("globex"), acme:
            assert current_tenant.get() == "acme"
        assert current_tenant.get() == "acme"
    assert current_tenant.get() is None


async def test_one_llm_tenant_is_shared_by_concurrent_tasks(fake_openai: FakeOpenAI) -> None:
    llm = fake_openai.client()
    acme = llm_tenant("acme")
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def first() -> None:
        async with acme:
            entered.set()
            await leave.wait()  # the second task enters meanwhile, and leaves first
            await llm.complete(HI)

    async def second() -> None:
        await entered.wait()
        async with acme:
            await llm.complete(HI)
        leave.set()
        assert current_tenant.get() is None

    await asyncio.gather(first(), second())
    assert llm.usage.for_tenant("acme").calls == 2 and UNATTRIBUTED not in llm.usage.by_tenant()
    await llm.close()


def test_configuration_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        OpenAIClient()
    assert client_from_env() is None

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # a local server needing no key
    monkeypatch.setenv("OPENAI_MODEL", "llama3.1")
    local = OpenAIClient()
    assert local.model == "llama3.1" and str(local.openai.base_url) == "http://127.0.0.1:9/v1/"

    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    configured = client_from_env(timeout=3.0)
    assert configured is not None and configured.openai.api_key == "sk-env" and configured.timeout == 3.0
    explicit = OpenAIClient(api_key="sk-x", model="gpt-4o-mini", base_url="http://127.0.0.1:8/v1")
    assert explicit.model == "gpt-4o-mini" and explicit.openai.api_key == "sk-x"


async def test_fake_speaks_tool_calls_and_embeddings_to_the_real_client(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake_openai.base_url, max_retries=0)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    call = ToolCall("get_weather", {"city": "Paris"})
    fake_openai.script(Reply(None, tool_calls=[call]), Reply(None, tool_calls=[call]))

    plain = await client.chat.completions.create(model="m", messages=HI, tools=tools)  # type: ignore[arg-type]
    assert plain.choices[0].finish_reason == "tool_calls"
    made = plain.choices[0].message.tool_calls
    assert made is not None and made[0].function.name == "get_weather"  # type: ignore[union-attr]
    async with client.chat.completions.stream(model="m", messages=HI, tools=tools) as stream:  # type: ignore[arg-type]
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls
    assert streamed is not None and streamed[0].function.arguments == '{"city": "Paris"}'
    assert fake_openai.chat_requests[0].tools[0]["function"]["name"] == "get_weather"

    vectors = await client.embeddings.create(
        model="text-embedding-3-small", input=["book a table", "book table"]
    )
    same = await client.embeddings.create(model="e", input="book a table", encoding_format="float")
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64
    assert vectors.data[0].embedding == pytest.approx(same.data[0].embedding, abs=1e-6)
    fake_openai.script_embeddings(Fail(500))
    with pytest.raises(openai.InternalServerError):
        await client.embeddings.create(model="e", input="x")
    await client.close()


def test_circuit_breaker_pauses_then_probes() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown=10, max_cooldown=40, clock=lambda: now[0])
    assert breaker.allow()
    breaker.failure(LLMUnavailableError("down"))
    assert breaker.allow()  # one failure is not enough
    breaker.failure(LLMTimeoutError("slow"))
    assert not breaker.allow() and breaker.is_open
    now[0] = 10.5
    assert breaker.allow()  # one probe after the cooldown ...
    assert not breaker.allow()  # ... at a time
    breaker.failure(LLMUnavailableError("still down"))
    now[0] = 25.0
    assert not breaker.allow()  # the cooldown doubled
    now[0] = 31.0
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and not breaker.is_open
    breaker.failure(LLMResponseError("bad json"))
    breaker.failure(LLMResponseError("bad json"))
    assert breaker.allow()  # malformed answers mean the server is up
    breaker.failure(LLMError("HTTP 400: maximum context length exceeded"))
    breaker.failure(LLMError("HTTP 404: unknown model"))
    assert breaker.allow()  # requests the server refused: it is up, the requests were wrong
    breaker.failure(LLMAuthError("wrong key"))
    now[0] = 60.0
    assert not breaker.allow()  # a wrong key pauses for the longest cooldown at once


async def test_a_rate_limited_llm_is_paused_as_long_as_the_server_asks(fake_openai: FakeOpenAI) -> None:
    from flowagents.routing.base import AgentProfile
    from flowagents.routing.llm import LLMRouter

    now = [0.0]
    breaker = CircuitBreaker(clock=lambda: now[0])  # 2 failures, 30 s, up to 300 s
    router = LLMRouter(fake_openai.client(), breaker=breaker)
    await router.setup([AgentProfile("Booking", "Book a table", ("book",))])
    fake_openai.default = Fail(429, retry_after=120)
    for _ in range(2):
        with pytest.raises(LLMRateLimitError) as info:
            await router.route("dinner for two?", {"tenant_id": "T1"}, frozenset({"Booking"}))
        assert info.value.retry_after == 120
    now[0] = 31.0
    assert not breaker.allow()  # not probing at 30 s when the server said 120 s
    now[0] = 121.0
    assert breaker.allow()
    breaker.failure(LLMRateLimitError("again", retry_after=900))
    now[0] = 121.0 + 299
    assert not breaker.allow()  # capped at max_cooldown, however long the server asks
    now[0] = 121.0 + 301
    assert breaker.allow()
    await router.llm.close()
