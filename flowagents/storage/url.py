"""Build a store and its matching isolation from a URL such as `FLOWAGENTS_STORE`.

| URL | store | isolation |
|---|---|---|
| `memory` | `MemoryStore` | `MemoryIsolation` |
| `sqlite:///data/bot.db` (relative path), `sqlite:////var/lib/bot.db` (absolute path) | `SQLiteStore` |
  `MemoryIsolation` (one process) |
| `redis://[:password@]host:port/db[?prefix=name]`, `rediss://...` | `RedisStore` | `RedisIsolation` |
| `postgresql://user@host:port/db[?prefix=name_]` | `PostgresStore` | `PostgresIsolation` |

Unset or empty means SQLite at `<data_dir>/flowagents.sqlite3`. `?prefix=...` sets the Redis key prefix
(default `flowagents`) or the PostgreSQL table prefix (default `flowagents_`), so several bots can share
one database.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flowagents.errors import ConfigurationError
from flowagents.storage.base import ConversationStore, EventIsolation
from flowagents.storage.memory import MemoryIsolation, MemoryStore

DEFAULT_DATA_DIR = "data"
DEFAULT_SQLITE_FILE = "flowagents.sqlite3"
_PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")  # libpq's, as asyncpg


def default_sqlite_path(data_dir: str | Path | None = None) -> Path:
    """Where the default SQLite file lives: `<data_dir>/flowagents.sqlite3`."""
    return Path(data_dir if data_dir is not None else DEFAULT_DATA_DIR) / DEFAULT_SQLITE_FILE


def store_from_url(
    url: str | None = None,
    *,
    data_dir: str | Path | None = None,
    idle_ttl_seconds: float = 24 * 3600,
    finished_ttl_seconds: float = 3600,
    lease_seconds: float = 10.0,
) -> tuple[ConversationStore, EventIsolation]:
    """The store and isolation a URL names; pass both to `Orchestrator(store=..., isolation=...)`.

    `lease_seconds` is the cross-process conversation lease (Redis) - how long a crashed worker can hold
    a conversation. Nothing connects here: `Orchestrator.initialize()` opens the store.
    """
    ttl: dict[str, Any] = {"idle_ttl_seconds": idle_ttl_seconds, "finished_ttl_seconds": finished_ttl_seconds}
    raw = (url or "").strip()
    scheme = raw.split(":", 1)[0].lower() if ":" in raw else raw.lower()
    problem = url_problem(raw)
    if problem is not None:
        raise ConfigurationError(f"FLOWAGENTS_STORE: {problem}")
    if raw == "" or scheme == "sqlite":
        with _needs_extra("sqlite", "aiosqlite"):
            from flowagents.storage.sqlite import SQLiteStore

        path = _sqlite_path(raw, data_dir)
        return SQLiteStore(path, **ttl), MemoryIsolation()
    if scheme == "memory":
        return MemoryStore(**ttl), MemoryIsolation()
    if scheme in ("redis", "rediss", "unix"):
        from flowagents.storage.base import KeyBuilder

        with _needs_extra("redis", "redis"):
            from flowagents.storage.redis import RedisIsolation, RedisStore

        raw, prefix = _pop_query(raw, "prefix")
        keys = KeyBuilder(prefix) if prefix else KeyBuilder()
        return RedisStore(raw, keys=keys, **ttl), RedisIsolation(raw, keys=keys, lease_seconds=lease_seconds)
    if scheme in ("postgresql", "postgres"):
        with _needs_extra("postgres", "asyncpg"):
            from flowagents.storage.postgres import PostgresIsolation, PostgresStore

        raw, prefix = _pop_query(raw, "prefix")
        tables: dict[str, Any] = {"table_prefix": prefix} if prefix else {}
        return PostgresStore(raw, **tables, **ttl), PostgresIsolation(raw)
    raise ConfigurationError(
        f"FLOWAGENTS_STORE has an unknown scheme {scheme!r}; use memory, sqlite:///path/to/file, "
        "redis://host:port/db or postgresql://user@host:port/db."
    )


@contextlib.contextmanager
def _needs_extra(extra: str, module: str) -> Iterator[None]:
    """Turn the store's missing driver into a line saying which extra to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ConfigurationError(
            f"FLOWAGENTS_STORE: this store needs {module}: pip install 'flowagents[{extra}]' "
            "(or 'flowagents[bot]' for every store and channel)."
        ) from None


def store_from_env(
    environ: Mapping[str, str] | None = None, **options: Any
) -> tuple[ConversationStore, EventIsolation]:
    """`store_from_url` with `FLOWAGENTS_STORE` and `FLOWAGENTS_DATA_DIR` (default `./data`) from the env."""
    env = os.environ if environ is None else environ
    options.setdefault("data_dir", env.get("FLOWAGENTS_DATA_DIR") or None)
    return store_from_url(env.get("FLOWAGENTS_STORE"), **options)


def url_problem(url: str) -> str | None:
    """What is wrong with a Redis or PostgreSQL store URL's shape (port, host, options, `?prefix=`), or
    None; nothing connects. The answer names the problem, never the URL or its password."""
    raw = url.strip()
    scheme = raw.split(":", 1)[0].lower()
    if scheme not in ("redis", "rediss", "unix", "postgresql", "postgres"):
        return None
    try:
        urlsplit(raw).port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        return f"malformed host or port: use {scheme}://[user:password@]host:port/... ([::1] for IPv6)"
    raw, prefix = _pop_query(raw, "prefix")
    if scheme.startswith("postgres"):
        if prefix is not None and not re.fullmatch(r"[a-z_][a-z0-9_]*", prefix):
            return "?prefix= must be lower-case letters, digits and underscores (a PostgreSQL table prefix)"
        _, sslmode = _pop_query(raw, "sslmode")
        if sslmode is not None and sslmode not in _PG_SSLMODES:
            return f"?sslmode= must be one of {', '.join(_PG_SSLMODES)}"
        return None
    try:
        from flowagents.storage.redis import url_problem as redis_url_problem
    except ImportError:  # store_from_url says which extra to install
        return None
    return redis_url_problem(raw)


def _pop_query(url: str, name: str) -> tuple[str, str | None]:
    """Remove one of our own query parameters (e.g. `?prefix=bot1`) before the driver parses the URL."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    value = next((v for k, v in query if k == name), None)
    rest = urlencode([(k, v) for k, v in query if k != name])
    return urlunsplit(parts._replace(query=rest)), value


def _sqlite_path(raw: str, data_dir: str | Path | None) -> Path:
    if raw == "":
        return default_sqlite_path(data_dir)
    if not raw.lower().startswith("sqlite://"):
        raise ConfigurationError(
            f"SQLite URL {raw!r} is malformed; use sqlite:///relative/file.db or sqlite:////absolute/file.db."
        )
    rest = raw[len("sqlite://") :].split("?", 1)[0]
    if rest in ("", "/"):
        return default_sqlite_path(data_dir)
    if not rest.startswith("/"):
        raise ConfigurationError(
            f"SQLite URL {raw!r} has a host part; use sqlite:///relative/file.db or sqlite:////absolute/file.db."
        )
    path = rest[1:]
    if path == ":memory:":
        raise ConfigurationError("sqlite:///:memory: is not durable; use FLOWAGENTS_STORE=memory instead.")
    return Path(path)
