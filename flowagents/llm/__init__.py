"""Language-model clients: the `LLMClient` protocol and its OpenAI implementation."""

from flowagents.llm.base import ChatMessage, LLMClient, LLMUsage
from flowagents.llm.openai import OpenAIClient

__all__ = ["ChatMessage", "LLMClient", "LLMUsage", "OpenAIClient"]
