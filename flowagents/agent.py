"""Agents: `StandardAgent`, the `@flowagent` decorator and the registry it fills."""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from flowagents._trusted import trusted
from flowagents.errors import AgentDefinitionError
from flowagents.fields import Slot
from flowagents.results import AgentResult, AgentStatus
from flowagents.routing.base import AgentProfile
from flowagents.routing.triggers import tokenize

if TYPE_CHECKING:
    from flowagents.llm.base import LLMClient


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """Everything `@flowagent` learned about an agent class."""

    cls: type[StandardAgent]
    name: str
    description: str
    triggers: tuple[str, ...]
    examples: tuple[str, ...]
    timeout: float | None
    threshold: float | None
    fields: tuple[Slot, ...]
    streaming: bool
    requires_llm: bool = False
    by_name: dict[str, Slot] = field(init=False, repr=False, compare=False)
    """The fields by name."""
    asked: tuple[Slot, ...] = field(init=False, repr=False, compare=False)
    """The fields the agent asks for while they are missing (required, no default), in order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})
        object.__setattr__(self, "asked", tuple(f for f in self.fields if f.asks))

    @property
    def profile(self) -> AgentProfile:
        """What routers see of this agent."""
        return AgentProfile(self.name, self.description, self.triggers, self.examples, self.threshold)

    def missing(self, values: dict[str, Any]) -> Slot | None:
        """The first field that must still be asked, in declaration order."""
        for f in self.asked:
            if f.name not in values:
                return f
        return None


class StandardAgent:
    """Base class of agents. Declare fields with `InputField` and implement `on_running`.

    A new instance serves each turn; what must survive between turns lives in the fields (`self.guests`).
    `on_running` runs once every required field is filled. It may return an `AgentResult` (or plain text),
    or be an async generator that yields text chunks (streaming), optionally ending with an `AgentResult`.
    """

    __flowagent__: ClassVar[AgentSpec]

    _values: dict[str, Any]
    context: dict[str, Any]
    """The turn's context: tenant_id, user_id, conversation_id, metadata and whatever hooks added."""
    llm: LLMClient | None
    """The orchestrator's LLM client, if one is configured."""

    def __init__(self) -> None:
        self._values = {}
        self.context = {}
        self.llm = None

    @property
    def name(self) -> str:
        """This agent's registered name."""
        return type(self).__flowagent__.name

    @property
    def values(self) -> dict[str, Any]:
        """The filled field values."""
        return dict(self._values)

    async def on_running(self, msg: str) -> AgentResult | str | AsyncIterator[str | AgentResult] | None:
        """Do the agent's work; all required fields are filled. Override it: the default replies "Done."."""
        return self.make_result(status=AgentStatus.COMPLETED, raw_message="Done.")

    def make_result(
        self,
        status: AgentStatus = AgentStatus.COMPLETED,
        raw_message: str = "",
        data: dict[str, Any] | None = None,
    ) -> AgentResult:
        """A result of this agent in this conversation."""
        ctx = self.context
        values: dict[str, Any] = {
            "status": status,
            "raw_message": raw_message,
            "data": data if data is not None else {},
            "agent_name": type(self).__flowagent__.name,
            "tenant_id": ctx.get("tenant_id"),
            "conversation_id": ctx.get("conversation_id"),
            "user_id": ctx.get("user_id"),
        }
        if type(status) is AgentStatus and type(raw_message) is str and type(values["data"]) is dict:
            return trusted(AgentResult, values)
        return AgentResult.model_validate(values)  # validates (and converts "completed" to the enum)


_registry: dict[str, type[StandardAgent]] = {}

A = TypeVar("A", bound=type[StandardAgent])


def flowagent(
    triggers: Sequence[str] | None = None,
    *,
    description: str | None = None,
    timeout: float | None = None,
    name: str | None = None,
    examples: Sequence[str] = (),
    threshold: float | None = None,
    requires_llm: bool = False,
) -> Callable[[A], A]:
    """Register a `StandardAgent` subclass so the orchestrator can route to it.

    `triggers` are phrases that route a message here; `examples` are utterances for semantic routing;
    `description` (default: the first line of the class docstring, else the name) is shown in help
    replies and to the LLM router; `timeout` (seconds) overrides the orchestrator's default; `threshold`
    overrides the no-match threshold for this agent; `name` defaults to the class name;
    `requires_llm=True` leaves the agent out of orchestrators that have no LLM client.
    """
    if isinstance(triggers, type):  # @flowagent without parentheses passes the class itself
        raise AgentDefinitionError(
            f"@flowagent needs parentheses: write @flowagent(triggers=[...]) above class {triggers.__name__}."
        )
    if isinstance(triggers, str):
        raise AgentDefinitionError("triggers must be a list of phrases, e.g. triggers=['book table'].")
    trigger_list = tuple(t.strip() for t in (triggers or ()) if str(t).strip())
    wordless = [t for t in trigger_list if not tokenize(t)]
    if wordless:
        raise AgentDefinitionError(
            f"trigger {wordless[0]!r} has no words to match; use a phrase like 'book table'."
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise AgentDefinitionError(f"timeout must be a positive number of seconds, not {timeout!r}.")
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1
    ):
        raise AgentDefinitionError(
            f"threshold must be a confidence from 0 to 1 (e.g. 0.7 for 70 %), not {threshold!r}."
        )

    def decorate(cls: A) -> A:
        if not (isinstance(cls, type) and issubclass(cls, StandardAgent)):
            raise AgentDefinitionError("@flowagent decorates a subclass of StandardAgent.")
        _check_on_running(cls)
        agent_name = name or cls.__name__
        fields: list[Slot] = []
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if isinstance(value, Slot):
                    fields = [f for f in fields if f.name != attr]
                    value.bind(_field_annotation(klass, attr))
                    fields.append(value)
        doc = inspect.getdoc(cls) if cls.__doc__ else None
        spec = AgentSpec(
            cls=cls,
            name=agent_name,
            description=description or (doc.splitlines()[0] if doc else agent_name),
            triggers=trigger_list,
            examples=tuple(examples),
            timeout=timeout,
            threshold=threshold,
            fields=tuple(fields),
            streaming=inspect.isasyncgenfunction(cls.on_running),
            requires_llm=requires_llm,
        )
        previous = _registry.get(agent_name)
        if previous is not None and previous is not cls and previous.__module__ != cls.__module__:
            raise AgentDefinitionError(
                f"Two agents are named {agent_name!r} ({previous.__module__} and {cls.__module__}); "
                "give one of them @flowagent(name=...)."
            )
        cls.__flowagent__ = spec
        _registry[agent_name] = cls
        return cls

    return decorate


def _check_on_running(cls: type[StandardAgent]) -> None:
    """Refuse an `on_running` the orchestrator cannot call: a plain `def`, or one without the message."""
    run = cls.on_running
    target = inspect.unwrap(run)
    if inspect.isfunction(target) and not (
        inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)
    ):
        raise AgentDefinitionError(
            f"{cls.__name__}.on_running is a plain function; write it as async def on_running(self, msg) "
            "(an async generator that yields text chunks streams)."
        )
    try:
        inspect.signature(run).bind(None, "")
    except TypeError:
        raise AgentDefinitionError(
            f"{cls.__name__}.on_running must take the message: async def on_running(self, msg)."
        ) from None
    except ValueError:  # no signature to check (a builtin or C callable)
        pass


def _field_annotation(klass: type, attr: str) -> Any:
    """The evaluated annotation of one field (string annotations resolved in the class's module)."""
    annotation = inspect.get_annotations(klass).get(attr)
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(klass.__module__)
    try:
        return eval(annotation, dict(vars(module)) if module else {})
    except Exception as exc:
        raise AgentDefinitionError(
            f"{klass.__name__}.{attr}: cannot resolve the type annotation {annotation!r} ({exc})."
        ) from None


def registered_agents() -> list[type[StandardAgent]]:
    """Every agent class registered with `@flowagent`, in registration order."""
    return list(_registry.values())


def spec_of(agent: type[StandardAgent]) -> AgentSpec:
    """The registration of an agent class; raises if it was not decorated."""
    spec = agent.__dict__.get("__flowagent__") if isinstance(agent, type) else None
    if spec is None:
        raise AgentDefinitionError(
            f"{agent!r} is not a registered agent; decorate its class with @flowagent(triggers=[...])."
        )
    return typing.cast(AgentSpec, spec)
