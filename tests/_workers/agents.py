"""Small slot-filling agents used by the store tests and the worker processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from flowagents import InputField, StandardAgent, flowagent


@flowagent(triggers=["book a table"], name="store_booking", description="Book a table")
class Booking(StandardAgent):
    """Asks three questions, then confirms."""

    guests: int = InputField("How many guests?")
    day: str = InputField("Which day?")
    name: str = InputField("Under which name?")

    async def on_running(self, msg: str) -> str:
        return f"Booked a table for {self.guests} on {self.day} under {self.name}."


@flowagent(triggers=["start survey"], name="store_survey", description="A three-question survey")
class Survey(StandardAgent):
    """Three free-text answers; used where answers arrive concurrently."""

    first: str = InputField("First answer?")
    second: str = InputField("Second answer?")
    third: str = InputField("Third answer?")

    async def on_running(self, msg: str) -> str:
        return f"Survey done: {self.first} | {self.second} | {self.third}"


@flowagent(triggers=["slow job"], name="store_slow", description="A job that takes a while")
class Slow(StandardAgent):
    """Runs for `seconds` x `factor` seconds (used to kill a worker mid-turn)."""

    factor: float = 1.0
    on_start: Callable[[], None] | None = None  # the worker process announces the turn is running
    seconds: float = InputField("How many seconds?")

    async def on_running(self, msg: str) -> str:
        if Slow.on_start is not None:
            Slow.on_start()
        await asyncio.sleep(self.seconds * self.factor)
        return f"Slow job done after {self.seconds:g}s."


ALL = [Booking, Survey, Slow]
