"""The result of one turn and the statuses an agent moves through."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AgentStatus(StrEnum):
    """Where an agent is in its life."""

    WAITING_FOR_INPUT = "waiting_for_input"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_terminal(self) -> bool:
        """True once the agent will not take another message."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {AgentStatus.COMPLETED, AgentStatus.FAILED, AgentStatus.CANCELLED, AgentStatus.TIMED_OUT}
)
"""The statuses after which an agent takes no more messages (`AgentStatus.is_terminal`)."""


class AgentResult(BaseModel):
    """What a turn produced: the text to show, its status and where it belongs."""

    model_config = ConfigDict(use_enum_values=False)

    status: AgentStatus
    """The status the turn left the agent in."""
    raw_message: str = ""
    """The text for the user (plain text or Markdown)."""
    data: dict[str, Any] = Field(default_factory=dict)
    """Structured output of the agent, for example the filled fields."""
    agent_name: str | None = None
    """The agent that answered; None when no agent matched or the message was not processed."""
    field: str | None = None
    """The field being asked for when status is waiting_for_input."""
    choices: list[str] | None = None
    """The allowed answers of that field, when it has choices."""
    tenant_id: str | None = None
    """The tenant (workspace, server) of the conversation."""
    conversation_id: str | None = None
    """The conversation (channel/thread) id; defaults to the user id."""
    user_id: str | None = None
    """The user who sent the message."""
    processed: bool = True
    """False when `should_process` refused the message or it was a duplicate delivery."""
    no_match: bool = False
    """True when the reply came from `handle_no_match`."""
    duplicate: bool = False
    """True when this delivery id was already processed."""
    error: str | None = None
    """Internal error class name for logs and metrics; never shown to users."""
