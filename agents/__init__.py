"""The agents the bot ships with. Importing this package registers them."""

from agents.assistant import AssistantAgent
from agents.booking import BookingAgent
from agents.leave import LeaveAgent

__all__ = ["AssistantAgent", "BookingAgent", "LeaveAgent"]
