"""Every setting the bot honours, read from the environment and `.env` (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class BotSettings(BaseSettings):
    """The bot's configuration. Each field is the upper-case environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    flowagents_agents: str = Field("agents", description="Comma-separated agent modules to import.")
    flowagents_routing: Literal["trigger", "llm", "hybrid", "semantic"] = Field(
        "trigger", description="Routing strategy."
    )
    flowagents_store: str = Field(
        "sqlite:///data/flowagents.db", description="memory, sqlite:///path, redis://host:port/db or postgresql://..."
    )
    flowagents_timeout: float = Field(30.0, gt=0, description="Default agent timeout in seconds.")
    flowagents_idle_ttl: float = Field(86400.0, gt=0, description="Seconds before a waiting conversation expires.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    port: int = Field(3000, ge=1, le=65535, description="HTTP port (Slack events, /healthz, /metrics).")

    openai_api_key: SecretStr | None = Field(None, description="OpenAI (or compatible) API key.")
    openai_base_url: str | None = Field(None, description="OpenAI-compatible base URL.")
    openai_model: str = Field("gpt-4o-mini", description="Model name.")

    slack_bot_token: SecretStr | None = Field(None, description="xoxb- bot token (single workspace).")
    slack_app_token: SecretStr | None = Field(None, description="xapp- token: enables Socket Mode.")
    slack_signing_secret: SecretStr | None = Field(None, description="Signing secret for HTTP mode.")
    slack_client_id: str | None = Field(None, description="OAuth client id (multi-workspace).")
    slack_client_secret: SecretStr | None = Field(None, description="OAuth client secret.")
    slack_api_url: str | None = Field(None, description="Slack Web API base URL (GovSlack, proxies).")

    discord_bot_token: SecretStr | None = Field(None, description="Discord bot token.")
    discord_api_url: str | None = Field(None, description="Discord REST base including version.")
    discord_gateway_url: str | None = Field(None, description="Discord gateway ws:// or wss:// URL.")
    discord_guild_ids: str = Field("", description="Comma-separated guild ids to sync commands to.")
    discord_shard_count: int | None = Field(None, ge=1, description="Total shard count.")
    discord_shard_ids: str = Field("", description="Comma-separated shard ids this process runs.")
    discord_message_content: bool = Field(False, description="Request the privileged message-content intent.")

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

    @property
    def agent_modules(self) -> list[str]:
        return [m.strip() for m in self.flowagents_agents.split(",") if m.strip()]

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None or self.slack_client_id is not None

    @property
    def discord_enabled(self) -> bool:
        return self.discord_bot_token is not None
