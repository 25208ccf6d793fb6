"""The console channel: chat with the bot in a terminal, or answer lines piped to stdin."""

from __future__ import annotations

import asyncio
import io
import sys
from typing import TextIO

from flowagents import InputRequiredEvent, MessageChunkEvent, Orchestrator, ResultEvent


class ConsoleChannel:
    """Reads one message per line and prints the streamed answer as it arrives.

    Interactive on a terminal (a prompt, the questions an agent asks with their choices); with piped
    input it answers one line at a time and returns at end of input.
    """

    def __init__(
        self,
        orchestrator: Orchestrator,
        *,
        tenant_id: str = "console",
        user_id: str = "console-user",
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.interactive = self.stdin.isatty() and self.stdout.isatty()
        for stream in (self.stdin, self.stdout):  # a stray byte must not end the chat
            if isinstance(stream, io.TextIOWrapper):
                stream.reconfigure(errors="replace")

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    async def start(self) -> None:
        """Chat until end of input (Ctrl-D) or 'exit'."""
        loop = asyncio.get_running_loop()
        if self.interactive:
            names = ", ".join(a.description for a in self.orchestrator.agent_catalog(self.tenant_id))
            self._write(f"flowagents console. I can help with: {names}. Ctrl-D to quit.\n")
        while True:
            if self.interactive:
                self._write("you> ")
            line = await loop.run_in_executor(None, self.stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if self.interactive and text in ("exit", "quit"):
                break
            await self.say(text)

    async def say(self, text: str) -> None:
        """Send one message and print the answer as it streams."""
        prefix = "bot> " if self.interactive else ""
        self._write(prefix)
        choices: list[str] | None = None
        ended = False
        async for event in self.orchestrator.process_stream(
            text, tenant_id=self.tenant_id, user_id=self.user_id, metadata={"platform": "console"}
        ):
            if isinstance(event, MessageChunkEvent):
                self._write(event.content)
            elif isinstance(event, InputRequiredEvent):
                choices = event.choices
            elif isinstance(event, ResultEvent):
                if choices:
                    self._write(f" [{' / '.join(choices)}]")
                if event.result.no_match and self.interactive:
                    self._write("\n" + self._help())
                self._write("\n")  # now: the turn's log line is written as the stream closes
                ended = True
        if not ended:
            self._write("\n")

    def _help(self) -> str:
        """What the bot can do, like the Slack and Discord help replies."""
        lines = [
            f"  - {agent.description}" + (f' (try "{agent.example}")' if agent.example else "")
            for agent in self.orchestrator.agent_catalog(self.tenant_id)
        ]
        return "I can help with:\n" + "\n".join(lines)

    async def stop(self) -> None:
        """Nothing to release."""
