"""The local playground: its streaming API, and the page driven by a real headless Chromium."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.app import BotRuntime
from bot.settings import BotSettings
from flowagents import AgentResult, AgentStatus, InputField, StandardAgent, flowagent

PAGE = Path(__file__).resolve().parents[1] / "bot" / "static" / "playground.html"
GATE: asyncio.Event | None = None


@flowagent(triggers=["play essay"], description="Write a short essay (playground)")
class PlayEssayAgent(StandardAgent):
    async def on_running(self, msg: str) -> AsyncIterator[str | AgentResult]:
        yield "Thinking about "
        yield "your essay"
        assert GATE is not None
        await GATE.wait()  # the test checks the page shows the first part while the answer still streams
        yield "... The end."
        yield AgentResult(status=AgentStatus.COMPLETED)


@flowagent(triggers=["play drink"], description="Order a drink (playground)")
class PlayDrinkAgent(StandardAgent):
    drink: str = InputField("Tea or coffee?", choices=["tea", "coffee"])

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED, f"One {self.drink}, coming up.")


@pytest.fixture
async def playground() -> AsyncIterator[BotRuntime]:
    global GATE
    GATE = asyncio.Event()
    settings = BotSettings(
        _env_file=None, flowagents_store="memory", port=0, flowagents_agents=f"agents,{__name__}"
    )  # type: ignore[call-arg]
    runtime = BotRuntime(settings, mode="playground", stdout=io.StringIO())
    await runtime.start()
    try:
        yield runtime
    finally:
        GATE.set()
        assert await runtime.shutdown() == 0


def url(runtime: BotRuntime) -> str:
    assert runtime.http is not None
    return runtime.http.url


# ------------------------------------------------------------------------------------ the API


async def test_page_is_one_self_contained_file(playground: BotRuntime) -> None:
    async with aiohttp.ClientSession() as http, http.get(url(playground) + "/") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        html = await resp.text()
    assert html == PAGE.read_text()
    assert "<script src" not in html and "<link" not in html and "https://" not in html
    assert playground.http is not None and playground.http.host == "127.0.0.1"


async def test_say_streams_events_as_ndjson_then_active_agents(playground: BotRuntime) -> None:
    body = {"tenant_id": "acme", "user_id": "ann", "text": "play drink"}
    async with aiohttp.ClientSession() as http:
        async with http.post(url(playground) + "/api/say", json=body) as resp:
            assert resp.content_type == "application/x-ndjson"
            events = [json.loads(line) for line in (await resp.read()).splitlines()]
        async with http.get(url(playground) + "/api/agents?tenant_id=acme") as resp:
            names = {a["name"] for a in await resp.json()}
    assert [e["type"] for e in events] == [
        "routing",
        "state_change",
        "state_change",
        "input_required",
        "message_chunk",
        "result",
        "active",
    ]
    assert events[0]["agent"] == "PlayDrinkAgent" and events[0]["strategy"] == "trigger"
    assert events[3]["choices"] == ["tea", "coffee"]
    assert (
        events[-1]["agents"][0]["agent"] == "PlayDrinkAgent" and events[-1]["agents"][0]["asking"] == "drink"
    )
    assert {"PlayDrinkAgent", "PlayEssayAgent", "BookingAgent"} <= names


async def test_say_rejects_cross_site_form_posts_and_bad_bodies(playground: BotRuntime) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url(playground) + "/api/say", data="text=hi", headers={"Content-Type": "text/plain"}
        ) as resp:
            assert resp.status == 415
        async with http.post(url(playground) + "/api/say", json={"text": ""}) as resp:
            assert resp.status == 400


async def test_pages_reached_under_another_host_name_are_refused(playground: BotRuntime) -> None:
    # DNS rebinding: a web site whose name now points at 127.0.0.1 must not drive the playground,
    # which chats as any tenant and user of the bot's store.
    port = url(playground).rsplit(":", 1)[1]
    rebound = {"Host": f"attacker.example:{port}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url(playground) + "/api/say", json={"text": "play drink"}, headers=rebound
        ) as resp:
            assert resp.status == 403
            assert "127.0.0.1" in (await resp.json())["error"]
        for path in ("/", "/api/agents", "/api/active?tenant_id=T1"):
            async with http.get(url(playground) + path, headers=rebound) as resp:
                assert resp.status == 403, path
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            async with http.get(url(playground) + "/api/agents", headers={"Host": host}) as resp:
                assert resp.status == 200, host


# ------------------------------------------------------------------------------------ the browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"headless browser test needs {', '.join(missing)}: run `make install-browser`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI must provide it)")
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--window-size=1200,800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


async def test_browser_chat_streams_the_answer_and_shows_routing(
    playground: BotRuntime, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def until(condition: Any) -> Any:
        return WebDriverWait(browser, 20).until(condition)

    def bot_bubbles() -> list[Any]:
        return list(browser.find_elements(By.CSS_SELECTOR, "#messages .bot"))

    def send(text: str) -> None:
        box = browser.find_element(By.ID, "text")
        box.send_keys(text)
        browser.find_element(By.ID, "send").click()

    def open_page() -> None:
        browser.get(url(playground) + "/")
        until(lambda d: "PlayEssayAgent" in d.find_element(By.ID, "agents").text)
        tenant = browser.find_element(By.ID, "tenant")
        tenant.clear()
        tenant.send_keys("acme")
        send("play essay")

    await asyncio.to_thread(open_page)

    def first_part_while_streaming() -> tuple[str, str]:
        until(lambda d: "your essay" in bot_bubbles()[-1].text)
        bubble = bot_bubbles()[-1]
        return bubble.text, str(bubble.get_attribute("class"))

    text, classes = await asyncio.to_thread(first_part_while_streaming)
    assert text.startswith("Thinking about your essay") and "The end" not in text
    assert "streaming" in classes.split()  # the turn is still running: the text arrived in pieces
    assert GATE is not None
    GATE.set()

    def finished() -> dict[str, str]:
        until(lambda d: "done" in str(bot_bubbles()[-1].get_attribute("class")).split())
        return {
            "answer": bot_bubbles()[-1].find_element(By.CLASS_NAME, "text").text,
            "routing": browser.find_element(By.ID, "routing").text,
            "states": browser.find_element(By.ID, "states").text,
        }

    seen = await asyncio.to_thread(finished)
    assert seen["answer"] == "Thinking about your essay... The end."
    assert "PlayEssayAgent via trigger, confidence" in seen["routing"]
    assert "PlayEssayAgent: new → running" in seen["states"] and "running → completed" in seen["states"]

    def choose_a_drink() -> dict[str, str]:
        send("play drink")
        until(lambda d: d.find_elements(By.CSS_SELECTOR, "#messages .bot:last-child .choices button"))
        until(lambda d: "asking drink" in d.find_element(By.ID, "active").text)
        active = browser.find_element(By.ID, "active").text
        buttons = browser.find_elements(By.CSS_SELECTOR, "#messages .bot:last-child .choices button")
        next(b for b in buttons if b.text == "coffee").click()
        until(lambda d: "One coffee, coming up." in bot_bubbles()[-1].text)
        until(lambda d: d.find_element(By.ID, "active").text == "none")
        return {"active_while_asking": active, "answer": bot_bubbles()[-1].text}

    drink = await asyncio.to_thread(choose_a_drink)
    assert (
        "PlayDrinkAgent: waiting_for_input, asking drink (conversation dev, user dev)"
        in drink["active_while_asking"]
    )
    assert drink["answer"].startswith("One coffee, coming up.")


async def test_active_agents_are_those_of_the_conversation(playground: BotRuntime) -> None:
    async with aiohttp.ClientSession() as http:
        for user in ("ann", "bob"):
            body = {"tenant_id": "acme", "user_id": user, "text": "play drink"}
            async with http.post(url(playground) + "/api/say", json=body) as resp:
                last = json.loads((await resp.read()).splitlines()[-1])
            assert [(a["user_id"], a["agent"]) for a in last["agents"]] == [(user, "PlayDrinkAgent")]
        async with http.get(url(playground) + "/api/active?tenant_id=acme&user_id=bob") as resp:
            assert [a["user_id"] for a in await resp.json()] == ["bob"]
        async with http.get(url(playground) + "/api/active?tenant_id=acme") as resp:
            assert sorted(a["user_id"] for a in await resp.json()) == ["ann", "bob"]
