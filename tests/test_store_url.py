"""`store_from_url` / `store_from_env`: FLOWAGENTS_STORE picks the backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from flowagents.errors import ConfigurationError
from flowagents.storage import MemoryIsolation, MemoryStore
from flowagents.storage.postgres import PostgresIsolation, PostgresStore
from flowagents.storage.redis import RedisIsolation, RedisStore, redact
from flowagents.storage.sqlite import SQLiteStore
from flowagents.storage.url import store_from_env, store_from_url


def test_memory() -> None:
    store, isolation = store_from_url("memory", idle_ttl_seconds=5)
    assert isinstance(store, MemoryStore) and isinstance(isolation, MemoryIsolation)
    assert store.idle_ttl_seconds == 5


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/bot.db", Path("data/bot.db")),
        ("sqlite:////var/lib/bot.db", Path("/var/lib/bot.db")),
        ("sqlite:///bot.db?x=1", Path("bot.db")),
    ],
)
def test_sqlite_paths_follow_the_sqlalchemy_convention(url: str, path: Path) -> None:
    store, isolation = store_from_url(url)
    assert isinstance(store, SQLiteStore) and isinstance(isolation, MemoryIsolation)
    assert store.path == path


def test_unset_means_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    store, _ = store_from_env({"FLOWAGENTS_DATA_DIR": str(tmp_path)})
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "flowagents.sqlite3"
    store, _ = store_from_env({})
    assert isinstance(store, SQLiteStore) and store.path == Path("data/flowagents.sqlite3")


def test_a_prefix_lets_several_bots_share_one_database() -> None:
    store, isolation = store_from_url("redis://127.0.0.1:6379/3?prefix=bot2&socket_timeout=1")
    assert isinstance(store, RedisStore) and isinstance(isolation, RedisIsolation)
    assert store.keys.prefix == isolation.keys.prefix == "bot2"
    assert store.url == isolation.url == "redis://127.0.0.1:6379/3?socket_timeout=1"
    store, _ = store_from_url("postgresql://bot@db/bot?prefix=bot2_")
    assert (
        isinstance(store, PostgresStore)
        and store.prefix == "bot2_"
        and store.dsn == "postgresql://bot@db/bot"
    )


def test_redis_and_postgres() -> None:
    store, isolation = store_from_url("redis://127.0.0.1:6379/3", lease_seconds=4)
    assert isinstance(store, RedisStore) and isinstance(isolation, RedisIsolation)
    assert isolation.lease_seconds == 4
    store, isolation = store_from_env({"FLOWAGENTS_STORE": "postgresql://bot@db:5432/bot"})
    assert isinstance(store, PostgresStore) and isinstance(isolation, PostgresIsolation)


@pytest.mark.parametrize("url", ["mysql://x", "sqlite://host/file.db", "sqlite:///:memory:"])
def test_bad_urls_say_what_to_use(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite:///|memory"):
        store_from_url(url)


def test_credentials_never_appear_in_messages() -> None:
    assert redact("redis://:s3cret@cache:6380/2") == "redis://cache:6380/2"
    assert "s3cret" not in redact("postgresql://bot:s3cret@db/bot")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cret@cache:notaport/0", "malformed host or port"),
        ("postgresql://bot:s3cret@db:abc/bot", "malformed host or port"),
        ("redis://:s3cret@[::1/0", "malformed host or port"),
        ("redis://:s3cret@cache:6379/0?prefix=bot1&socket_timeout=abc", "socket_timeout"),
        ("redis://:s3cret@cache:6379/0?ssl_cert_reqs=bogus", "?ssl_cert_reqs= (TLS options need rediss://)"),
        ("rediss://:s3cret@cache:6379/0?ssl_cert_reqs=bogus", "invalid Redis URL option"),
        ("postgresql://bot:s3cret@db/bot?prefix=Bad-Prefix", "?prefix= must be lower-case"),
        ("postgresql://bot:s3cret@db/bot?sslmode=bogus", "?sslmode= must be one of disable, allow"),
    ],
)
def test_malformed_store_urls_are_configuration_errors_naming_the_variable(url: str, expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        store_from_url(url)
    message = str(caught.value)
    assert message.startswith("FLOWAGENTS_STORE: ") and expected in message
    assert "s3cret" not in message


def test_stores_refuse_malformed_urls_at_construction_and_redact_them_safely() -> None:
    with pytest.raises(ConfigurationError, match="socket_timeout") as caught:
        RedisStore("redis://:s3cret@cache:6379/0?socket_timeout=abc")
    assert "s3cret" not in str(caught.value)
    assert redact("redis://:s3cret@cache:notaport/0") == "redis://<malformed URL>"
    assert redact("postgresql://bot:s3cret@[::1/bot") == "postgresql://<malformed URL>"


@pytest.mark.parametrize("ttl", [float("inf"), float("nan"), 1e300])
def test_every_store_refuses_an_expiry_it_cannot_keep(ttl: float, tmp_path: Path) -> None:
    for url in (
        "memory",
        f"sqlite:///{tmp_path}/ttl.db",
        "redis://127.0.0.1:6379/0",
        "postgresql://u@db/bot",
    ):
        with pytest.raises(ConfigurationError, match="idle_ttl_seconds must be a finite number"):
            store_from_url(url, idle_ttl_seconds=ttl)
    with pytest.raises(ConfigurationError, match="finished_ttl_seconds"):
        MemoryStore(finished_ttl_seconds=ttl)


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [
        ("sqlite:///state.sqlite3", "aiosqlite", "sqlite"),
        ("redis://localhost:6379/0", "redis", "redis"),
        ("postgresql://bot@localhost/bot", "asyncpg", "postgres"),
    ],
)
def test_a_store_whose_driver_is_not_installed_names_the_extra(
    url: str, driver: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, driver, None)  # as if the extra were not installed
    for store_module in ("sqlite", "redis", "postgres"):  # imported afresh, without the driver
        monkeypatch.delitem(sys.modules, f"flowagents.storage.{store_module}", raising=False)
    with pytest.raises(ConfigurationError, match=rf"pip install 'flowagents\[{extra}\]'"):
        store_from_url(url)
