"""OpenTelemetry set-up for FLOWAGENTS_TRACING=1 (the optional `otel` extra).

The bot emits spans through the OpenTelemetry API whenever it is installed (a no-op until a tracer
provider is configured). With FLOWAGENTS_TRACING=1 the bot configures the SDK itself and exports over
OTLP; the standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...) apply.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from bot.settings import BotSettings


def setup_tracing(settings: BotSettings) -> Callable[[], None] | None:
    """Install an OTLP-exporting tracer provider when asked; returns its shutdown (flushes spans)."""
    if not settings.flowagents_tracing:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        from bot.app import StartupError

        raise StartupError(
            "FLOWAGENTS_TRACING: needs opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http; "
            "pip install 'flowagents[otel]' or unset FLOWAGENTS_TRACING"
        ) from None
    default = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "flowagents-bot"}
    provider = TracerProvider(resource=Resource.create(default))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown
