"""`python -m bot` with no platform token: the console channel, driven through a pipe."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from adapters.console import ConsoleChannel
from flowagents import Orchestrator, StandardAgent, StreamEvent, flowagent

ROOT = Path(__file__).resolve().parents[1]


def run_bot(lines: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "FLOWAGENTS_"))
    }
    clean.update({"FLOWAGENTS_STORE": "memory", **env})
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean,
        timeout=60,
    )


def test_console_answers_each_line_and_exits_zero() -> None:
    proc = run_bot(["I need to book a table", "4", "2099-12-24", "7pm", "what's the weather?"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "How many guests?",
        "For which date? (for example 2026-12-24, tomorrow or friday)",
        "At what time? (for example 19:30 or 7pm)",
        "Booked! A table for 4 on Thursday 24 December 2099 at 19:00.",
        "Sorry, I didn't get that.",
    ]


def test_console_multi_turn_leave_with_switch_and_cancel() -> None:
    proc = run_bot(["book a table", "time off", "cancel", "time off", "2099-01-02", "2099-01-01", "trip"])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[:4] == ["How many guests?", "Start date?", "Cancelled: Request time off.", "Start date?"]
    assert out[-1].startswith("The end date is before the start date")


def test_unknown_agent_module_stops_with_one_clear_line() -> None:
    proc = run_bot(["hi"], FLOWAGENTS_AGENTS="no_such_module")
    assert proc.returncode == 2
    assert "FLOWAGENTS_AGENTS" in proc.stderr and "no_such_module" in proc.stderr


def test_bad_slack_token_is_named_without_echoing_it() -> None:
    proc = run_bot(["hi"], SLACK_BOT_TOKEN="not-a-token-secret123")
    assert proc.returncode == 2
    assert "SLACK_BOT_TOKEN" in proc.stderr and "xoxb-" in proc.stderr
    assert "secret123" not in proc.stderr


async def test_a_line_that_is_not_utf8_gets_an_answer_and_the_chat_goes_on() -> None:
    @flowagent(triggers=["say hello"], name="ConsoleHello")
    class Hello(StandardAgent):
        async def on_running(self, msg: str) -> str:
            return "Hello!"

    orchestrator = Orchestrator(agents=[Hello])
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9 please\nsay hello\n"), encoding="utf-8")
    stdout = io.StringIO()
    await ConsoleChannel(orchestrator, stdin=stdin, stdout=stdout).start()
    await orchestrator.close()
    assert stdout.getvalue().splitlines() == ["Sorry, I didn't get that.", "Hello!"]


async def test_the_answer_ends_its_line_before_the_turns_log_line() -> None:
    @flowagent(triggers=["say hi"], name="ConsoleHi")
    class Hi(StandardAgent):
        async def on_running(self, msg: str) -> str:
            return "Hi!"

    terminal = io.StringIO()  # the bot logs each turn to the terminal the chat is on, as its stream closes

    class Logged(Orchestrator):
        async def process_stream(self, message: str, *args: Any, **kwargs: Any) -> AsyncIterator[StreamEvent]:  # type: ignore[override]
            async for event in super().process_stream(message, *args, **kwargs):
                yield event
            terminal.write("INFO flowagents.turn turn completed\n")

    orchestrator = Logged(agents=[Hi])
    await ConsoleChannel(orchestrator, stdin=io.StringIO("say hi\n"), stdout=terminal).start()
    await orchestrator.close()
    assert terminal.getvalue().splitlines() == ["Hi!", "INFO flowagents.turn turn completed"]


def test_an_agent_declared_wrongly_stops_the_bot_with_one_line_naming_its_module(tmp_path: Path) -> None:
    (tmp_path / "wrong_agents.py").write_text(
        "from flowagents import StandardAgent, flowagent\n\n\n"
        "@flowagent(triggers=['wrong'])\n"
        "class Wrong(StandardAgent):\n"
        "    def on_running(self, msg):\n"
        "        return 'x'\n"
    )
    proc = run_bot(["hi"], FLOWAGENTS_AGENTS="wrong_agents", PYTHONPATH=str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.splitlines()
    assert line.startswith("configuration error: FLOWAGENTS_AGENTS: 'wrong_agents'")
    assert "async def on_running(self, msg)" in line
