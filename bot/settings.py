"""Every setting the bot honours, read from the environment and `.env` (pydantic-settings).

Each field is the upper-case environment variable of the same name. `settings_table()` renders the
Markdown table of docs/operations.md (a test keeps the two equal), and `describe_error()` turns a
validation error into the one line the bot prints before it stops (never echoing the value).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowagents.storage.base import MAX_TTL_SECONDS
from flowagents.storage.url import url_problem

STORE_SCHEMES = ("memory", "sqlite", "redis", "rediss", "postgres", "postgresql")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_SECONDS = 86400.0
"""The longest agent timeout and shutdown grace period (a day)."""


class RateSpec:
    """A parsed rate such as `20/60` (20 messages per 60 seconds) or `100/1h`."""

    def __init__(self, count: int, per_seconds: float) -> None:
        self.count = count
        self.per_seconds = per_seconds

    @classmethod
    def parse(cls, text: str) -> RateSpec | None:
        """None for `off`/`0`/empty; raises ValueError when the shape is wrong."""
        text = text.strip().lower()
        if text in ("", "0", "off", "none"):
            return None
        match = _RATE.match(text)
        if match is None or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
            raise ValueError("expected COUNT/SECONDS such as '20/60' or '100/1h', or 'off'")
        return cls(int(match.group(1)), float(match.group(2)) * _UNITS[match.group(3)])

    def __repr__(self) -> str:
        return f"RateSpec({self.count}/{self.per_seconds:g}s)"


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***` (safe for logs and error lines)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if port is not None:
        host = f"{host}:{port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def _fernet_keys(text: str) -> list[bytes]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    if not keys:
        raise ValueError("expected one or more comma-separated Fernet keys")
    for key in keys:
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(
                "expected a Fernet key (32 url-safe base64 bytes); generate one with "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`'
            )
    return [k.encode() for k in keys]


class BotSettings(BaseSettings):
    """The bot's configuration. Each field is the upper-case environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # ------------------------------------------------------------------ core
    flowagents_agents: str = Field(default="agents", description="Comma-separated agent modules to import.")
    flowagents_routing: Literal["trigger", "llm", "hybrid", "semantic"] = Field(
        default="trigger", description="Routing strategy: trigger, llm, hybrid or semantic."
    )
    flowagents_store: str = Field(
        default="",
        description="Conversation store: memory, sqlite:///path, redis://host:port/db or postgresql://...; "
        "empty is SQLite in FLOWAGENTS_DATA_DIR.",
    )
    flowagents_data_dir: str = Field(
        default="data", description="Directory for the default SQLite store and Slack installations."
    )
    flowagents_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="Default agent timeout in seconds (at most 86400).",
    )
    flowagents_idle_ttl: float = Field(
        default=86400.0,
        gt=0,
        le=MAX_TTL_SECONDS,
        allow_inf_nan=False,
        description="Seconds before a waiting conversation expires (at most 100 years).",
    )
    flowagents_shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        le=MAX_SECONDS,
        allow_inf_nan=False,
        description="Seconds the whole shutdown may take after SIGTERM (at most 86400).",
    )
    flowagents_embedding_cache: str | None = Field(
        default=None,
        description="Directory keeping example embeddings of semantic and hybrid routing between starts.",
    )
    flowagents_secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s), comma-separated (first encrypts), for Slack installation tokens at rest. "
        "Required with SLACK_CLIENT_ID.",
    )

    # ------------------------------------------------------------------ guards
    flowagents_rate_limit_user: str = Field(
        default="20/60",
        description="Messages per user per window, e.g. 20/60 (seconds) or 100/1h; off disables.",
    )
    flowagents_rate_limit_tenant: str = Field(
        default="600/60", description="Messages per tenant (workspace, server) per window; off disables."
    )
    flowagents_max_message_chars: int = Field(
        default=4000, ge=0, description="Longest message the bot accepts, in characters; 0 disables."
    )

    # ------------------------------------------------------------------ HTTP, logs, traces
    port: int = Field(
        default=3000,
        ge=0,
        le=65535,
        description="HTTP port (Slack events, /healthz, /metrics); 0 picks a free one.",
    )
    flowagents_host: str = Field(
        default="0.0.0.0", description="HTTP bind address (the playground always binds 127.0.0.1)."
    )
    flowagents_http: bool = Field(
        default=False,
        description="Serve /healthz and /metrics in console mode too (always served with a platform).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="Log format: json, text, or auto (JSON unless stderr is a terminal)."
    )
    flowagents_tracing: bool = Field(
        default=False,
        description="Export OpenTelemetry traces over OTLP (needs the `otel` extra; OTEL_* variables apply).",
    )

    # ------------------------------------------------------------------ LLM
    openai_api_key: SecretStr | None = Field(default=None, description="OpenAI (or compatible) API key.")
    openai_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL.")
    openai_model: str = Field(default="gpt-4o-mini", description="Model name.")

    # ------------------------------------------------------------------ Slack
    slack_bot_token: SecretStr | None = Field(default=None, description="xoxb- bot token (single workspace).")
    slack_app_token: SecretStr | None = Field(
        default=None, description="xapp- app-level token: enables Socket Mode."
    )
    slack_signing_secret: SecretStr | None = Field(default=None, description="Signing secret for HTTP mode.")
    slack_client_id: str | None = Field(
        default=None, description="OAuth client id (multi-workspace install flow)."
    )
    slack_client_secret: SecretStr | None = Field(default=None, description="OAuth client secret.")
    slack_api_url: str | None = Field(
        default=None, description="Slack Web API base URL (GovSlack, proxies, tests)."
    )
    slack_installation_db: str | None = Field(
        default=None,
        description="SQLite file for OAuth installations (default data/slack_installations.sqlite3).",
    )
    slack_respond_to_bots: bool = Field(default=False, description="Answer messages posted by other bots.")

    # ------------------------------------------------------------------ Discord
    discord_bot_token: SecretStr | None = Field(default=None, description="Discord bot token.")
    discord_api_url: str | None = Field(default=None, description="Discord REST base including version.")
    discord_gateway_url: str | None = Field(default=None, description="Discord gateway ws:// or wss:// URL.")
    discord_guild_ids: str = Field(default="", description="Comma-separated guild ids to sync commands to.")
    discord_shard_count: int | None = Field(default=None, ge=1, description="Total shard count.")
    discord_shard_ids: str = Field(default="", description="Comma-separated shard ids this process runs.")
    discord_message_content: bool = Field(
        default=False, description="Request the privileged message-content intent."
    )

    # ------------------------------------------------------------------ validation

    @field_validator(
        "flowagents_embedding_cache",
        "flowagents_secret_key",
        "openai_api_key",
        "openai_base_url",
        "slack_bot_token",
        "slack_app_token",
        "slack_signing_secret",
        "slack_client_id",
        "slack_client_secret",
        "slack_api_url",
        "slack_installation_db",
        "discord_bot_token",
        "discord_api_url",
        "discord_gateway_url",
        "discord_shard_count",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xoxb-"):
            raise ValueError("must start with 'xoxb-' (a Slack bot token)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("xapp-"):
            raise ValueError("must start with 'xapp-' (a Slack app-level token)")
        return value

    @field_validator("discord_bot_token")
    @classmethod
    def _discord_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            token = value.get_secret_value()
            if token.lower().startswith("bot ") or any(c.isspace() for c in token):
                raise ValueError(
                    "must be the bare bot token from the Developer Portal (no 'Bot ' prefix, no spaces)"
                )
        return value

    @field_validator("flowagents_store")
    @classmethod
    def _store_shape(cls, value: str) -> str:
        if not value.strip():
            return ""
        scheme = value.split(":", 1)[0].lower() if value != "memory" else "memory"
        if scheme not in STORE_SCHEMES or (scheme != "memory" and "://" not in value):
            raise ValueError(
                "expected memory, sqlite:///path, redis://host:port/db or postgresql://user@host/db"
            )
        problem = url_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("flowagents_secret_key")
    @classmethod
    def _secret_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _fernet_keys(value.get_secret_value())
        return value

    @field_validator("flowagents_rate_limit_user", "flowagents_rate_limit_tenant")
    @classmethod
    def _rate_shape(cls, value: str) -> str:
        RateSpec.parse(value)
        return value

    @field_validator("discord_guild_ids", "discord_shard_ids")
    @classmethod
    def _id_list_shape(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip() and not part.strip().isdigit():
                raise ValueError("expected comma-separated numeric ids")
        return value

    @field_validator("openai_base_url", "slack_api_url", "discord_api_url")
    @classmethod
    def _http_url_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("discord_gateway_url")
    @classmethod
    def _ws_url_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("ws://", "wss://")):
            raise ValueError("expected a ws:// or wss:// URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BotSettings:
        if (
            self.flowagents_routing in ("llm", "hybrid")
            and self.openai_api_key is None
            and self.openai_base_url is None
        ):
            raise ValueError(
                f"OPENAI_API_KEY: required by FLOWAGENTS_ROUTING={self.flowagents_routing}; set it (or "
                "OPENAI_BASE_URL for a local server that needs no key) or use FLOWAGENTS_ROUTING=trigger"
            )
        if bool(self.slack_client_id) != bool(self.slack_client_secret):
            raise ValueError("SLACK_CLIENT_ID and SLACK_CLIENT_SECRET: set both for the OAuth install flow")
        if self.slack_enabled and self.slack_app_token is None and self.slack_signing_secret is None:
            raise ValueError(
                "SLACK_APP_TOKEN or SLACK_SIGNING_SECRET: Slack needs one (Socket Mode or HTTP events)"
            )
        for partner, value in (
            ("SLACK_APP_TOKEN", self.slack_app_token),
            ("SLACK_SIGNING_SECRET", self.slack_signing_secret),
        ):
            if value is not None and not self.slack_enabled:  # else the bot would quietly chat in the console
                raise ValueError(
                    f"SLACK_BOT_TOKEN: required with {partner} (or set SLACK_CLIENT_ID for OAuth)"
                )
        if self.slack_client_id and self.flowagents_secret_key is None:
            raise ValueError(
                "FLOWAGENTS_SECRET_KEY: required with SLACK_CLIENT_ID to encrypt installation tokens; "
                'generate one with `python -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"`'
            )
        return self

    # ------------------------------------------------------------------ derived values

    @property
    def agent_modules(self) -> list[str]:
        """The agent modules to import."""
        return [m.strip() for m in self.flowagents_agents.split(",") if m.strip()]

    @property
    def slack_enabled(self) -> bool:
        """True when a Slack bot token or OAuth client is configured."""
        return self.slack_bot_token is not None or self.slack_client_id is not None

    @property
    def discord_enabled(self) -> bool:
        """True when a Discord bot token is configured."""
        return self.discord_bot_token is not None

    @property
    def platform_enabled(self) -> bool:
        """True when Slack or Discord is configured."""
        return self.slack_enabled or self.discord_enabled

    @property
    def user_rate(self) -> RateSpec | None:
        """The per-user rate limit, or None when off."""
        return RateSpec.parse(self.flowagents_rate_limit_user)

    @property
    def tenant_rate(self) -> RateSpec | None:
        """The per-tenant rate limit, or None when off."""
        return RateSpec.parse(self.flowagents_rate_limit_tenant)

    @property
    def secret_keys(self) -> list[bytes]:
        """The Fernet keys (empty when FLOWAGENTS_SECRET_KEY is unset)."""
        if self.flowagents_secret_key is None:
            return []
        return _fernet_keys(self.flowagents_secret_key.get_secret_value())

    def secret_values(self) -> list[str]:
        """Every configured secret, for log redaction."""
        out: list[str] = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out.extend(part for part in value.get_secret_value().split(",") if len(part.strip()) >= 6)
        return out


def describe_error(exc: ValidationError) -> str:
    """One line naming the variable and what it expects; the offending value is never included."""
    first = exc.errors(include_input=False, include_url=False)[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["loc"]:
        name = str(first["loc"][0]).upper()
        return f"configuration error: {name}: {message}"
    return f"configuration error: {message}"


def _type_name(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("pydantic.types.", "")
    text = (
        re.sub(r"<class '([\w.]+)'>", r"\1", text).replace("SecretStr", "secret").replace("NoneType", "None")
    )
    text = text.replace("Literal[", "one of [").replace("'", "")
    return text.replace(" | None", "").replace("|", "or")


def settings_table() -> str:
    """The Markdown table of every setting (rendered into docs/operations.md)."""
    rows = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in BotSettings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else ("(empty)" if default == "" else f"`{default}`")
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{name.upper()}` | {_type_name(field.annotation)} | {shown} | {description} |")
    return "\n".join(rows) + "\n"
