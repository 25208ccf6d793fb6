"""Observability: structured logs with redaction, /metrics and /healthz, traces, graceful shutdown."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import BotRuntime
from bot.logs import Redactor, setup_logging
from bot.settings import BotSettings
from flowagents import AgentResult, AgentStatus, StandardAgent, flowagent, observability
from flowagents.llm.base import UsageLedger
from flowagents.observability import Observer, TurnSummary

ROOT = Path(__file__).resolve().parents[1]
DISCORD_LIKE = "MTA4NzY1NDMyMTA5ODc2NTQzMg.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789"

GATE: asyncio.Event | None = None


@flowagent(triggers=["obs slow job"], description="A job that waits for the test (observability)")
class ObsSlowAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str | AgentResult]:
        yield "Working... "
        assert GATE is not None
        await GATE.wait()
        yield AgentResult(status=AgentStatus.COMPLETED, raw_message="done.")


def settings(**values: Any) -> BotSettings:
    base: dict[str, Any] = {
        "flowagents_store": "memory",
        "port": 0,
        "flowagents_shutdown_grace": 30,
        "flowagents_agents": f"agents,{__name__}",
    }
    return BotSettings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


class Collect(Observer):
    def __init__(self) -> None:
        self.turns: list[TurnSummary] = []
        self.changed = asyncio.Event()

    def turn_finished(self, summary: TurnSummary) -> None:
        self.turns.append(summary)
        self.changed.set()

    async def wait(self, count: int) -> None:
        async with asyncio.timeout(20):
            while len(self.turns) < count:
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def collect() -> Iterator[Collect]:
    observer = Collect()
    remove = observability.add_observer(observer)
    yield observer
    remove()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not condition():  # noqa: ASYNC110 - polls state the bot sets, no event to await
            await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------ redaction


def test_redactor_masks_token_shapes_and_configured_secrets() -> None:
    redact = Redactor(["my-signing-secret-123"])
    text = (
        "bot xoxb-1234-5678-abcdEFGH app xapp-1-A123-456-abc user xoxp-99-88 key sk-proj-AbCdEf123456789 "
        f"discord {DISCORD_LIKE} header Bot {DISCORD_LIKE[:30]}xyz sig my-signing-secret-123 "
        "url redis://bot:pa55word@cache:6379/0 auth Bearer abc.def.ghi"
    )
    out = redact(text)
    for leaked in (
        "xoxb-1234",
        "xapp-1-A123",
        "xoxp-99",
        "sk-proj-AbCd",
        DISCORD_LIKE,
        "my-signing-secret",
        "pa55word",
        "abc.def.ghi",
    ):
        assert leaked not in out
    assert "redis://bot:[REDACTED]@cache:6379/0" in out
    assert (
        redact("routing chose BookingAgent with confidence 0.95")
        == "routing chose BookingAgent with confidence 0.95"
    )


def test_url_passwords_with_an_empty_user_are_masked_in_logs_and_error_lines(restore_logging: None) -> None:
    stream = io.StringIO()
    store = "redis://:s3cr3t@cache:6379/0"
    redact = setup_logging(settings(log_format="json", flowagents_store=store), stream)
    log = logging.getLogger("some.library")
    log.warning("connecting to %s", store)
    try:
        raise ConnectionError("cannot reach rediss://:s3cr3t@cache:6380/1")
    except ConnectionError:
        log.exception("store down")
    text = stream.getvalue()
    assert "s3cr3t" not in text
    assert "redis://:[REDACTED]@cache:6379/0" in text and "rediss://:[REDACTED]@cache:6380/1" in text
    assert redact("error: redis://:s3cr3t@cache:6379/0") == "error: redis://:[REDACTED]@cache:6379/0"
    assert (
        redact("error: cannot open redis://:***@cache:6379/0")
        == "error: cannot open redis://:***@cache:6379/0"
    )


def test_json_log_lines_redact_messages_extras_and_tracebacks(restore_logging: None) -> None:
    stream = io.StringIO()
    setup_logging(settings(log_format="json", openai_api_key="custom-key-without-prefix"), stream)
    log = logging.getLogger("test.redaction")
    log.info("connecting with %s", "xoxb-111-222-secret", extra={"tenant_id": "T1", "token": "xapp-1-secret"})
    try:
        raise RuntimeError("upstream refused custom-key-without-prefix")
    except RuntimeError:
        log.exception("call failed")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "connecting with [REDACTED]"
    assert lines[0]["tenant_id"] == "T1" and lines[0]["token"] == "[REDACTED]"
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "test.redaction"
    assert "RuntimeError: upstream refused [REDACTED]" in lines[1]["exception"]
    assert "secret" not in stream.getvalue() and "custom-key" not in stream.getvalue()


def test_text_format_on_a_terminal(restore_logging: None) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    setup_logging(settings(), stream)
    logging.getLogger("test.text").warning("hello %s", "sk-abcdefgh12345678", extra={"tenant_id": "T9"})
    assert stream.getvalue() == "WARNING test.text hello [REDACTED] tenant_id=T9\n"


def test_bot_logs_one_json_line_per_turn_with_routing_and_durations() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "FLOWAGENTS_"))
    }
    env.update(FLOWAGENTS_STORE="memory", PYTHONPATH=str(ROOT), LOG_FORMAT="auto")
    proc = subprocess.run(
        [sys.executable, "-m", "bot"],
        input="weather?\nbook a table\n4\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines()]
    turns = [r for r in records if r["logger"] == "flowagents.turn"]
    assert len(turns) == 3
    third, first, second = turns
    assert first["tenant_id"] == "console" and first["conversation_id"] == "console-user"
    assert (first["agent"], first["strategy"], first["status"]) == (
        "BookingAgent",
        "trigger",
        "waiting_for_input",
    )
    assert 0.5 <= first["confidence"] <= 1.0 and first["duration_ms"] >= 0 and first["first_chunk_ms"] >= 0
    assert (second["strategy"], second["confidence"]) == ("active", 1.0)
    assert third["no_match"] is True and third["agent"] is None


# ------------------------------------------------------------------------------------ metrics and health


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the matching samples (over labels not given)."""
    return sum(
        float(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def metric_value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


async def test_console_with_http_serves_metrics_and_health(collect: Collect) -> None:
    read_fd, write_fd = os.pipe()
    stdin = os.fdopen(read_fd, "r")
    writer = os.fdopen(write_fd, "w")
    runtime = BotRuntime(
        settings(flowagents_http=True, flowagents_max_message_chars=50),
        mode="auto",
        stdin=stdin,
        stdout=io.StringIO(),
    )
    await runtime.start()
    try:
        assert runtime.http is not None and runtime.orchestrator is not None
        writer.write("what's the weather?\nbook a table\n4\n" + "x" * 60 + "\n")
        writer.flush()
        await collect.wait(4)
        ledger = UsageLedger()
        ledger.record("T1", 120, 30)
        runtime.orchestrator.llm_client = SimpleNamespace(usage=ledger)
        observability.platform_rate_limited("slack", 1.5)
        observability.platform_retry("slack")
        async with aiohttp.ClientSession() as http:
            async with http.get(runtime.http.url + "/metrics") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            async with http.get(runtime.http.url + "/healthz") as resp:
                assert resp.status == 200
                assert (await resp.json())["status"] == "ok"
            runtime.request_stop("test")
            async with http.get(runtime.http.url + "/healthz") as resp:
                assert resp.status == 503 and (await resp.json())["status"] == "stopping"
    finally:
        writer.close()
        code = await runtime.shutdown()
        stdin.close()
    assert code == 0
    assert metric_sum(text, "flowagents_messages_total", outcome="processed") == 3
    assert metric_sum(text, "flowagents_messages_total", outcome="rejected") == 1
    assert metric_value(text, "flowagents_guard_rejections_total", guard="max_length") == 1
    assert (
        metric_value(text, "flowagents_routing_decisions_total", agent="BookingAgent", strategy="trigger")
        == 1
    )
    assert (
        metric_value(text, "flowagents_routing_decisions_total", agent="BookingAgent", strategy="active") == 1
    )
    assert metric_value(text, "flowagents_no_match_total") == 1
    assert metric_value(text, "flowagents_turn_duration_seconds_count", status="waiting_for_input") == 2
    assert metric_value(text, "flowagents_active_conversations") == 1
    assert metric_value(text, "flowagents_llm_tokens_total", tenant="T1", kind="prompt") == 120
    assert metric_value(text, "flowagents_llm_tokens_total", tenant="T1", kind="completion") == 30
    assert metric_value(text, "flowagents_platform_rate_limited_total", platform="slack") == 1
    assert metric_value(text, "flowagents_platform_retries_total", platform="slack") == 1


async def test_console_without_http_flag_serves_nothing() -> None:
    runtime = BotRuntime(settings(), mode="auto", stdin=io.StringIO(""), stdout=io.StringIO())
    await runtime.start()
    await runtime.wait()  # end of input stops the console bot
    assert runtime.http is None and runtime.stop_reason == "end of input"
    assert await runtime.shutdown() == 0


# ------------------------------------------------------------------------------------ traces


_TRACE_SCENARIO = """
import asyncio, json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents import BookingAgent
from bot.orchestrator import BotOrchestrator
from flowagents import StandardAgent, flowagent, observability
from flowagents.testing import ConversationDriver

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)


@flowagent(triggers=["check the weather"])
class WeatherAgent(StandardAgent):
    async def on_running(self, msg):
        await asyncio.sleep(0.01)  # the turn waits (as for a network reply) before its own span
        with observability.span("weather.lookup"):
            return "Sunny."


async def scenario():
    async with ConversationDriver.for_agents(
        [BookingAgent, WeatherAgent], orchestrator_class=BotOrchestrator
    ) as chat:
        # what a channel does: one span around the turn, one around each platform delivery
        with observability.span("slack.turn", channel="C1"):
            (await chat.say("check the weather")).expect_reply("Sunny.")
        with observability.span("slack.turn", channel="C2"):
            (await chat.say("book a table")).expect_question(field="guests")
            with observability.span("slack.deliver"):
                pass


asyncio.run(scenario())
print(json.dumps([
    {
        "name": s.name,
        "id": s.context.span_id,
        "trace": s.context.trace_id,
        "parent": s.parent.span_id if s.parent is not None else None,
        "attributes": dict(s.attributes or {}),
        "events": [e.name for e in s.events],
    }
    for s in exporter.get_finished_spans()
]))
"""


def test_one_trace_from_the_channel_turn_through_routing_and_the_agent_to_delivery() -> None:
    # A fresh interpreter: the global tracer provider can be installed only once per process.
    proc = subprocess.run(
        [sys.executable, "-c", _TRACE_SCENARIO], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    spans = json.loads(proc.stdout)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(s)
    (weather_channel, booking_channel) = by_name["slack.turn"]
    (weather_turn, booking_turn) = by_name["flowagents.turn"]
    (weather_route, booking_route) = by_name["flowagents.route"]
    (deliver,) = by_name["slack.deliver"]
    (lookup,) = by_name["weather.lookup"]
    (weather_agent,) = by_name["flowagents.agent"]
    assert booking_turn["attributes"]["flowagents.agent"] == "BookingAgent"
    assert booking_turn["attributes"]["flowagents.strategy"] == "trigger"
    assert booking_turn["attributes"]["flowagents.status"] == "waiting_for_input"
    assert booking_turn["events"][:2] == ["routing", "state_change"]
    assert booking_turn["parent"] == booking_channel["id"]
    assert booking_route["parent"] == booking_turn["id"]
    assert deliver["parent"] == booking_channel["id"]
    assert len({s["trace"] for s in (booking_channel, booking_turn, booking_route, deliver)}) == 1
    # after the turn waited, the agent's own span still nests under its turn
    assert weather_turn["parent"] == weather_channel["id"] and weather_route["parent"] == weather_turn["id"]
    assert lookup["parent"] == weather_agent["id"] and weather_agent["parent"] == weather_turn["id"]
    assert weather_turn["attributes"]["flowagents.status"] == "completed"


def _bot_orchestrator() -> Any:
    from bot.orchestrator import BotOrchestrator

    return BotOrchestrator


# ------------------------------------------------------------------------------------ shutdown


async def test_shutdown_refuses_new_messages_and_lets_running_turns_finish() -> None:
    global GATE
    GATE = asyncio.Event()
    runtime = BotRuntime(settings(), mode="playground", stdout=io.StringIO())
    await runtime.start()
    assert runtime.http is not None and runtime.orchestrator is not None
    url = runtime.http.url
    async with aiohttp.ClientSession() as http:
        resp = await http.post(url + "/api/say", json={"text": "obs slow job", "user_id": "u1"})
        first = json.loads(await resp.content.readline())
        while first["type"] != "message_chunk":
            first = json.loads(await resp.content.readline())
        assert first["content"] == "Working... "
        shutdown = asyncio.create_task(runtime.shutdown())
        await wait_until(lambda: runtime.stopping.is_set())
        await wait_until(lambda: runtime.channels[0]._closing)  # type: ignore[attr-defined]
        async with http.post(url + "/api/say", json={"text": "book a table"}) as refused:
            assert refused.status == 503
        assert not shutdown.done()
        GATE.set()
        rest = [json.loads(line) for line in (await resp.read()).splitlines()]
        assert [e["content"] for e in rest if e["type"] == "message_chunk"] == ["\n\ndone."]
        assert rest[-2]["type"] == "result" and rest[-2]["result"]["status"] == "completed"
        assert await shutdown == 0
    assert runtime.orchestrator.running_turns == 0


class RecordingChannel:
    """A second channel that notes when the bot tells it to stop taking events."""

    def __init__(self) -> None:
        self.closing = False

    async def start(self) -> None:
        await asyncio.Event().wait()

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109
        self.closing = True


async def test_every_channel_stops_taking_events_before_running_turns_are_awaited() -> None:
    global GATE
    GATE = asyncio.Event()
    runtime = BotRuntime(settings(), mode="playground", stdout=io.StringIO())
    await runtime.start()
    other = RecordingChannel()
    runtime.channels.append(other)
    assert runtime.http is not None
    async with aiohttp.ClientSession() as http:
        resp = await http.post(runtime.http.url + "/api/say", json={"text": "obs slow job"})
        await resp.content.readline()
        shutdown = asyncio.create_task(runtime.shutdown())
        await wait_until(lambda: other.closing)
        assert not shutdown.done() and runtime.orchestrator is not None
        assert runtime.orchestrator.running_turns == 1  # the playground's turn still runs
        GATE.set()
        await resp.read()
        assert await shutdown == 0


async def test_shutdown_takes_one_grace_period_even_when_a_turn_never_ends() -> None:
    global GATE
    GATE = asyncio.Event()  # never set: the turn outlasts the grace period
    runtime = BotRuntime(settings(flowagents_shutdown_grace=1), mode="playground", stdout=io.StringIO())
    await runtime.start()
    assert runtime.http is not None and runtime.orchestrator is not None
    async with aiohttp.ClientSession() as http:
        resp = await http.post(runtime.http.url + "/api/say", json={"text": "obs slow job"})
        await resp.content.readline()
        started = asyncio.get_running_loop().time()
        assert await runtime.shutdown() == 0
        took = asyncio.get_running_loop().time() - started
    assert 0.9 <= took < 1.6, f"shutdown took {took:.2f}s with FLOWAGENTS_SHUTDOWN_GRACE=1"
    assert runtime.orchestrator.running_turns == 0


def test_sigterm_stops_the_bot_gracefully_with_exit_zero() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "FLOWAGENTS_"))
    }
    env.update(FLOWAGENTS_STORE="memory", PYTHONPATH=str(ROOT), PORT="0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "--playground"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"playground: (http://127\.0\.0\.1:\d+)/\n", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        fetch = f"import urllib.request as u; print(u.urlopen('{match[1]}/healthz').read().decode())"
        health = subprocess.run([sys.executable, "-c", fetch], capture_output=True, text=True, timeout=30)
        assert json.loads(health.stdout)["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    messages = [json.loads(line)["message"] for line in err.splitlines()]
    assert any(m.startswith("shutting down (SIGTERM)") for m in messages) and messages[-1] == "stopped"


# ------------------------------------------------------------------------------------ every channel


async def test_one_bot_serves_slack_and_discord_with_one_web_server() -> None:
    from flowagents.testing.discord import FakeDiscord
    from flowagents.testing.slack import FakeSlack

    async with FakeSlack() as slack, FakeDiscord() as discord:
        ws = slack.add_workspace("T1BOT")
        discord.add_guild("Acme")
        values = {
            "slack_bot_token": ws.bot_token,
            "slack_app_token": slack.app_token,
            "slack_api_url": slack.api_url,
            "discord_bot_token": discord.token,
            "discord_api_url": discord.api_url,
            "discord_gateway_url": discord.gateway_url,
        }
        runtime = BotRuntime(settings(**values), mode="auto")
        await runtime.start()
        try:
            assert runtime.http is not None
            assert {type(c).__name__ for c in runtime.channels} == {"SlackChannel", "DiscordChannel"}
            await runtime.channels[1].wait_until_ready(timeout=10)  # type: ignore[attr-defined]
            await slack.wait_socket_connected()
            event = slack.user_message(
                "T1BOT", channel="DU1", user="U1", text="book a table", channel_type="im"
            )
            await slack.send_socket_event(slack.event_callback("T1BOT", event))
            await discord.user_message("book a table", user_id=7)
            dm = discord.dm_channel_id(7)
            await slack.wait_for(
                lambda: [m.text for m in slack.bot_messages(channel="DU1")] == ["How many guests?"]
            )
            await discord.wait_for(
                lambda: [m.content for m in discord.bot_messages(dm)] == ["How many guests?"]
            )
            async with aiohttp.ClientSession() as http, http.get(runtime.http.url + "/metrics") as resp:
                text = await resp.text()
        finally:
            code = await runtime.shutdown()
    assert code == 0
    assert metric_value(text, "flowagents_messages_total", platform="slack", outcome="processed") == 1
    assert metric_value(text, "flowagents_messages_total", platform="discord", outcome="processed") == 1
    assert metric_value(text, "flowagents_active_conversations") == 2


async def test_process_without_streaming_is_observed_the_same(collect: Collect) -> None:
    from agents import BookingAgent
    from bot.orchestrator import BotOrchestrator
    from flowagents.testing import ConversationDriver

    async with ConversationDriver.for_agents([BookingAgent], orchestrator_class=BotOrchestrator) as chat:
        result = await chat.orchestrator.process(
            "book a table", tenant_id="T1", user_id="U1", delivery_id="d1"
        )
        again = await chat.orchestrator.process(
            "book a table", tenant_id="T1", user_id="U1", delivery_id="d1"
        )
    assert result.field == "guests" and result.tenant_id == "T1"
    assert again.duplicate and not again.processed and again.user_id == "U1"
    first, second = collect.turns
    assert (first.agent, first.strategy, first.status) == ("BookingAgent", "trigger", "waiting_for_input")
    assert second.duplicate and second.status == "duplicate"


async def test_flowagents_tracing_exports_spans_over_otlp() -> None:
    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint = f"http://127.0.0.1:{runner.addresses[0][1]}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "FLOWAGENTS_"))
    }
    env.update(
        FLOWAGENTS_STORE="memory",
        PYTHONPATH=str(ROOT),
        FLOWAGENTS_TRACING="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="test-bot",
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(b"book a table\n"), 60)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "How many guests?\n"
    spans = [s for m in received for rs in m.resource_spans for ss in rs.scope_spans for s in ss.spans]
    services = {
        a.value.string_value
        for m in received
        for rs in m.resource_spans
        for a in rs.resource.attributes
        if a.key == "service.name"
    }
    names = {s.name for s in spans}
    assert {"flowagents.turn", "flowagents.route"} <= names and services == {"test-bot"}
    turn = next(s for s in spans if s.name == "flowagents.turn")
    route = next(s for s in spans if s.name == "flowagents.route")
    assert route.parent_span_id == turn.span_id
