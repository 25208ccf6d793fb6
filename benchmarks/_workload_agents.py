"""The seeded workload's agents built through flowagents' public API (shared by the benchmarks).

Scenario A: one single-turn agent per intent replying its fixed text. Scenario B: one agent per intent
asking two free-text fields, then confirming them. The no-match reply is the workload's fallback text.
"""

from __future__ import annotations

from typing import Any

from flowagents import (
    AgentResult,
    AgentStatus,
    InputField,
    Orchestrator,
    StandardAgent,
    flowagent,
)


def workload_agents(intents: list[dict[str, Any]], scenario: str) -> list[type[StandardAgent]]:
    """One `@flowagent` per intent for scenario "A" (single turn) or "B" (slot filling)."""
    agents = []
    for it in intents:
        if scenario == "A":
            reply = it["reply"]

            async def on_running(self: StandardAgent, msg: str, _reply: str = reply) -> Any:
                return self.make_result(status=AgentStatus.COMPLETED, raw_message=_reply)

            body: dict[str, Any] = {"on_running": on_running}
        else:
            template = it["confirm_template"]

            async def on_running(self: StandardAgent, msg: str, _t: str = template) -> Any:
                text = _t.format(quantity=self.quantity, when=self.when)  # type: ignore[attr-defined]
                return self.make_result(status=AgentStatus.COMPLETED, raw_message=text)

            body = {
                "on_running": on_running,
                "quantity": InputField(it["slots"][0]["question"]),
                "when": InputField(it["slots"][1]["question"]),
                "__annotations__": {"quantity": str, "when": str},
            }
        cls = type(f"Agent_{it['name']}", (StandardAgent,), body)
        agents.append(flowagent(triggers=it["triggers"], name=it["name"])(cls))
    return agents


def fallback_orchestrator(fallback: str) -> type[Orchestrator]:
    """An `Orchestrator` whose no-match reply is the workload's fallback text."""

    class BenchOrchestrator(Orchestrator):
        async def handle_no_match(self, message: str, context: dict[str, Any]) -> AgentResult:
            return AgentResult(status=AgentStatus.COMPLETED, raw_message=fallback)

    return BenchOrchestrator
