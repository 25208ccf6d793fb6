"""Free questions answered by the language model, streamed as the model writes.

Useful only when the bot has an LLM (OPENAI_API_KEY, or OPENAI_BASE_URL for a local server): it is declared
with `requires_llm=True`, so an orchestrator without an LLM client leaves it out.

Routing: triggers catch explicit requests ("ask the assistant ...", "question: ...", "explain ...",
"what is ...", "how do I ..."); with FLOWAGENTS_ROUTING=llm or hybrid, the model also picks it for any
general question from its description, and the examples help semantic routing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from flowagents import StandardAgent, flowagent
from flowagents.llm.base import ChatMessage

SYSTEM_PROMPT = (
    "You are a helpful assistant inside a team chat (Slack or Discord). Answer the user's question "
    "clearly and briefly, in a few short paragraphs at most, using Markdown sparingly. If you do not "
    "know, say so."
)
MAX_QUESTION_CHARS = 4000
NO_ANSWER = "Sorry, I have no answer to that. Could you rephrase the question?"


@flowagent(
    triggers=["ask the assistant", "ask assistant", "question", "explain", "what is", "how do i"],
    description="Answers general questions with the language model",
    examples=[
        "what is the capital of australia",
        "explain how compound interest works",
        "how do I write a haiku",
    ],
    timeout=60,
    requires_llm=True,
)
class AssistantAgent(StandardAgent):
    """Answers free questions with the LLM, streaming the answer."""

    async def on_running(self, msg: str) -> AsyncIterator[str]:  # type: ignore[override]
        if self.llm is None:
            yield (
                "I can only answer free questions when a language model is configured (set OPENAI_API_KEY)."
            )
            return
        messages: list[ChatMessage] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": msg[:MAX_QUESTION_CHARS]},
        ]
        # LLM errors (refused, filtered, cut off, unavailable...) propagate: the orchestrator turns them into
        # a polite failed reply (code "llm_error").
        answered = False
        async for chunk in self.llm.stream(messages, tenant_id=self.context.get("tenant_id")):
            answered = answered or bool(chunk.strip())
            yield chunk
        if not answered:  # an empty reply would post nothing at all
            yield NO_ANSWER
