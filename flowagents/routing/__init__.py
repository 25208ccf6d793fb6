"""Routing strategies: which agent a message goes to."""

from flowagents.routing.base import AgentProfile, Router, RoutingDecision
from flowagents.routing.triggers import TriggerIndex, TriggerRouter

__all__ = ["AgentProfile", "Router", "RoutingDecision", "TriggerIndex", "TriggerRouter"]
