"""Typed events yielded by `Orchestrator.process_stream`, one small class per kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

from flowagents.results import AgentResult, AgentStatus


class RoutingEvent(BaseModel):
    """The router chose an agent for the message (or none)."""

    type: Literal["routing"] = "routing"
    agent: str | None
    """The chosen agent's name; None for no match."""
    strategy: str
    """The strategy that decided: trigger, llm, semantic, hybrid, custom, active (an agent was waiting)."""
    confidence: float
    """Confidence on a 0..1 scale."""
    fallback: str | None = None
    """Set when the configured strategy failed and another one decided (for example "trigger")."""
    reason: str | None = None
    """A short human-readable explanation, for logs and the playground."""


class StateChangeEvent(BaseModel):
    """An agent moved from one status to another."""

    type: Literal["state_change"] = "state_change"
    agent: str
    """The agent's name."""
    old_state: AgentStatus | None
    """The previous status; None when the agent was just created."""
    new_state: AgentStatus
    """The new status."""


class MessageChunkEvent(BaseModel):
    """A piece of the reply text, in order; all chunks of a turn joined are its final text."""

    type: Literal["message_chunk"] = "message_chunk"
    content: str
    """The text of this piece."""


class InputRequiredEvent(BaseModel):
    """The agent asks the user for a field."""

    type: Literal["input_required"] = "input_required"
    agent: str
    """The asking agent's name."""
    field: str
    """The field's name."""
    question: str
    """The question shown to the user (also sent as a message chunk)."""
    choices: list[str] | None = None
    """The allowed answers, when the field has choices (channels show them as buttons)."""


class ResultEvent(BaseModel):
    """The turn is over; always the last event of a processed turn."""

    type: Literal["result"] = "result"
    result: AgentResult
    """The same result `process` returns."""


class ErrorEvent(BaseModel):
    """Something went wrong; `message` is safe to show to the user."""

    type: Literal["error"] = "error"
    message: str
    """A user-safe explanation."""
    code: str
    """A stable code: agent_failed, timeout, store_unavailable, llm_error, ..."""


class DuplicateEvent(BaseModel):
    """This delivery id was already processed; nothing ran again."""

    type: Literal["duplicate"] = "duplicate"
    delivery_id: str
    """The platform delivery id that was seen before."""


StreamEvent = Annotated[
    RoutingEvent
    | StateChangeEvent
    | MessageChunkEvent
    | InputRequiredEvent
    | ResultEvent
    | ErrorEvent
    | DuplicateEvent,
    Field(discriminator="type"),
]
"""Any event `process_stream` yields, discriminated by its `type`."""

stream_event_adapter: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)
"""Validates/serialises stream events, e.g. `stream_event_adapter.validate_json(data)`."""
