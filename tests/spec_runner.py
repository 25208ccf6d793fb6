"""Runs every code block of the spec (orchestrator.md) in order, in one namespace, as a reader would.

Executed in a fresh interpreter by test_spec.py so the agent registry holds only what the spec defines.
Prints one JSON line of observations per block.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def spec_path() -> Path:
    shared = Path(__file__).resolve().parents[2] / "shared" / "spec" / "orchestrator.md"
    return shared if shared.exists() else Path(__file__).parent / "data" / "orchestrator.md"


async def run_block(source: str, namespace: dict[str, Any]) -> None:
    code = compile(
        source, "<orchestrator.md>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
    )
    outcome = eval(code, namespace)
    if asyncio.iscoroutine(outcome):
        await outcome


async def probe(source: str, ns: dict[str, Any]) -> dict[str, Any]:
    """Exercise what a block defined, the way its prose says it behaves."""
    from flowagents import AgentStatus, Orchestrator, StandardAgent, flowagent

    out: dict[str, Any] = {}
    booking = ns["BookingAgent"]
    if "def route_message" in source:

        @flowagent(triggers=["page the on-call"], name="UrgentAgent")
        class UrgentAgent(StandardAgent):
            async def on_running(self, msg: str) -> Any:
                return self.make_result(status=AgentStatus.COMPLETED, raw_message="Paging now.")

        orch = ns["MyOrchestrator"](agents=[UrgentAgent, booking])
        out["urgent"] = (await orch.process("This is URGENT: the site is down", tenant_id="t")).agent_name
        out["regular"] = (await orch.process("I need to book a table", tenant_id="t")).agent_name
    if "def prepare_context" in source:
        orch = ns["MyOrchestrator"](agents=[booking])
        ok = await orch.process("book a table", tenant_id="company_a", user_id="u1")
        blocked = await orch.process("book a table", tenant_id="blocked_tenant", user_id="u1")
        out["ok_processed"] = ok.processed
        out["blocked_processed"] = blocked.processed
        out["blocked_active"] = len(orch.get_active_agents(tenant_id="blocked_tenant"))
    if "def handle_no_match" in source:
        orch = ns["MyOrchestrator"](agents=[booking])
        nomatch = await orch.process("what is the meaning of life?", tenant_id="t")
        out["no_match_text"] = nomatch.raw_message
        out["no_match_flag"] = nomatch.no_match
    if "get_active_agents" in source:
        out["active"] = [a.agent for a in ns["agents"]]
    if 'routing_strategy="llm"' in source:
        out["constructed"] = isinstance(ns["orchestrator"], Orchestrator)
    return out


async def main() -> None:
    blocks = BLOCK.findall(spec_path().read_text())
    history: list[Any] = []

    async def get_user_prefs(tenant_id: str) -> dict[str, str]:
        return {"tenant": tenant_id, "language": "en"}

    async def is_rate_limited(tenant_id: str) -> bool:
        return tenant_id == "blocked_tenant"

    async def save_to_history(tenant_id: str, result: Any) -> None:
        history.append((tenant_id, result.raw_message))

    base: dict[str, Any] = {
        "__name__": "spec",
        "message": "Request time off",
        "get_user_prefs": get_user_prefs,
        "is_rate_limited": is_rate_limited,
        "save_to_history": save_to_history,
    }
    # The quick start sets the scene; every later block runs after it, as the document reads.
    for index, source in enumerate(blocks):
        ns = base if index == 0 else dict(base)
        if index > 0:
            # Names the later blocks use that the API document defines (reader imports them).
            exec("from flowagents import RoutingDecision, AgentResult", ns)
        printed: list[str] = []
        ns["print"] = lambda *a, end="\n", _p=printed, **k: _p.append(" ".join(map(str, a)) + end)
        await run_block(source, ns)
        obs: dict[str, Any] = {"block": index, "printed": "".join(printed)}
        result = ns.get("result")
        if result is not None and hasattr(result, "agent_name"):
            obs["result"] = {
                "agent": result.agent_name,
                "status": str(result.status),
                "text": result.raw_message,
            }
        if index == 0:
            first = await ns["orchestrator"].handle_message("user_9", "I need to book a table")
            obs["first"] = first.agent_name
        else:
            obs.update(await probe(source, ns))
        print(json.dumps(obs), flush=True)
    print(json.dumps({"blocks": len(blocks), "history": history}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
