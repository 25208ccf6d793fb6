# ruff: noqa: E402
"""Embedders: the packaged offline model, its hash check, the disk cache and the OpenAI client."""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from _requirements import require_semantic_extra

require_semantic_extra()

import numpy as np
from openai import AsyncOpenAI

from flowagents import AgentResult, AgentStatus, Orchestrator, RoutingEvent, StandardAgent, flowagent
from flowagents.embeddings import (
    CachedEmbedder,
    EmbeddingCache,
    EmbeddingError,
    OpenAIEmbedder,
    Vectors,
    l2_normalise,
)
from flowagents.embeddings.base import ModelIntegrityError
from flowagents.llm import CircuitBreaker
from flowagents.routing.llm import HybridRouter
from flowagents.routing.semantic import SemanticConfig, SemanticRouter
from flowagents.testing.openai import Fail, FakeOpenAI


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No hub downloads, and any connection off the loopback fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    real_connect = socket.socket.connect

    def guarded(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            raise AssertionError(f"tried to reach {host}")
        real_connect(sock, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", guarded)
    yield


async def test_local_embedder_loads_the_packaged_model_offline(
    offline: None, caplog: pytest.LogCaptureFixture
) -> None:
    from flowagents.embeddings.local import LocalEmbedder

    with caplog.at_level(logging.INFO):
        embedder = LocalEmbedder()
        embedder.embed_sync(["warm up"])
    # The in-memory int8 conversion does not flood the bot's log with onnxruntime's progress lines.
    assert [r.getMessage() for r in caplog.records if "onnxruntime" in r.pathname] == []
    texts = [
        "what is my checking account balance",
        "how much money is in my checking account",
        "will it rain",
    ]
    vectors = embedder.embed_sync(texts)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.6 > vectors[0] @ vectors[2]
    assert embedder.embed_sync([]).shape == (0, 384)
    np.testing.assert_allclose(await embedder.embed(texts), vectors, atol=1e-5)

    # The in-memory int8 conversion stays close to the packaged model run as it is.
    plain = LocalEmbedder(quantize="none")
    assert plain.model_id != embedder.model_id  # cached vectors of one are never served for the other
    assert np.min(np.sum(plain.embed_sync(texts) * vectors, axis=1)) > 0.97


def test_local_embedders_that_truncate_differently_never_share_cached_vectors() -> None:
    from flowagents.embeddings.local import LocalEmbedder

    long_text = "please book a table for four people " * 10 + "and tell me about the weather on friday"
    short, full = LocalEmbedder(quantize="none", max_tokens=8), LocalEmbedder(quantize="none")
    assert float(short.embed_sync([long_text])[0] @ full.embed_sync([long_text])[0]) < 0.99  # other vectors
    assert short.model_id != full.model_id  # so the disk cache keeps them apart


def test_tampered_model_file_is_rejected(tmp_path: Path) -> None:
    from flowagents.embeddings.local import LocalEmbedder, default_model_path

    copy = tmp_path / "model.onnx"
    shutil.copyfile(default_model_path(), copy)
    with copy.open("r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        LocalEmbedder(model_path=copy)


def test_tampered_tokenizer_is_rejected(tmp_path: Path) -> None:
    from flowagents.embeddings.local import MINILM_TOKENIZER_PATH, LocalEmbedder

    copy = tmp_path / "tokenizer.json"
    copy.write_text(MINILM_TOKENIZER_PATH.read_text(encoding="utf-8").replace("[UNK]", "[UNX]", 1))
    with pytest.raises(ModelIntegrityError):
        LocalEmbedder(tokenizer_path=copy)
    with pytest.raises(ModelIntegrityError, match="missing"):
        LocalEmbedder(model_path=tmp_path / "nope.onnx")


class CountingEmbedder:
    """A deterministic test embedder that records what it was asked to embed."""

    def __init__(self, model_id: str = "count/1") -> None:
        self.model_id = model_id
        self.calls: list[list[str]] = []

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        self.calls.append(list(texts))
        rows = np.array([[len(t), t.count("a") + 1.0, 1.0] for t in texts], dtype=np.float32)
        return l2_normalise(rows)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return self.embed_sync(texts)


async def test_cache_embeds_each_text_once_and_survives_a_restart(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, EmbeddingCache(tmp_path))
    first = await cached.embed(["alpha", "beta", "alpha"])
    second = await cached.embed(["beta", "gamma"])
    assert inner.calls == [["alpha", "beta"], ["gamma"]]
    np.testing.assert_array_equal(first[1], second[0])

    restarted_inner = CountingEmbedder()
    restarted = CachedEmbedder(restarted_inner, EmbeddingCache(tmp_path))
    np.testing.assert_array_equal(restarted.embed_sync(["alpha", "gamma"]), np.stack([first[0], second[1]]))
    assert restarted_inner.calls == []

    other_model = CountingEmbedder("count/2")
    CachedEmbedder(other_model, EmbeddingCache(tmp_path)).embed_sync(["alpha"])
    assert other_model.calls == [["alpha"]]  # vectors of one model are never reused for another


def test_corrupt_cache_file_is_rebuilt(tmp_path: Path) -> None:
    inner = CountingEmbedder()
    CachedEmbedder(inner, EmbeddingCache(tmp_path)).embed_sync(["alpha"])
    for f in tmp_path.glob("*.npz"):
        f.write_bytes(b"not a numpy file")
    again = CountingEmbedder()
    CachedEmbedder(again, EmbeddingCache(tmp_path)).embed_sync(["alpha"])
    assert again.calls == [["alpha"]]


async def test_openai_embedder_against_a_loopback_server() -> None:
    async with FakeOpenAI() as fake:
        client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0, timeout=5.0)
        embedder = OpenAIEmbedder(client, model="text-embedding-3-small", batch_size=2)
        vectors = await embedder.embed(["book a table", "table for two", "what is the weather"])
        assert vectors.shape == (3, fake.embedding_dimensions)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        embedding_requests = [r for r in fake.requests if r.path.endswith("/embeddings")]
        assert [r.body["input"] for r in embedding_requests] == [
            ["book a table", "table for two"],
            ["what is the weather"],
        ]
        assert {r.body["model"] for r in embedding_requests} == {"text-embedding-3-small"}

        router = SemanticRouter(embedder, config=SemanticConfig(head="nearest", pivot=0.3))
        await router.afit({"booking": ["book a table", "reserve a table"], "weather": ["weather today"]})
        match = await router.apredict("please book a table")
        assert match.agent == "booking"

        fake.script_embeddings(Fail(500))
        with pytest.raises(EmbeddingError, match="HTTP 500"):
            await embedder.embed(["anything"])
        await embedder.close()


async def test_openai_embedder_reports_a_bad_key() -> None:
    async with FakeOpenAI() as fake:
        client = AsyncOpenAI(api_key="sk-wrong", base_url=fake.base_url, max_retries=0, timeout=5.0)
        embedder = OpenAIEmbedder(client)
        with pytest.raises(EmbeddingError, match="API key"):
            await embedder.embed(["hello"])
        with pytest.raises(EmbeddingError, match="paused"):  # a wrong key will not fix itself: no retry
            await embedder.embed(["hello"])
        assert len(fake.embedding_requests) == 1
        await embedder.close()


# -- a dead embeddings service ----------------------------------------------------------------------


@flowagent(
    name="EmbBooking",
    triggers=["book table"],
    examples=["book a table", "reserve a table for two", "a table for dinner tonight"],
)
class EmbBooking(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED, "Booked!")


@flowagent(name="EmbWeather", triggers=["weather"], examples=["will it rain tomorrow", "is it sunny today"])
class EmbWeather(StandardAgent):
    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED, "Sunny.")


class Clock:
    """A clock the test moves by hand (the breaker's cooldowns pass without waiting)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaking_embedder(fake: FakeOpenAI, clock: Clock) -> OpenAIEmbedder:
    client = AsyncOpenAI(api_key="sk-test", base_url=fake.base_url, max_retries=0, timeout=0.3)
    return OpenAIEmbedder(client, breaker=CircuitBreaker(clock=clock))


async def route(orch: Orchestrator, text: str, user: str) -> tuple[RoutingEvent, AgentResult]:
    events = [e async for e in orch.process_stream(text, user_id=user)]
    [routing] = [e for e in events if isinstance(e, RoutingEvent)]
    assert events[-1].type == "result"
    return routing, events[-1].result


@pytest.mark.parametrize("outage", [Fail(503), Fail(503, delay=5)], ids=["http-503", "timeout"])
async def test_a_dead_embeddings_service_is_not_called_on_every_message(outage: Fail) -> None:
    clock = Clock()
    async with FakeOpenAI() as fake:
        embedder = breaking_embedder(fake, clock)
        router = SemanticRouter(embedder, config=SemanticConfig(head="nearest", pivot=0.3))
        orch = Orchestrator(agents=[EmbBooking, EmbWeather], routing_strategy=router)
        event, _ = await route(orch, "please book a table", "u0")
        assert (event.agent, event.strategy, event.fallback) == ("EmbBooking", "semantic", None)
        sent = len(fake.embedding_requests)

        fake.embedding_failure = outage
        for i in range(5):
            event, result = await route(orch, "book table for two", f"u{i + 1}")
            assert (event.agent, event.fallback) == ("EmbBooking", "trigger")
            assert result.raw_message == "Booked!"
        event, result = await route(orch, "something else entirely", "u6")
        assert (event.agent, event.fallback) == (None, "trigger") and result.no_match
        # Two failures opened the circuit: the other messages were answered by triggers without a request.
        assert len(fake.embedding_requests) == sent + 2

        fake.embedding_failure = None
        clock.now += 31  # the pause is over: one probe, it works, and semantic routing is back
        for user in ("u7", "u8"):
            event, _ = await route(orch, "please book a table", user)
            assert (event.agent, event.fallback) == ("EmbBooking", None)
        assert len(fake.embedding_requests) == sent + 4
        await orch.close()
        await embedder.close()


async def test_hybrid_routing_falls_back_at_once_while_embeddings_are_down() -> None:
    clock = Clock()
    async with FakeOpenAI() as fake:
        fake.default = {"reason": "mentions a table", "agent": "EmbBooking", "confidence": 0.9}
        embedder = breaking_embedder(fake, clock)
        router = HybridRouter(fake.client(), embedder=embedder, min_examples=2)
        orch = Orchestrator(
            llm_client=router.llm_router.llm, agents=[EmbBooking, EmbWeather], routing_strategy=router
        )
        await orch.initialize()
        assert router.semantic is not None
        sent = len(fake.embedding_requests)

        fake.embedding_failure = Fail(500)
        for i in range(4):
            event, result = await route(orch, "somewhere to eat with a table", f"u{i}")
            assert (event.agent, event.fallback) == (None, "trigger") and result.no_match
        assert len(fake.embedding_requests) == sent + 2

        fake.embedding_failure = None
        clock.now += 31
        event, _ = await route(orch, "somewhere to eat with a table", "u9")
        assert event.agent == "EmbBooking" and event.fallback is None
        assert len(fake.embedding_requests) == sent + 3
        await orch.close()
        await embedder.close()


async def test_embeddings_pause_as_long_as_retry_after_asks() -> None:
    clock = Clock()
    async with FakeOpenAI() as fake:
        embedder = breaking_embedder(fake, clock)
        fake.embedding_failure = Fail(429, retry_after=120)
        for _ in range(4):
            with pytest.raises(EmbeddingError):
                await embedder.embed(["hello"])
        assert len(fake.embedding_requests) == 2

        fake.embedding_failure = None
        clock.now += 60  # past the 30 s cooldown, but the server asked for 120 s
        with pytest.raises(EmbeddingError, match="paused"):
            await embedder.embed(["hello"])
        assert len(fake.embedding_requests) == 2
        clock.now += 61
        assert (await embedder.embed(["hello"])).shape == (1, fake.embedding_dimensions)
        assert len(fake.embedding_requests) == 3
        await embedder.close()


async def test_refused_embedding_requests_do_not_pause_the_next_ones() -> None:
    async with FakeOpenAI() as fake:
        embedder = breaking_embedder(fake, Clock())
        too_long = Fail(400, message="This model's maximum context length is 8192 tokens.")
        fake.script_embeddings(too_long, too_long, too_long)
        for _ in range(3):
            with pytest.raises(EmbeddingError, match="HTTP 400"):
                await embedder.embed(["x " * 9000])
        assert (await embedder.embed(["hello"])).shape == (1, fake.embedding_dimensions)
        assert len(fake.embedding_requests) == 4
        await embedder.close()
