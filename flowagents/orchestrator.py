"""The orchestrator: routes each message to an agent and carries conversations across turns."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flowagents import observability
from flowagents._deadlines import Deadlines
from flowagents._inline import run_inline
from flowagents._trusted import trusted
from flowagents.agent import AgentSpec, StandardAgent, registered_agents, spec_of
from flowagents.errors import AgentDefinitionError, ConfigurationError, LLMError, StoreError
from flowagents.events import (
    DuplicateEvent,
    ErrorEvent,
    InputRequiredEvent,
    MessageChunkEvent,
    ResultEvent,
    RoutingEvent,
    StateChangeEvent,
    StreamEvent,
)
from flowagents.fields import MISSING, InvalidAnswer, Slot
from flowagents.llm.base import current_tenant
from flowagents.results import TERMINAL_STATUSES, AgentResult, AgentStatus
from flowagents.routing.base import Router, RoutingDecision
from flowagents.routing.factory import make_router
from flowagents.routing.triggers import TriggerIndex, TriggerRouter
from flowagents.storage.base import (
    SCHEMA_VERSION,
    ConversationKey,
    ConversationRecord,
    ConversationStore,
    EventIsolation,
)
from flowagents.storage.memory import MemoryIsolation, MemoryStore

if TYPE_CHECKING:
    from flowagents.guards import Guard

log = logging.getLogger("flowagents.orchestrator")

Sink = Callable[[StreamEvent], None]

CANCEL_PHRASES = frozenset(
    {
        "cancel",
        "stop",
        "cancel that",
        "stop that",
        "cancel it",
        "never mind",
        "nevermind",
        "abort",
        "quit",
        "forget it",
        "forget about it",
        "stop it",
        "cancel this",
        "exit",
    }
)
"""A whole message equal to one of these cancels the active agent."""

DEFAULT_TENANT = "default"
_STORE_DOWN = "Sorry, I can't reach my memory right now. Please try again in a moment."
_INTERNAL_ERROR = "Sorry, something went wrong on my side. Please try again in a moment."
_PUNCTUATION = " \t\r\n\xa0.!?,;:'\"()\u2026\u2019\u201c\u201d\u00a1\u00bf\uff01\uff1f\u3002"
_CANCEL_CHARS = 20  # a longer message is not a cancel phrase, however spaced
_STAMPED = ("raw_message", "tenant_id", "conversation_id", "user_id")  # the fields `_stamp` sets


class AgentInfo(BaseModel):
    """An agent as shown in help replies."""

    name: str
    description: str
    triggers: list[str]
    example: str | None


class ActiveAgent(BaseModel):
    """An agent in the pool: who owns which conversation, in which state, for how long."""

    agent: str
    tenant_id: str
    conversation_id: str
    user_id: str
    status: AgentStatus
    asking: str | None
    age_seconds: float
    idle_seconds: float


class _Turn:
    """Collects the text of one turn and forwards events to the stream, if anyone listens."""

    __slots__ = ("parts", "saved", "sink")

    def __init__(self, sink: Sink | None) -> None:
        self.sink = sink
        self.parts: list[str] = []
        self.saved = False
        """Set as the turn starts saving the conversation: from then on the turn may have happened."""

    def say(self, text: str) -> None:
        """A separate message (a blank line apart from what was said before)."""
        if text:
            if self.parts:
                text = "\n\n" + text
            self.parts.append(text)  # `chunk`, written out: every turn says something
            if self.sink is not None:
                self.sink(trusted(MessageChunkEvent, {"content": text}))

    def chunk(self, text: str) -> None:
        """A streamed piece, appended as is."""
        self.parts.append(text)
        if self.sink is not None:
            self.sink(trusted(MessageChunkEvent, {"content": text}))

    def state(self, agent: str, old: AgentStatus | None, new: AgentStatus) -> None:
        """Report a status change (callers on the hot path check `sink` first)."""
        if self.sink is not None and old is not new:
            self.sink(trusted(StateChangeEvent, {"agent": agent, "old_state": old, "new_state": new}))

    @property
    def text(self) -> str:
        parts = self.parts
        return parts[0] if len(parts) == 1 else "".join(parts)


class Orchestrator:
    """Routes messages to agents, asks for missing fields over several turns and keeps tenants apart.

    Subclass it to customise `route_message`, `prepare_context`, `should_process` (and the reply to a
    refused message, `rejection_reply`), `post_process` and `handle_no_match`.
    """

    def __init__(
        self,
        llm_client: Any = None,
        agents: Sequence[type[StandardAgent]] | None = None,
        routing_strategy: str | Router = "trigger",
        *,
        store: ConversationStore | None = None,
        isolation: EventIsolation | None = None,
        default_timeout: float | None = 30.0,
        no_match_threshold: float = 0.5,
        switch_confidence: float = 0.9,
        tenant_agents: Mapping[str, Sequence[str]] | None = None,
        embedder: Any = None,
        default_tenant: str = DEFAULT_TENANT,
        delivery_lease_seconds: float = 45.0,
        delivery_keep_seconds: float = 3600.0,
        guards: Sequence[Guard] | None = None,
    ) -> None:
        self.llm_client = llm_client
        self.guards: list[Guard] = list(guards or ())
        """Checked in order by the default `should_process` (see `flowagents.guards`)."""
        self.routing_strategy = routing_strategy
        self.store: ConversationStore = store if store is not None else MemoryStore()
        self.isolation: EventIsolation = isolation if isolation is not None else MemoryIsolation()
        if isolation is None and self.store.shared:
            log.warning(
                "%s is shared by several workers but no isolation= was given: a conversation's turns are "
                "only serialised within this process; pass the store's isolation too (store_from_url "
                "returns both)",
                type(self.store).__name__,
            )
        self.default_timeout = default_timeout
        self.no_match_threshold = no_match_threshold
        self.switch_confidence = switch_confidence
        self.default_tenant = default_tenant
        self.delivery_lease_seconds = delivery_lease_seconds
        self.delivery_keep_seconds = delivery_keep_seconds
        self.embedder = embedder
        self.slot_extractor: Any = None
        """Fills several fields from one message (set up from `llm_client`); None: the deterministic path."""
        self._agent_classes = agents
        self._tenant_agents = tenant_agents
        self._specs: dict[str, AgentSpec] = {}
        self._typed_fields: dict[str, tuple[Slot, ...]] = {}
        self._all_names: frozenset[str] = frozenset()
        self._tenant_names: dict[str, frozenset[str]] = {}
        self._router: Router | None = None
        self._sync_router: TriggerIndex | None = None
        self._triggers = TriggerIndex()
        self._ready = False
        self._init_lock: asyncio.Lock | None = None
        self._deadlines = Deadlines()
        # The hooks a subclass overrides; the defaults do nothing, so a turn skips their awaits.
        cls = type(self)
        self._custom_prepare = cls.prepare_context is not Orchestrator.prepare_context
        self._custom_guard = cls.should_process is not Orchestrator.should_process
        self._custom_post = cls.post_process is not Orchestrator.post_process

    # ----------------------------------------------------------------------------------- lifecycle

    async def initialize(self) -> None:
        """Resolve the agents, compile routing and open the store. Safe to call more than once."""
        if self._ready:
            return
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._ready:
                return
            classes = registered_agents() if self._agent_classes is None else list(self._agent_classes)
            specs: dict[str, AgentSpec] = {}
            for cls in classes:
                if not isinstance(cls, type):
                    raise ConfigurationError(
                        f"agents=[...] must list agent classes decorated with @flowagent, not {cls!r}."
                    )
                spec = spec_of(cls)
                if spec.requires_llm and self.llm_client is None:
                    log.debug("agent %s needs an LLM and none is configured; leaving it out", spec.name)
                    continue
                previous = specs.get(spec.name)
                if previous is not None and previous.cls is not cls:
                    raise ConfigurationError(
                        f"Two agents are named {spec.name!r} ({previous.cls.__qualname__} and "
                        f"{cls.__qualname__}); give one of them @flowagent(name=...)."
                    )
                specs[spec.name] = spec
            if not specs:
                raise ConfigurationError(
                    "No agents: decorate StandardAgent subclasses with @flowagent(triggers=[...]) and import "
                    "them before initialize(), or pass agents=[...]."
                )
            self._specs = specs
            self._typed_fields = {
                name: tuple(f for f in spec.fields if f.choices is not None or f.type is not str)
                for name, spec in specs.items()
            }
            self._all_names = frozenset(specs)
            self._tenant_names = {}
            for tenant, names in (self._tenant_agents or {}).items():
                if isinstance(names, str):
                    raise ConfigurationError(
                        f"tenant_agents[{tenant!r}] must be a list of agent names, e.g. [{names!r}]."
                    )
                unknown = set(names) - self._all_names
                if unknown:
                    raise ConfigurationError(
                        f"tenant_agents[{tenant!r}] names unknown agents: {', '.join(sorted(unknown))}."
                    )
                self._tenant_names[tenant] = frozenset(names)
            profiles = [spec.profile for spec in specs.values()]
            self._triggers = TriggerIndex(profiles)
            router = make_router(
                self.routing_strategy,
                llm_client=self.llm_client,
                embedder=self.embedder,
                no_match_threshold=self.no_match_threshold,
            )
            await router.setup(profiles)
            self._router = router
            plain_routing = type(self).route_message is Orchestrator.route_message
            self._sync_router = router.index if plain_routing and type(router) is TriggerRouter else None
            if self.llm_client is not None and self.slot_extractor is None:
                self.slot_extractor = _make_slot_extractor(self.llm_client)
            await self.store.open()
            self._ready = True

    async def close(self) -> None:
        """Close the store, the isolation and the LLM client."""
        await self.store.close()
        await self.isolation.close()
        close = getattr(self.llm_client, "close", None)
        if close is not None:
            await close()
        self._ready = False

    # ----------------------------------------------------------------------------------- entry points

    async def handle_message(self, user_id: str, text: str) -> AgentResult:
        """Process a message of `user_id` in the default tenant."""
        return await self.process(text, user_id=user_id)

    async def process(
        self,
        message: str,
        tenant_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        delivery_id: str | None = None,
    ) -> AgentResult:
        """Process one message and return the turn's result."""
        return await self._process(message, tenant_id, user_id, conversation_id, metadata, delivery_id, None)

    def process_stream(
        self,
        message: str,
        tenant_id: str | None = None,
        user_id: str | None = None,
        conversation_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        delivery_id: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Process one message, yielding events as they happen; the last is a `ResultEvent`.

        The turn runs in the caller's task as the events are read: they are handed out whenever the
        turn waits (for the network, a lock) and at its end. Closing the iterator early cancels the turn.
        """
        return run_inline(
            lambda emit: self._process(
                message, tenant_id, user_id, conversation_id, metadata, delivery_id, emit
            ),
            self._deadlines.pause,  # the agent's timeout counts the turn's time, not the caller's
            self._deadlines.resume,
        )

    async def cancel(
        self, tenant_id: str | None = None, user_id: str | None = None, conversation_id: str | None = None
    ) -> AgentResult:
        """Cancel the conversation's active agent, if any (else reply that there is nothing to cancel)."""
        return await self.process(
            "cancel", tenant_id, user_id, conversation_id, metadata={"command": "cancel"}
        )

    # ----------------------------------------------------------------------------------- hooks

    async def route_message(self, message: str, context: dict[str, Any]) -> RoutingDecision | None:
        """Choose an agent for a message that no waiting agent takes. Override to customise."""
        assert self._router is not None
        return await self._router.route(message, context, self._candidates(context["tenant_id"]))

    async def prepare_context(self, message: str, context: dict[str, Any]) -> dict[str, Any]:
        """Add to the context before processing (runs before the guard)."""
        return context

    async def should_process(self, message: str, context: dict[str, Any]) -> bool:
        """Guard: False means no agent runs and no state changes. The default applies `self.guards`."""
        if not self.guards:
            return True
        from flowagents.guards import check_guards

        context["refusal"] = await check_guards(self.guards, message, context)
        return context["refusal"] is None

    async def rejection_reply(self, message: str, context: dict[str, Any]) -> str:
        """The reply when `should_process` said no (default: the refusing guard's reply)."""
        return str(context.get("refusal") or "")

    async def post_process(self, result: AgentResult, context: dict[str, Any]) -> AgentResult:
        """After processing: logging, history. Returns the result to deliver."""
        return result

    async def handle_no_match(self, message: str, context: dict[str, Any]) -> AgentResult:
        """The reply when no agent matches."""
        return AgentResult(status=AgentStatus.COMPLETED, raw_message="Sorry, I didn't get that.")

    # ----------------------------------------------------------------------------------- agent pool

    def agent_catalog(self, tenant_id: str | None = None) -> list[AgentInfo]:
        """The agents a tenant may use, for help replies."""
        names = self._candidates(tenant_id or self.default_tenant)
        return [
            AgentInfo(
                name=spec.name,
                description=spec.description,
                triggers=list(spec.triggers),
                example=spec.triggers[0] if spec.triggers else (spec.examples[0] if spec.examples else None),
            )
            for spec in self._specs.values()
            if spec.name in names
        ]

    def get_active_agents(
        self, tenant_id: str | None = None, *, include_finished: bool = False
    ) -> list[ActiveAgent]:
        """Agents that own a conversation (of one tenant, or all), oldest first."""
        now = time.time()
        out = [
            ActiveAgent(
                agent=record.agent,
                tenant_id=key.tenant_id,
                conversation_id=key.conversation_id,
                user_id=key.user_id,
                status=record.status,
                asking=record.asking,
                age_seconds=now - record.created_at,
                idle_seconds=now - record.updated_at,
            )
            for key, record in self.store.snapshot(tenant_id)
            if include_finished or not record.status.is_terminal
        ]
        return sorted(out, key=lambda a: -a.age_seconds)

    def cleanup_completed_agents(self, max_age_seconds: float = 3600) -> int:
        """Remove finished agents last active more than `max_age_seconds` ago; return how many."""
        return self.store.purge_finished(max_age_seconds)

    # ----------------------------------------------------------------------------------- internals

    def _candidates(self, tenant_id: str) -> frozenset[str]:
        return self._tenant_names.get(tenant_id, self._all_names)

    async def _process(
        self,
        message: str,
        tenant_id: str | None,
        user_id: str | None,
        conversation_id: str | None,
        metadata: Mapping[str, Any] | None,
        delivery_id: str | None,
        sink: Sink | None,
    ) -> AgentResult:
        if not self._ready:
            await self.initialize()
        if not isinstance(message, str):
            raise TypeError(f"message must be a str, not {type(message).__name__}")
        tenant = tenant_id or self.default_tenant
        user = user_id or "anonymous"
        key = ConversationKey(tenant, conversation_id or user, user)
        claim_id = None
        if delivery_id is not None:
            claim_id = _delivery_key(tenant, delivery_id)
            try:
                claimed = await self.store.claim_delivery(claim_id, self.delivery_lease_seconds)
            except Exception as exc:
                return self._failure(key, exc, sink, _STORE_DOWN, "store_unavailable")
            if not claimed:
                if sink is not None:
                    sink(DuplicateEvent(delivery_id=delivery_id))
                return AgentResult(
                    status=AgentStatus.COMPLETED,
                    processed=False,
                    duplicate=True,
                    tenant_id=key.tenant_id,
                    conversation_id=key.conversation_id,
                    user_id=key.user_id,
                )
        turn = _Turn(sink)
        try:  # hooks, the locked conversation turn, the result event
            context: dict[str, Any] = {
                "tenant_id": key.tenant_id,
                "user_id": key.user_id,
                "conversation_id": key.conversation_id,
                "metadata": dict(metadata) if metadata else {},
                "delivery_id": delivery_id,
            }
            if self._custom_prepare:
                context = await self.prepare_context(message, context)
            if (self.guards or self._custom_guard) and not await self.should_process(message, context):
                turn.say(await self.rejection_reply(message, context))
                result = self._stamp(AgentResult(status=AgentStatus.COMPLETED, processed=False), key, turn)
            else:
                release = self.isolation.hold_if_free(key)
                if release is None:
                    async with self.isolation.lock(key):
                        result = await self._turn(message, key, context, turn)
                else:  # the conversation was free: held without an `async with` (a large share of a turn)
                    try:
                        result = await self._turn(message, key, context, turn)
                    finally:
                        release()
            if self._custom_post:
                result = await self._post_process(result, context, turn)
            if sink is not None:
                sink(trusted(ResultEvent, {"result": result}))
        except asyncio.CancelledError:  # the caller's timeout, a stream left early, a shutdown
            if claim_id is not None and not turn.saved:  # nothing happened: the retry must run
                await asyncio.shield(self._release_delivery(claim_id))
            raise
        except (StoreError, OSError, ConnectionError) as exc:
            failure = self._failure(key, exc, sink, _STORE_DOWN, "store_unavailable", turn)
        except Exception as exc:  # a bug in a hook or router: apologise, keep serving everyone else
            log.exception("turn failed in %s: %s", type(self).__name__, type(exc).__name__, exc_info=exc)
            failure = self._failure(key, exc, sink, _INTERNAL_ERROR, "internal_error", turn)
        else:
            if claim_id is not None:
                try:
                    await self.store.finish_delivery(claim_id, self.delivery_keep_seconds)
                except Exception:
                    log.warning("could not mark delivery as done", extra={"tenant_id": key.tenant_id})
            return result
        if claim_id is not None:
            await self._release_delivery(claim_id)
        return failure

    def _save(self, key: ConversationKey, record: ConversationRecord, turn: _Turn) -> Awaitable[None]:
        """Save the conversation; a turn cancelled from here on keeps its delivery (the save may be done).

        A plain function handing back the store's coroutine: one coroutine less on every turn."""
        turn.saved = True
        return self.store.save(key, record)

    async def _post_process(self, result: AgentResult, context: dict[str, Any], turn: _Turn) -> AgentResult:
        """The `post_process` hook's result; text it adds at the end is streamed as a last chunk.

        The turn has happened (its state is saved) when the hook runs, so a hook that fails is logged and
        the turn's own result is delivered.
        """
        try:
            delivered = await self.post_process(result, context)
            if not isinstance(delivered, AgentResult):
                raise TypeError(f"post_process must return an AgentResult, not {type(delivered).__name__}")
        except Exception as exc:
            log.exception("post_process failed (%s); delivering the turn's result", type(exc).__name__)
            return result
        streamed = turn.text
        if delivered.raw_message != streamed:
            if delivered.raw_message.startswith(streamed):
                turn.chunk(delivered.raw_message[len(streamed) :])
            elif turn.sink is not None:
                log.warning(
                    "post_process changed text that was already streamed; the stream's chunks show the "
                    "turn's text, the result the changed one (append to raw_message to stream an addition)"
                )
        return delivered

    async def _release_delivery(self, delivery_id: str) -> None:
        """The turn did not happen: let the platform's retry of this delivery be processed."""
        try:
            await self.store.finish_delivery(delivery_id, 0)
        except Exception:
            log.warning("could not release a failed delivery; a retry may be taken as a duplicate")

    def _failure(
        self,
        key: ConversationKey,
        exc: BaseException,
        sink: Sink | None,
        text: str,
        code: str,
        turn: _Turn | None = None,
    ) -> AgentResult:
        """A turn that could not finish: a polite reply after what the turn already said, nothing saved."""
        if code == "store_unavailable":
            log.error(
                "conversation store unavailable: %s", type(exc).__name__, extra={"tenant_id": key.tenant_id}
            )
        if sink is not None:
            sink(ErrorEvent(message=text, code=code))
        if turn is None:
            turn = _Turn(sink)
        turn.say(text)
        result = AgentResult(
            status=AgentStatus.FAILED,
            raw_message=turn.text,
            error=type(exc).__name__,
            processed=False,
            tenant_id=key.tenant_id,
            conversation_id=key.conversation_id,
            user_id=key.user_id,
        )
        if sink is not None:
            sink(ResultEvent(result=result))
        return result

    @staticmethod
    def _stamp(result: AgentResult, key: ConversationKey, turn: _Turn) -> AgentResult:
        """Give the result the turn's whole text and its conversation (set as `_assign` does, written
        out: every turn's result passes here)."""
        fields = result.__dict__
        fields["raw_message"] = turn.text
        fields["tenant_id"] = key.tenant_id
        fields["conversation_id"] = key.conversation_id
        fields["user_id"] = key.user_id
        result.__pydantic_fields_set__.update(_STAMPED)
        return result

    async def _turn(
        self, message: str, key: ConversationKey, context: dict[str, Any], turn: _Turn
    ) -> AgentResult:
        record = await self.store.load(key)
        candidates = self._tenant_names.get(key.tenant_id, self._all_names)  # `_candidates`, inlined
        if record is not None and record.status not in TERMINAL_STATUSES:
            spec = self._specs.get(record.agent)
            if spec is None or spec.name not in candidates or not self._restore(spec, record):
                log.warning("resetting conversation of a missing or changed agent %s", record.agent)
                await self.store.delete(key)
                turn.say("Your earlier conversation was reset because that assistant is no longer available.")
            else:
                if _is_cancel(message):
                    return await self._cancel(spec, record, key, turn)
                switch = self._triggers.decide(message, candidates)
                if switch is not None:  # the agent switched to must accept it as a fresh message would
                    switch = self._accept(switch, candidates)
                if (
                    switch is None
                    or switch.agent_type == spec.name
                    or switch.confidence < self.switch_confidence
                ):
                    if turn.sink is not None:
                        turn.sink(
                            trusted(
                                RoutingEvent,
                                {
                                    "agent": spec.name,
                                    "strategy": "active",
                                    "confidence": 1.0,
                                    "reason": "the agent was waiting for this answer",
                                },
                            )
                        )
                    return await self._answer(spec, record, message, key, context, turn)
                turn.state(spec.name, record.status, AgentStatus.CANCELLED)
                return await self._start(switch, message, key, context, turn)
        elif context.get("metadata", {}).get("command") == "cancel" and _is_cancel(message):
            turn.say("There is nothing to cancel.")
            return self._stamp(AgentResult(status=AgentStatus.COMPLETED), key, turn)
        if self._sync_router is not None:  # the default trigger strategy: no coroutine needed
            decision = self._accept(self._sync_router.decide(message, candidates), candidates)
        else:
            decision = await self._route(message, context, candidates)
        if decision is None:
            if turn.sink is not None:
                turn.sink(
                    trusted(
                        RoutingEvent,
                        {
                            "agent": None,
                            "strategy": self._strategy_name(),
                            "confidence": 0.0,
                            "fallback": context.get("routing_fallback"),
                        },
                    )
                )
            result = await self.handle_no_match(message, context)
            turn.say(result.raw_message)
            _assign(result, no_match=True, agent_name=None)
            return self._stamp(result, key, turn)
        return await self._start(decision, message, key, context, turn)

    def _strategy_name(self) -> str:
        router = self._router
        return getattr(router, "name", "custom") if router is not None else "custom"

    async def _route(
        self, message: str, context: dict[str, Any], candidates: frozenset[str]
    ) -> RoutingDecision | None:
        try:
            if type(self).route_message is Orchestrator.route_message and self._router is not None:
                decision = await self._router.route(message, context, candidates)
            else:
                decision = await self.route_message(message, context)
        except Exception as exc:
            log.warning("router failed (%s); falling back to triggers", type(exc).__name__)
            context["routing_fallback"] = "trigger"  # also for a no match: the routing event says so
            decision = self._triggers.decide(message, candidates)
            if decision is not None:
                decision = decision.model_copy(update={"fallback": "trigger"})
        return self._accept(decision, candidates)

    def _accept(self, decision: RoutingDecision | None, candidates: frozenset[str]) -> RoutingDecision | None:
        """The decision if it names an allowed agent with enough confidence, else None (no match)."""
        if decision is None:
            return None
        spec = self._specs.get(decision.agent_type)
        if spec is None or spec.name not in candidates:
            log.warning(
                "router chose unknown or disallowed agent %r; treating as no match", decision.agent_type
            )
            return None
        threshold = spec.threshold if spec.threshold is not None else self.no_match_threshold
        if decision.confidence < threshold:
            return None
        return decision

    def _restore(self, spec: AgentSpec, record: ConversationRecord) -> bool:
        """Re-validate stored values against the agent's current fields; False if they no longer fit."""
        if record.version != SCHEMA_VERSION:
            return False
        fields = spec.by_name
        if record.asking is not None and record.asking not in fields:
            return False
        for name, value in record.values.items():
            field = fields.get(name)
            if field is None:
                return False
            if field.type is not str or not isinstance(value, str):
                try:
                    record.values[name] = field.check_stored(value)
                except InvalidAnswer:
                    return False
        return True

    def _agent(self, spec: AgentSpec, record: ConversationRecord, context: dict[str, Any]) -> StandardAgent:
        agent = spec.cls()
        agent._values = record.values
        agent.context = context
        agent.llm = self.llm_client
        return agent

    async def _start(
        self,
        decision: RoutingDecision,
        message: str,
        key: ConversationKey,
        context: dict[str, Any],
        turn: _Turn,
    ) -> AgentResult:
        """Start the chosen agent's conversation: fill what the message states, then ask or run."""
        spec = self._specs[decision.agent_type]
        if turn.sink is not None:
            turn.sink(
                trusted(
                    RoutingEvent,
                    {
                        "agent": spec.name,
                        "strategy": decision.strategy,
                        "confidence": decision.confidence,
                        "fallback": decision.fallback,
                        "reason": decision.reason,
                    },
                )
            )
            turn.state(spec.name, None, AgentStatus.RUNNING)
        now = time.time()
        # agent, status, created_at, updated_at, values: positional, the cheapest dataclass call
        record = ConversationRecord(spec.name, AgentStatus.RUNNING, now, now, {})
        typed = self._typed_fields[spec.name]
        refused = self._prefill(typed, record.values, message) if typed else None
        if self.slot_extractor is not None and spec.fields:
            await self._extract_more(spec, record, message, context, None)
        return await self._advance(spec, record, message, key, context, turn, refused)

    @staticmethod
    def _prefill(typed: tuple[Slot, ...], values: dict[str, Any], message: str) -> dict[str, str] | None:
        """Take values the message states unambiguously ("a table for 4" fills the one int field); return
        the reasons the fields gave for values they refused ("We seat at most 10."), if any."""
        pending = [f for f in typed if f.name not in values]
        kinds: dict[Any, int] = {}
        for f in pending:
            if f.choices is None:
                kinds[f.type] = kinds.get(f.type, 0) + 1
        refused: dict[str, str] | None = None
        for f in pending:
            if f.choices is None and kinds[f.type] > 1:
                continue
            value = f.stated(message)
            if isinstance(value, InvalidAnswer):
                refused = refused or {}
                refused[f.name] = value.reason
            elif value is not MISSING:
                values[f.name] = value
        return refused

    async def _extract_more(
        self,
        spec: AgentSpec,
        record: ConversationRecord,
        message: str,
        context: dict[str, Any],
        asking: Slot | None,
    ) -> dict[str, Any]:
        """Ask the slot extractor (LLM) for several fields at once; keep only values that validate."""
        try:
            found: dict[str, Any] = await self.slot_extractor.extract(
                spec, message, dict(record.values), asking.name if asking else None, context
            )
        except Exception as exc:
            log.warning("slot extraction failed (%s); using the deterministic path", type(exc).__name__)
            return {}
        fields = spec.by_name
        accepted: dict[str, Any] = {}
        for name, value in found.items():
            field = fields.get(name)
            if field is None or value is None or (asking is not None and name == asking.name):
                continue
            try:
                accepted[name] = field.validate_value(value)
            except InvalidAnswer:
                continue
        record.values.update(accepted)
        if asking is not None and asking.name in found and found[asking.name] is not None:
            try:
                record.values[asking.name] = asking.validate_value(found[asking.name])
            except InvalidAnswer:
                pass
        return accepted

    async def _answer(
        self,
        spec: AgentSpec,
        record: ConversationRecord,
        message: str,
        key: ConversationKey,
        context: dict[str, Any],
        turn: _Turn,
    ) -> AgentResult:
        field = spec.by_name.get(record.asking) if record.asking is not None else None
        if field is None:  # the agent itself asked for more input: hand the message to it again
            return await self._advance(spec, record, message, key, context, turn)
        before = record.values.get(field.name, MISSING)
        corrected = False
        if self.slot_extractor is not None:
            record.values.pop(field.name, None)
            earlier = dict(record.values)
            found = await self._extract_more(spec, record, message, context, field)
            corrected = any(earlier.get(name, MISSING) != value for name, value in found.items())
        if field.name not in record.values:
            if corrected:  # the message set or corrected other fields, not this one: ask it again
                if before is not MISSING:
                    record.values[field.name] = before
                return await self._advance(spec, record, message, key, context, turn)
            try:
                record.values[field.name] = field.parse_answer(message)
            except InvalidAnswer as invalid:
                if before is not MISSING:
                    record.values[field.name] = before
                return await self._invalid(spec, record, field, invalid, key, turn)
        record.attempts = 0
        return await self._advance(spec, record, message, key, context, turn)

    async def _invalid(
        self,
        spec: AgentSpec,
        record: ConversationRecord,
        field: Slot,
        invalid: InvalidAnswer,
        key: ConversationKey,
        turn: _Turn,
    ) -> AgentResult:
        record.attempts += 1
        record.updated_at = time.time()
        if record.attempts >= field.max_attempts:
            turn.state(spec.name, record.status, AgentStatus.FAILED)
            record.status = AgentStatus.FAILED
            record.asking = None
            await self._save(key, record, turn)
            example = spec.triggers[0] if spec.triggers else spec.name
            turn.say(
                f"Sorry, I still couldn't use that answer. Let's stop here; say \"{example}\" to start again."
            )
            return self._stamp(
                AgentResult(
                    status=AgentStatus.FAILED,
                    agent_name=spec.name,
                    field=field.name,
                    error="too_many_attempts",
                ),
                key,
                turn,
            )
        await self._save(key, record, turn)
        return self._ask(spec, field, key, turn, prefix=invalid.reason)

    def _ask(
        self, spec: AgentSpec, field: Slot, key: ConversationKey, turn: _Turn, prefix: str = ""
    ) -> AgentResult:
        choices = field.choice_labels
        if turn.sink is not None:
            turn.sink(
                trusted(
                    InputRequiredEvent,
                    {
                        "agent": spec.name,
                        "field": field.name,
                        "question": field.question,
                        "choices": None if choices is None else list(choices),
                    },
                )
            )
        turn.say(f"{prefix} {field.question}" if prefix else field.question)
        return trusted(  # `_stamp`'s fields included: one dict, not two
            AgentResult,
            {
                "status": AgentStatus.WAITING_FOR_INPUT,
                "agent_name": spec.name,
                "field": field.name,
                "choices": None if choices is None else list(choices),
                "raw_message": turn.text,
                "tenant_id": key.tenant_id,
                "conversation_id": key.conversation_id,
                "user_id": key.user_id,
            },
        )

    async def _advance(
        self,
        spec: AgentSpec,
        record: ConversationRecord,
        message: str,
        key: ConversationKey,
        context: dict[str, Any],
        turn: _Turn,
        refused: Mapping[str, str] | None = None,
    ) -> AgentResult:
        field = spec.missing(record.values)
        record.updated_at = time.time()
        if field is not None:
            if turn.sink is not None:
                turn.state(spec.name, record.status, AgentStatus.WAITING_FOR_INPUT)
            record.status = AgentStatus.WAITING_FOR_INPUT
            record.asking = field.name
            await self._save(key, record, turn)
            return self._ask(spec, field, key, turn, prefix=refused.get(field.name, "") if refused else "")
        if turn.sink is not None:
            turn.state(spec.name, record.status, AgentStatus.RUNNING)
        record.status = AgentStatus.RUNNING
        record.asking = None
        result = await self._run_agent(spec, record, message, context, turn)
        if turn.sink is not None:
            turn.state(spec.name, AgentStatus.RUNNING, result.status)
        record.status = result.status
        record.updated_at = time.time()
        await self._save(key, record, turn)
        return self._stamp(result, key, turn)

    async def _run_agent(
        self, spec: AgentSpec, record: ConversationRecord, message: str, context: dict[str, Any], turn: _Turn
    ) -> AgentResult:
        agent = self._agent(spec, record, context)
        timeout = spec.timeout if spec.timeout is not None else self.default_timeout
        task = asyncio.current_task() if timeout is not None else None
        if task is not None and timeout is not None:
            self._deadlines.arm(task, timeout, turn)
        # Bills the agent's LLM calls to its tenant.
        llm_tenant = current_tenant.set(context["tenant_id"]) if self.llm_client is not None else None
        try:
            if observability.tracer() is None:
                result = await self._invoke(agent, message, turn)
            else:
                with observability.span("flowagents.agent", agent=spec.name):
                    result = await self._invoke(agent, message, turn)
        except asyncio.CancelledError:
            if task is None or not self._deadlines.expired(task):
                raise
            log.warning("agent %s timed out after %ss", spec.name, timeout)
            text = "Sorry, that took too long, so I stopped. Please try again."
            if turn.sink is not None:
                turn.sink(ErrorEvent(message=text, code="timeout"))
            turn.say(text)
            return AgentResult(status=AgentStatus.TIMED_OUT, agent_name=spec.name, error="TimeoutError")
        except LLMError as exc:
            return self._agent_failed(spec, exc, turn, "llm_error")
        except Exception as exc:
            return self._agent_failed(spec, exc, turn, "agent_failed")
        finally:
            if llm_tenant is not None:
                current_tenant.reset(llm_tenant)
            if task is not None:
                self._deadlines.disarm(task, turn)
        if result.agent_name is None:
            _assign(result, agent_name=spec.name)
        if not result.data and record.values:
            _assign(result, data=dict(record.values))
        return result

    async def _invoke(self, agent: StandardAgent, message: str, turn: _Turn) -> AgentResult:
        """Run `on_running` and turn whatever it gives (result, text, chunks) into a result."""
        outcome: Any = agent.on_running(message)
        if type(outcome) is CoroutineType or not hasattr(outcome, "__aiter__"):  # hasattr fails slowly
            outcome = await outcome
        if isinstance(outcome, AgentResult):
            turn.say(outcome.raw_message)
            return outcome
        if hasattr(outcome, "__aiter__"):
            return await self._consume(agent, outcome, turn) or agent.make_result(AgentStatus.COMPLETED)
        if outcome is not None and not isinstance(outcome, str):
            raise _bad_outcome(agent, outcome)
        result = agent.make_result(AgentStatus.COMPLETED, outcome or "")
        turn.say(result.raw_message)
        return result

    async def _consume(self, agent: StandardAgent, stream: Any, turn: _Turn) -> AgentResult | None:
        final: AgentResult | None = None
        async with aclosing(stream) as items:
            async for item in items:
                if isinstance(item, AgentResult):
                    final = item
                elif isinstance(item, str):
                    if item:
                        turn.chunk(item)
                elif item is not None:
                    raise _bad_outcome(agent, item)
        if final is not None and final.raw_message:
            turn.say(final.raw_message)
        return final

    def _agent_failed(self, spec: AgentSpec, exc: BaseException, turn: _Turn, code: str) -> AgentResult:
        log.exception("agent %s failed: %s", spec.name, type(exc).__name__, exc_info=exc)
        text = "Sorry, something went wrong while handling that. Please try again."
        if turn.sink is not None:
            turn.sink(ErrorEvent(message=text, code=code))
        turn.say(text)
        return AgentResult(status=AgentStatus.FAILED, agent_name=spec.name, error=type(exc).__name__)

    async def _cancel(
        self, spec: AgentSpec, record: ConversationRecord, key: ConversationKey, turn: _Turn
    ) -> AgentResult:
        turn.state(spec.name, record.status, AgentStatus.CANCELLED)
        record.status = AgentStatus.CANCELLED
        record.asking = None
        record.updated_at = time.time()
        await self._save(key, record, turn)
        turn.say(f"Cancelled: {spec.description}.".replace("..", "."))
        return self._stamp(AgentResult(status=AgentStatus.CANCELLED, agent_name=spec.name), key, turn)


def _delivery_key(tenant_id: str, delivery_id: str) -> str:
    """The store's key of a delivery: its id within its tenant (ids need not be unique across tenants)."""
    return f"{len(tenant_id)}:{tenant_id}:{delivery_id}"


def _is_cancel(message: str) -> bool:
    """True when the whole message is a cancel phrase ("Cancel!", "never  mind", "stop…", "please cancel")."""
    text = message.strip(_PUNCTUATION).lower()
    if text in CANCEL_PHRASES:
        return True
    if len(text) > _CANCEL_CHARS + len(" please"):
        return False
    if " ".join(text.split()).strip(_PUNCTUATION) in CANCEL_PHRASES:
        return True
    if "please" not in text:  # most short answers: nothing more to take off
        return False
    words = [word.strip(_PUNCTUATION) for word in text.split()]
    if words and words[0] == "please":  # "please cancel"
        del words[0]
    if words and words[-1] == "please":  # "cancel, please"
        del words[-1]
    return " ".join(word for word in words if word) in CANCEL_PHRASES


def _bad_outcome(agent: StandardAgent, outcome: object) -> AgentDefinitionError:
    """What an `on_running` that gave something other than text or a result is told."""
    return AgentDefinitionError(
        f"{type(agent).__name__}.on_running gave a {type(outcome).__name__}; on_running must return an "
        "AgentResult (self.make_result(...)), a str or None, or yield str chunks (optionally ending "
        "with an AgentResult)."
    )


def _assign(result: AgentResult, **values: Any) -> None:
    """Set fields of a result the orchestrator built or received, without pydantic's per-attribute
    `__setattr__` (a large share of a turn's cost). The values are already of the right types."""
    result.__dict__.update(values)
    result.__pydantic_fields_set__.update(values)


def _make_slot_extractor(llm_client: Any) -> Any:
    try:
        from flowagents.llm.slots import LLMSlotExtractor
    except ImportError:
        return None
    return LLMSlotExtractor(llm_client)
