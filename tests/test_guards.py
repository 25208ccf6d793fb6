"""Guards: the rate limit and the message length limit, applied by the default `should_process`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flowagents import AgentResult, AgentStatus, InputField, StandardAgent, flowagent
from flowagents.guards import GuardedOrchestrator, MaxMessageLength, RateLimit, TokenBuckets
from flowagents.testing import ConversationDriver

ROOT = Path(__file__).resolve().parents[1]


@flowagent(triggers=["guarded order"], description="Order something (guard tests)")
class GuardedOrderAgent(StandardAgent):
    item: str = InputField("Which item?")

    async def on_running(self, msg: str) -> AgentResult:
        return self.make_result(AgentStatus.COMPLETED, f"Ordered {self.item}.")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_user_over_the_limit_gets_a_polite_reply_and_nothing_runs() -> None:
    clock = FakeClock()
    guard = RateLimit(per_user=(2, 60), per_tenant=None, clock=clock)
    async with ConversationDriver.for_agents(
        [GuardedOrderAgent], orchestrator_class=GuardedOrchestrator, guards=[guard]
    ) as chat:
        (await chat.say("guarded order")).expect_question(field="item")
        (await chat.say("tea")).expect_completed(agent="GuardedOrderAgent")
        refused = await chat.say("guarded order")
        refused.expect_rejected(contains="Please wait 30 seconds")
        assert refused.routing is None and refused.states == []
        assert chat.active_agent is None  # no state changed
        clock.now += 30  # one message refilled
        (await chat.say("guarded order")).expect_question(field="item")


async def test_users_are_limited_separately_and_the_tenant_as_a_whole() -> None:
    clock = FakeClock()
    guard = RateLimit(per_user=(2, 60), per_tenant=(3, 60), clock=clock)
    async with ConversationDriver.for_agents(
        [GuardedOrderAgent],
        orchestrator_class=GuardedOrchestrator,
        guards=[guard],
        tenant_id="acme",
        user_id="ann",
    ) as ann:
        bob = ann.as_user("bob")
        other_tenant = ann.as_user("carol", tenant_id="globex")
        (await ann.say("hello")).expect_no_match()
        (await ann.say("hello")).expect_no_match()
        (await ann.say("hello")).expect_rejected(contains="faster than I can keep up")
        (await bob.say("hello")).expect_no_match()
        (await bob.say("hello")).expect_rejected(contains="a lot of messages from your team")
        (await other_tenant.say("hello")).expect_no_match()


async def test_a_tenant_of_unrelated_people_does_not_share_one_budget() -> None:
    # All Discord DMs share one tenant: one group of senders must not lock every other DM user out.
    clock = FakeClock()
    guard = RateLimit(per_user=(2, 60), per_tenant=(3, 60), clock=clock)
    dm = {"platform": "discord", "shared_tenant": False}
    async with ConversationDriver.for_agents(
        [GuardedOrderAgent],
        orchestrator_class=GuardedOrchestrator,
        guards=[guard],
        tenant_id="discord-dm",
        user_id="u1",
    ) as first:
        for n in range(1, 5):
            sender = first.as_user(f"u{n}")
            (await sender.say("hello", metadata=dm)).expect_no_match()
            (await sender.say("hello", metadata=dm)).expect_no_match()
            (await sender.say("hello", metadata=dm)).expect_rejected(contains="faster than I can keep up")


async def test_refused_messages_do_not_use_up_the_budget() -> None:
    clock = FakeClock()
    guard = RateLimit(per_user=(1, 10), per_tenant=None, clock=clock)
    async with ConversationDriver.for_agents(
        [GuardedOrderAgent], orchestrator_class=GuardedOrchestrator, guards=[guard]
    ) as chat:
        (await chat.say("hi")).expect_no_match()
        for _ in range(5):
            (await chat.say("hi")).expect_rejected()
        clock.now += 10
        (await chat.say("hi")).expect_no_match()


async def test_too_long_message_is_refused_before_it_costs_rate_budget() -> None:
    guard = RateLimit(per_user=(1, 60), per_tenant=None, clock=FakeClock())
    async with ConversationDriver.for_agents(
        [GuardedOrderAgent], orchestrator_class=GuardedOrchestrator, guards=[MaxMessageLength(20), guard]
    ) as chat:
        (await chat.say("guarded order " + "x" * 30)).expect_rejected(
            contains="too long for me (44 characters). Please keep it under 20 characters."
        )
        (await chat.say("guarded order")).expect_question(field="item")


def test_token_buckets_stay_bounded() -> None:
    buckets = TokenBuckets(1, 60, clock=FakeClock(), max_keys=3)
    for user in range(10):
        buckets.take(user)
    assert len(buckets._buckets) == 3


def test_the_bot_applies_the_configured_limits() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "FLOWAGENTS_"))
    }
    env.update(
        FLOWAGENTS_STORE="memory",
        FLOWAGENTS_RATE_LIMIT_USER="2/1h",
        FLOWAGENTS_MAX_MESSAGE_CHARS="30",
        PYTHONPATH=str(ROOT),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bot"],
        input="x" * 31 + "\nhi\nhi\nhi\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "Sorry, that message is too long for me (31 characters). Please keep it under 30 characters.",
        "Sorry, I didn't get that.",
        "Sorry, I didn't get that.",
        "You're sending messages faster than I can keep up. Please wait 30 minutes and try again.",
    ]
