"""Where the Slack channel keeps OAuth installations: SQLite, with tokens encrypted at rest."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, TypeVar

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlite3 import SQLite3InstallationStore

from flowagents.errors import ConfigurationError

__all__ = ["EncryptedInstallationStore", "installation_store"]

_TOKEN_FIELDS = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token", "incoming_webhook_url")
_PREFIX = "fernet:"
T = TypeVar("T", Installation, Bot)


class EncryptedInstallationStore(AsyncInstallationStore):
    """Wraps an installation store so every token is Fernet-encrypted before it is stored.

    ``keys`` is a comma-separated list of Fernet keys: the first encrypts, all decrypt (key rotation).
    """

    def __init__(self, inner: AsyncInstallationStore, keys: str) -> None:
        try:
            fernets = [Fernet(k.strip().encode()) for k in keys.split(",") if k.strip()]
        except ValueError:
            raise ConfigurationError(
                "FLOWAGENTS_SECRET_KEY is not a valid Fernet key; generate one with "
                '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`'
            ) from None
        if not fernets:
            raise ConfigurationError("FLOWAGENTS_SECRET_KEY is empty; give at least one Fernet key.")
        self._fernet = MultiFernet(fernets)
        self._inner = inner

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger("adapters.slack")

    def _convert(self, item: T, encrypt: bool) -> T:
        out = copy.copy(item)
        for name in _TOKEN_FIELDS:
            value = getattr(out, name, None)
            if not value:
                continue
            if encrypt:
                setattr(out, name, _PREFIX + self._fernet.encrypt(value.encode()).decode())
            elif value.startswith(_PREFIX):
                try:
                    setattr(out, name, self._fernet.decrypt(value[len(_PREFIX) :].encode()).decode())
                except InvalidToken:
                    raise ConfigurationError(
                        "FLOWAGENTS_SECRET_KEY cannot decrypt a stored Slack installation: the key changed. "
                        "Put the old key after the new one (comma-separated) to rotate."
                    ) from None
        return out

    async def async_save(self, installation: Installation) -> None:
        await self._inner.async_save(self._convert(installation, True))

    async def async_save_bot(self, bot: Bot) -> None:
        await self._inner.async_save_bot(self._convert(bot, True))

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False
    ) -> Bot | None:
        bot = await self._inner.async_find_bot(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=is_enterprise_install
        )
        return None if bot is None else self._convert(bot, False)

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        found = await self._inner.async_find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            is_enterprise_install=is_enterprise_install,
        )
        return None if found is None else self._convert(found, False)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._inner.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None
    ) -> None:
        await self._inner.async_delete_installation(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id
        )

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> Any:
        await self._inner.async_delete_all(enterprise_id=enterprise_id, team_id=team_id)


def installation_store(path: str | Path, client_id: str, secret_key: str | None) -> AsyncInstallationStore:
    """The SQLite installation store at ``path``, encrypting tokens when ``secret_key`` is given."""
    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    store: AsyncInstallationStore = SQLite3InstallationStore(database=str(db), client_id=client_id)
    return EncryptedInstallationStore(store, secret_key) if secret_key else store
