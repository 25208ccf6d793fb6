"""Unit tests of the Slack channel's helpers: Markdown conversion, splitting, Block Kit, call budgets."""

from __future__ import annotations

import pytest
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from adapters._slack_format import (
    defuse_broadcasts,
    fit_message,
    help_blocks,
    split_at_boundary,
    to_mrkdwn,
    unfinished_token,
)
from adapters._slack_pacing import BudgetRegistry, CallBudget, RateLimit
from adapters._slack_reply import web_api_retry_handlers
from flowagents import AgentInfo


@pytest.mark.parametrize(
    ("markdown", "mrkdwn"),
    [
        ("**bold** and __also__", "*bold* and *also*"),
        ("*italic* text", "_italic_ text"),
        ("~~gone~~", "~gone~"),
        ("[docs](https://example.com/a?b=1)", "<https://example.com/a?b=1|docs>"),
        ("# Title\n- one\n- two", "*Title*\n• one\n• two"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("hi <@U123> in <#C1>", "hi <@U123> in <#C1>"),
        ("<!date^1700000000^{date}|Nov-14>", "<!date^1700000000^{date}|Nov-14>"),
        (
            "<!channel> <!Here|here> <!subteam^S1|@devs>",
            "&lt;!channel&gt; &lt;!Here|here&gt; &lt;!subteam^S1|@devs&gt;",
        ),
        ("`**not bold**`", "`**not bold**`"),
        ("```python\nx = **y**\n```", "```\nx = **y**\n```"),
    ],
)
def test_markdown_becomes_slack_mrkdwn(markdown: str, mrkdwn: str) -> None:
    assert to_mrkdwn(markdown) == mrkdwn


def test_streamed_markdown_never_carries_a_channel_wide_mention() -> None:
    assert defuse_broadcasts("hey <!everyone>, <@U1> and <!date^1^{date}|x>") == (
        "hey <\u200b!everyone>, <@U1> and <!date^1^{date}|x>"
    )
    # A group mention's label may have spaces: it is still a mention.
    assert defuse_broadcasts("cc <!subteam^S1|@dev team>") == "cc <\u200b!subteam^S1|@dev team>"
    # A stream keeps back a trailing "<..." that may still become a mention, and only that.
    assert unfinished_token("ping <!chan") == len("ping ")
    assert unfinished_token("a < b") == len("a < b")
    assert unfinished_token("done <@U1>") == len("done <@U1>")
    assert unfinished_token("cc <!subteam^S1|@dev te") == len("cc ")


def test_split_prefers_paragraph_then_word_boundaries_and_loses_nothing() -> None:
    text = "First paragraph here.\n\nSecond paragraph is longer than the rest."
    head, rest = split_at_boundary(text, 30)
    assert head == "First paragraph here.\n\n" and head + rest == text
    head, rest = split_at_boundary("alpha beta gamma delta", 12)
    assert head == "alpha beta " and head + rest == "alpha beta gamma delta"
    head, rest = split_at_boundary("x" * 50, 20)
    assert (head, rest) == ("x" * 20, "x" * 30)


def test_split_never_cuts_a_word_that_fits_even_when_the_only_break_is_early() -> None:
    text = "a " + "b" * 19 + " c"
    assert split_at_boundary(text, 20) == ("a ", "b" * 19 + " c")
    # Only a word longer than the limit is cut.
    assert split_at_boundary("b" * 30 + " c", 20) == ("b" * 20, "b" * 10 + " c")


@pytest.mark.parametrize(
    "token",
    [
        "<https://x.io|the full setup guide>",
        "<#C123|general chat room>",
        "[the full setup guide](https://x.io)",
        "`pip install --upgrade flowagents`",
        "**a bold claim here**",
        "*the mrkdwn bold here*",
    ],
)
def test_split_keeps_links_mentions_code_spans_and_emphasis_whole(token: str) -> None:
    text = f"Please read {token} right now."
    head, rest = split_at_boundary(text, len("Please read ") + len(token) - 3)
    assert (head, rest) == ("Please read ", f"{token} right now.")
    # A message with text already in it leaves the whole token to the next message.
    sent = "x" * 30 + "\n"
    assert fit_message(sent, f"{token} now.", len(sent) + len(token) - 3) == ("", f"{token} now.")
    # Only a token too long for any message is broken, at a space.
    head, rest = split_at_boundary(f"{token} now.", len(token) - 3)
    assert head.endswith(" ") and head + rest == f"{token} now."


def test_a_code_block_cut_in_two_is_closed_and_opened_again() -> None:
    code = "".join(f"x = {i}\n" for i in range(20))
    text = f"Here is the whole script.\n\n```python\n{code}```\nAfter."
    parts: list[str] = []
    rest = text
    while rest:
        head, rest = fit_message("", rest, 60)
        assert len(head) <= 60
        parts.append(head)
    assert parts[0] == "Here is the whole script.\n\n"  # the block starts late: it opens the next message
    with_code = [p for p in parts if "x = " in p]
    assert len(with_code) >= 3
    assert all(p.startswith("```python\n") and p.rstrip().endswith("\n```") for p in with_code), parts
    code_shown = [line for p in parts for line in p.splitlines() if line.startswith("x = ")]
    assert code_shown == code.splitlines()  # every line once, none cut
    assert parts[-1].endswith("After.") and "".join(parts).count("```") % 2 == 0
    # A message that already has a block open closes it, even with no room for more.
    assert fit_message("```\n" + "y = 1\n" * 8, "z = 2 + 3\n", 56) == ("```", "```\nz = 2 + 3\n")
    # The cut falls just before the block's own closing fence: it is not opened again for nothing.
    assert fit_message("", "```\nab\n\n```\nok", 12) == ("```\nab\n\n```", "ok")


def test_help_blocks_list_each_agent_with_description_and_example() -> None:
    catalog = [
        AgentInfo(name="Booking", description="Books tables.", triggers=["book table"], example=None),
        AgentInfo(name="Leave", description="Requests time off.", triggers=[], example="I need Friday off"),
    ]
    blocks = help_blocks("I can help with these:", catalog)
    texts = [b["text"]["text"] for b in blocks]
    assert texts[0] == "I can help with these:"
    assert "*Booking*" in texts[2] and "Books tables." in texts[2] and "`book table`" in texts[2]
    assert "`I need Friday off`" in texts[3]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_budget_allows_the_limit_per_window_then_refills() -> None:
    clock = Clock()
    budget = CallBudget(RateLimit(2, 10.0), margin=0.0, clock=clock)
    for _ in range(2):
        slot = budget.try_slot()
        assert slot is not None
        async with slot:
            pass
    assert budget.try_slot() is None and budget.tight
    clock.now += 10.0
    assert budget.try_slot() is not None


async def test_budget_counts_calls_in_flight_and_dates_them_by_their_answer() -> None:
    clock = Clock()
    budget = CallBudget(RateLimit(1, 10.0), margin=0.0, clock=clock)
    slot = budget.try_slot()
    assert slot is not None
    async with slot:
        clock.now += 30.0  # a slow answer
        assert budget.try_slot() is None  # still in flight: it counts
    clock.now += 9.0
    assert budget.try_slot() is None  # the window starts when Slack answered
    clock.now += 1.0
    assert budget.try_slot() is not None


def test_cool_off_blocks_the_whole_budget() -> None:
    clock = Clock()
    budget = CallBudget(RateLimit(50, 60.0), clock=clock)
    budget.cool_off(3.0)
    assert budget.try_slot() is None and budget.tight
    clock.now += 3.0
    assert budget.try_slot() is not None


def test_registry_shares_budgets_per_workspace_and_method() -> None:
    registry = BudgetRegistry({"chat.update": RateLimit(5, 1.0)})
    assert registry.get("T1", "chat.update", "C1") is registry.get("T1", "chat.update", "C2")
    assert registry.get("T1", "chat.update") is not registry.get("T2", "chat.update")
    assert registry.get("T1", "chat.postMessage", "C1") is not registry.get("T1", "chat.postMessage", "C2")
    assert registry.get("T1", "auth.test") is None


async def test_registry_drops_the_budgets_of_idle_dm_channels_and_keeps_the_busy_ones() -> None:
    clock = Clock()
    registry = BudgetRegistry(keep=10, clock=clock)
    for i in range(100):  # one message in each of 100 DMs
        dm = registry.get("T1", "chat.postMessage", f"D{i}")
        assert dm is not None
        async with dm.slot():
            pass
    assert len(registry._budgets) == 100  # each DM's message is still in its window
    budget = registry.get("T1", "chat.postMessage", "D0")
    assert budget is not None and budget.try_slot() is None
    in_flight = registry.get("T1", "chat.postMessage", "Dslow")
    cooling = registry.get("T1", "chat.postMessage", "Dlimited")
    assert in_flight is not None and cooling is not None
    cooling.cool_off(30.0)
    async with in_flight.slot():
        clock.now += 10.0  # every window is past
        assert registry.get("T1", "chat.postMessage", "Dslow") is in_flight
        assert set(registry._budgets) == {("T1", "chat.postMessage", c) for c in ("Dslow", "Dlimited")}
        assert in_flight.try_slot() is None
    assert registry.get("T1", "chat.postMessage", "Dlimited") is cooling and cooling.try_slot() is None


@pytest.mark.parametrize(
    ("status", "body", "retried"),
    [
        (500, None, True),
        (502, None, True),
        (503, {"ok": False, "error": "service_unavailable"}, True),
        (200, {"ok": False, "error": "internal_error"}, True),
        (200, {"ok": False, "error": "service_unavailable"}, True),
        (200, {"ok": False, "error": "fatal_error"}, False),  # "catastrophic": may have half happened
        (200, {"ok": False, "error": "channel_not_found"}, False),
        (429, {"ok": False, "error": "ratelimited"}, False),  # left to the writer's shared budgets
        (200, {"ok": True}, False),
    ],
)
async def test_web_api_client_retries_transient_slack_errors_only(
    status: int, body: dict[str, object] | None, retried: bool
) -> None:
    request = HttpRequest(method="POST", url="https://slack.com/api/chat.postMessage", headers={})
    response = HttpResponse(status_code=status, headers={}, body=body)
    handlers = web_api_retry_handlers()
    verdicts = [
        await h.can_retry_async(state=RetryState(), request=request, response=response) for h in handlers
    ]
    assert any(verdicts) is retried
