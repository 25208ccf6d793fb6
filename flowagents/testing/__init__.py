"""Test kits for bot authors: drive conversations with your agents in pytest, with or without a platform.

- `flowagents.testing.driver`: `ConversationDriver`, `Transcript` and the pytest fixtures
  (`pytest_plugins = ["flowagents.testing.driver"]`);
- `flowagents.testing.slack` / `flowagents.testing.discord`: loopback Slack and Discord fakes that the
  real client libraries talk to; `PlatformConversation` puts them behind the same `say`.

See docs/operations.md ("Testing your agents").
"""

import pytest

pytest.register_assert_rewrite("flowagents.testing.driver")  # it is also a pytest plugin

from flowagents.testing.driver import (  # noqa: E402
    Conversation,
    ConversationDriver,
    PlatformConversation,
    RecordingOrchestrator,
    Transcript,
)

__all__ = [
    "Conversation",
    "ConversationDriver",
    "PlatformConversation",
    "RecordingOrchestrator",
    "Transcript",
]
