"""Page splitting, help embeds and edit pacing of the Discord channel."""

from __future__ import annotations

import asyncio

from adapters._discord_pacer import EditPacer
from adapters._discord_text import (
    EMBED_LIMIT,
    help_embed,
    layout_page,
    open_fence,
    split_pages,
    split_point,
    strip_mentions,
)
from flowagents import AgentInfo


def test_short_text_is_one_page() -> None:
    assert split_pages("hello") == ["hello"]
    assert split_point("x" * 2000) == 2000


def test_split_prefers_paragraph_then_line_then_word_breaks() -> None:
    para = "a" * 1500 + "\n\n" + "b" * 800
    assert split_pages(para) == ["a" * 1500 + "\n\n", "b" * 800]
    line = "a" * 1500 + "\n" + "b" * 800
    assert split_pages(line) == ["a" * 1500 + "\n", "b" * 800]
    words = ("word " * 500).strip()
    pages = split_pages(words)
    assert all(len(p) <= 2000 for p in pages) and "".join(pages) == words
    assert all(p.endswith(" ") for p in pages[:-1])


def test_early_breaks_are_ignored_and_unbroken_text_is_cut_hard() -> None:
    text = "ab\n\n" + "c" * 2500
    assert split_pages(text) == [text[:2000], text[2000:]]


def pages_of(text: str) -> list[tuple[str, str]]:
    """(what each page holds, what it shows) when ``text`` is laid out page after page."""
    pages: list[tuple[str, str]] = []
    done = 0
    while done < len(text):
        cut, content = layout_page(text[:done], text[done:])
        pages.append((text[done : done + cut], content))
        done += cut
    return pages


def test_a_code_block_split_between_pages_is_closed_and_reopened() -> None:
    code = "\n".join(f"    total += compute({i})" for i in range(120))
    text = f"Here is the script:\n\n```python\n{code}\n```\n\nThat is all."
    pages = pages_of(text)
    assert len(pages) == 2 and "".join(held for held, _ in pages) == text
    (held1, shown1), (held2, shown2) = pages
    assert shown1 == held1 + "```" and held1.endswith("\n")
    assert shown2 == "```python\n" + held2
    assert all(len(shown) <= 2000 and open_fence(shown) is None for _, shown in pages)


def test_a_page_ends_before_a_code_block_rather_than_inside_it() -> None:
    prose = "word " * 140 + "\n\n"
    block = "```\n" + "\n".join(f"line {i}" for i in range(200)) + "\n```\n"
    assert [held for held, _ in pages_of(prose + block)] == [prose, block]
    assert [shown for _, shown in pages_of(prose + block)] == [prose, block]


def test_strip_mentions_keeps_other_users() -> None:
    assert strip_mentions("<@1> hi <@!2> and <@1>", 1) == "hi <@!2> and"


def test_help_embed_lists_agents_with_examples() -> None:
    embed = help_embed(
        [AgentInfo(name="Booking", description="Books tables.", triggers=["book table"], example=None)]
    )
    field = embed.fields[0]
    assert field.name == "Booking" and "Books tables." in (field.value or "")
    assert "book table" in (field.value or "")
    assert help_embed([]).description == "No agents are configured yet."


def _agents(count: int, *, name_len: int = 12, desc_len: int = 700) -> list[AgentInfo]:
    return [
        AgentInfo(
            name=f"Agent{i}".ljust(name_len, "x"),
            description=f"Agent {i} handles " + "requests " * desc_len,
            triggers=[f"topic {i}"],
            example=None,
        )
        for i in range(count)
    ]


def test_help_embed_shortens_descriptions_to_fit_discords_total_limit() -> None:
    embed = help_embed(_agents(10))
    assert len(embed) <= EMBED_LIMIT
    assert [f.name for f in embed.fields] == [a.name for a in _agents(10)]
    assert all("topic" in (f.value or "") and (f.value or "").count("…") == 1 for f in embed.fields)
    assert embed.description is None  # nobody left out


def test_help_embed_says_how_many_agents_it_left_out() -> None:
    embed = help_embed(_agents(40, name_len=250))
    assert len(embed) <= EMBED_LIMIT and len(embed.fields) <= 25
    left_out = 40 - len(embed.fields)
    assert left_out > 15 and f"{left_out} more not listed" in (embed.description or "")


async def test_the_pacer_forgets_idle_dm_channels_and_keeps_limiting_busy_ones() -> None:
    pacer = EditPacer(per_channel=(1, 0.2), per_bot=(10_000, 1.0), margin=0.0, keep=10)
    loop = asyncio.get_running_loop()
    for channel_id in range(1, 101):  # one edit in each of 100 DMs
        async with pacer.slot(channel_id):
            pass
    assert len(pacer._channels) == 100 and not pacer._locks  # each DM's edit is still in its window
    editing, finish = asyncio.Event(), asyncio.Event()

    async def slow_edit() -> None:
        async with pacer.slot(1000):
            editing.set()
            await finish.wait()

    slow = asyncio.create_task(slow_edit())
    await editing.wait()
    pacer.cool_off(2000, 0.5)
    cooled_until = loop.time() + 0.5
    await asyncio.sleep(0.25)  # every other window is past
    async with pacer.slot(1):
        pass
    assert set(pacer._channels) == {1, 1000} and set(pacer._cool) == {2000} and set(pacer._locks) == {1000}
    finish.set()
    await slow
    started = loop.time()
    async with pacer.slot(1000):  # a full window after the slow edit's answer
        assert loop.time() - started >= 0.19
    async with pacer.slot(2000):  # still cooling off
        assert loop.time() >= cooled_until - 0.01
    assert not pacer._locks
