"""Leave requests: start date, end date and reason."""

from __future__ import annotations

import datetime as dt

from flowagents import AgentResult, AgentStatus, InputField, StandardAgent, flowagent


@flowagent(
    triggers=["time off", "leave request", "day off", "vacation", "holiday request"],
    description="Request time off",
    examples=["I want to take next week off", "can I get a few days of vacation"],
    timeout=20,
)
class LeaveAgent(StandardAgent):
    """Files a leave request."""

    start_date: dt.date = InputField("Start date?")
    end_date: dt.date = InputField("End date?")
    reason: str = InputField("What is the reason for your leave?")

    async def on_running(self, msg: str) -> AgentResult:
        if self.end_date < self.start_date:
            return self.make_result(
                status=AgentStatus.FAILED,
                raw_message="The end date is before the start date, so I did not submit it. "
                'Say "time off" to start again.',
            )
        days = (self.end_date - self.start_date).days + 1
        return self.make_result(
            status=AgentStatus.COMPLETED,
            raw_message=f"Submitted! {days} day(s) off from {self.start_date:%d %b} "
            f"to {self.end_date:%d %b %Y} ({self.reason}).",
            data={
                "start_date": self.start_date.isoformat(),
                "end_date": self.end_date.isoformat(),
                "reason": self.reason,
                "days": days,
            },
        )
