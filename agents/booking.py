"""Table booking: guests, date and time, asked one by one unless the message already says them."""

from __future__ import annotations

import datetime as dt

from flowagents import AgentResult, AgentStatus, InputField, StandardAgent, flowagent

MAX_PARTY = 20


def _party_size(guests: int) -> int:
    if not 1 <= guests <= MAX_PARTY:
        raise ValueError(f"We take tables for 1 to {MAX_PARTY} guests.")
    return guests


def _not_past(day: dt.date) -> dt.date:
    if day < dt.date.today():
        raise ValueError("That date is in the past.")
    return day


@flowagent(
    triggers=["book a table", "reservation", "reserve a table", "table for"],
    description="Book a table at the restaurant",
    examples=["can I get a table for two tonight", "I'd like to reserve dinner for friday"],
    timeout=20,
)
class BookingAgent(StandardAgent):
    """Books a restaurant table."""

    guests: int = InputField("How many guests?", validator=_party_size)
    date: dt.date = InputField(
        "For which date? (for example 2026-12-24, tomorrow or friday)", validator=_not_past
    )
    time: dt.time = InputField("At what time? (for example 19:30 or 7pm)")

    async def on_running(self, msg: str) -> AgentResult:
        when = f"{self.date:%A %d %B %Y} at {self.time:%H:%M}"
        return self.make_result(
            status=AgentStatus.COMPLETED,
            raw_message=f"Booked! A table for {self.guests} on {when}.",
            data={
                "guests": self.guests,
                "date": self.date.isoformat(),
                "time": self.time.isoformat("minutes"),
            },
        )
