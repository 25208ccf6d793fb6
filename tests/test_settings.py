"""Settings: every variable declared and documented; wrong values stop the bot with one clear line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import BotSettings, describe_error, redact_url, settings_table

ROOT = Path(__file__).resolve().parents[1]
FERNET_KEY = "x4mUv0d3vh2p5h3bHk1tC2ZsH8WqJmS9y6f0aQe1XgI="


def clean_env(**env: str) -> dict[str, str]:
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "DISCORD_", "OPENAI_", "FLOWAGENTS_"))
    }
    out.pop("PORT", None)
    out.update({"FLOWAGENTS_STORE": "memory", **env})
    return out


def run_bot(*args: str, stdin: str = "", cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean_env(**env), "PYTHONPATH": str(ROOT)},
        timeout=60,
    )


def settings(**values: str) -> BotSettings:
    return BotSettings(_env_file=None, **values)  # type: ignore[call-arg]


def error_line(**values: str) -> str:
    with pytest.raises(ValidationError) as caught:
        settings(**values)
    return describe_error(caught.value)


# ------------------------------------------------------------------------------------ documented


def env_names() -> set[str]:
    return {name.upper() for name in BotSettings.model_fields}


def test_every_setting_is_in_env_example() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))
    assert listed == env_names()


def test_env_example_as_dotenv_is_valid(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text((ROOT / ".env.example").read_text())
    loaded = BotSettings(_env_file=dotenv)  # type: ignore[call-arg]
    assert (
        loaded.flowagents_agents == "agents"
        and loaded.slack_bot_token is None
        and not loaded.platform_enabled
    )


@pytest.mark.parametrize("doc", ["docs/operations.md", "README.md"])
def test_settings_tables_in_the_docs_match_the_model(doc: str) -> None:
    path = ROOT / doc
    text = path.read_text() if path.exists() else ""
    blocks = re.findall(r"<!-- settings-table:start -->\n(.*?)<!-- settings-table:end -->", text, flags=re.S)
    if doc == "docs/operations.md":
        assert blocks, "docs/operations.md lost its settings-table markers"
    for block in blocks:  # README.md: checked once the table is merged in between the same markers
        assert block == settings_table(), f"regenerate the table in {doc} with bot.settings.settings_table()"


def test_dotenv_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("FLOWAGENTS_TIMEOUT=12\nOPENAI_MODEL=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_MODEL", "from-env")
    monkeypatch.delenv("FLOWAGENTS_TIMEOUT", raising=False)
    loaded = BotSettings()
    assert loaded.flowagents_timeout == 12 and loaded.openai_model == "from-env"


# ------------------------------------------------------------------------------------ wrong values


@pytest.mark.parametrize(
    ("values", "variable", "expected"),
    [
        ({"slack_bot_token": "xoxp-user-secret1", "slack_app_token": "xapp-1"}, "SLACK_BOT_TOKEN", "xoxb-"),
        ({"slack_bot_token": "xoxb-1", "slack_app_token": "xoxb-secret2"}, "SLACK_APP_TOKEN", "xapp-"),
        ({"slack_bot_token": "xoxb-secret3"}, "SLACK_APP_TOKEN or SLACK_SIGNING_SECRET", "Socket Mode"),
        ({"slack_signing_secret": "secret3b"}, "SLACK_BOT_TOKEN", "required with SLACK_SIGNING_SECRET"),
        ({"flowagents_store": "mysql://u:secret4@h/db"}, "FLOWAGENTS_STORE", "redis://"),
        ({"flowagents_rate_limit_user": "lots"}, "FLOWAGENTS_RATE_LIMIT_USER", "20/60"),
        ({"flowagents_secret_key": "secret5-too-short"}, "FLOWAGENTS_SECRET_KEY", "Fernet"),
        (
            {"slack_client_id": "1.2", "slack_client_secret": "secret6", "slack_signing_secret": "s"},
            "FLOWAGENTS_SECRET_KEY",
            "SLACK_CLIENT_ID",
        ),
        ({"flowagents_routing": "llm"}, "OPENAI_API_KEY", "FLOWAGENTS_ROUTING=llm"),
        ({"discord_bot_token": "Bot secret7.abc.def"}, "DISCORD_BOT_TOKEN", "'Bot ' prefix"),
        ({"discord_gateway_url": "http://x"}, "DISCORD_GATEWAY_URL", "ws://"),
        ({"port": "70000"}, "PORT", "65535"),
        ({"flowagents_store": "redis://:secret9@cache:notaport/0"}, "FLOWAGENTS_STORE", "host or port"),
        ({"flowagents_store": "postgresql://u:secret9@db:abc/bot"}, "FLOWAGENTS_STORE", "host or port"),
        ({"flowagents_store": "redis://:secret9@[::1/0"}, "FLOWAGENTS_STORE", "[::1]"),
        ({"flowagents_store": "redis://:secret9@h/0?socket_timeout=x"}, "FLOWAGENTS_STORE", "socket_timeout"),
        ({"flowagents_store": "redis://:secret9@h/0?ssl_cert_reqs=bogus"}, "FLOWAGENTS_STORE", "rediss://"),
        ({"flowagents_store": "postgresql://u:secret9@db/b?prefix=X-Y"}, "FLOWAGENTS_STORE", "?prefix="),
        ({"flowagents_idle_ttl": "inf"}, "FLOWAGENTS_IDLE_TTL", "finite"),
        ({"flowagents_idle_ttl": "1e300"}, "FLOWAGENTS_IDLE_TTL", "less than or equal to 3153600000"),
        ({"flowagents_timeout": "nan"}, "FLOWAGENTS_TIMEOUT", "finite"),
        ({"flowagents_timeout": "1e300"}, "FLOWAGENTS_TIMEOUT", "less than or equal to 86400"),
        ({"flowagents_shutdown_grace": "inf"}, "FLOWAGENTS_SHUTDOWN_GRACE", "finite"),
    ],
)
def test_wrong_value_gives_one_line_naming_the_variable(
    values: dict[str, str], variable: str, expected: str
) -> None:
    line = error_line(**values)
    assert "\n" not in line
    assert line.startswith(f"configuration error: {variable}")
    assert expected in line
    for value in values.values():
        for secret in re.findall(r"secret\d", value):  # the secret part (a token, a URL's password)
            assert secret not in line


def test_blank_values_mean_unset() -> None:
    loaded = settings(slack_bot_token="", discord_shard_count="", openai_base_url="  ")
    assert (
        loaded.slack_bot_token is None
        and loaded.discord_shard_count is None
        and loaded.openai_base_url is None
    )


def test_rates_parse_with_units_and_off() -> None:
    loaded = settings(flowagents_rate_limit_user="100/1h", flowagents_rate_limit_tenant="off")
    assert loaded.user_rate is not None and (loaded.user_rate.count, loaded.user_rate.per_seconds) == (
        100,
        3600,
    )
    assert loaded.tenant_rate is None


def test_secret_values_cover_every_configured_secret() -> None:
    loaded = settings(
        slack_bot_token="xoxb-abcdef",
        slack_app_token="xapp-ghijkl",
        openai_api_key="sk-mnopqr",
        flowagents_secret_key=FERNET_KEY,
    )
    assert set(loaded.secret_values()) == {"xoxb-abcdef", "xapp-ghijkl", "sk-mnopqr", FERNET_KEY}
    assert "xoxb-abcdef" not in repr(loaded)


def test_redact_url_hides_the_password_only() -> None:
    assert redact_url("redis://:pw123@cache:6380/2") == "redis://:***@cache:6380/2"
    assert redact_url("redis://:pw123@cache:notaport/2") == "<unparseable URL>"
    assert redact_url("postgresql://bot:pw123@db/bot") == "postgresql://bot:***@db/bot"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


# ------------------------------------------------------------------------------------ start-up


def test_bad_store_url_stops_the_bot_with_one_line() -> None:
    proc = run_bot(FLOWAGENTS_STORE="mongodb://u:hunter2@h/db")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("configuration error: FLOWAGENTS_STORE:")
    assert "hunter2" not in proc.stderr


def test_malformed_store_url_stops_the_bot_with_one_line_not_a_traceback() -> None:
    proc = run_bot(FLOWAGENTS_STORE="redis://:hunter2@127.0.0.1:notaport/0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "configuration error: FLOWAGENTS_STORE: malformed host or port: "
        "use redis://[user:password@]host:port/... ([::1] for IPv6)"
    ]


def test_dotenv_that_is_not_utf8_stops_the_bot_with_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"OPENAI_API_KEY=sk-\xff\xfehunter2\n")
    proc = run_bot("--check", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "configuration error: .env: not UTF-8 text (byte 19 cannot be decoded); save the file as UTF-8"
    ]
    assert "hunter2" not in proc.stderr + proc.stdout


def test_unreachable_store_stops_the_bot_without_traceback_or_password() -> None:
    proc = run_bot(FLOWAGENTS_STORE="redis://:hunter2@127.0.0.1:1/0")
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    last = proc.stderr.strip()
    assert last.startswith("error: FLOWAGENTS_STORE: cannot open redis://:***@127.0.0.1:1/0")
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr


def test_unusable_data_dir_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    proc = run_bot(FLOWAGENTS_STORE="", FLOWAGENTS_DATA_DIR=str(tmp_path / "not-a-dir"))
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"error: FLOWAGENTS_DATA_DIR: cannot open sqlite:///{tmp_path}/not-a-dir/")


def test_a_host_that_is_not_this_machine_is_named_as_flowagents_host() -> None:
    proc = run_bot(FLOWAGENTS_HOST="192.0.2.1", PORT="0", FLOWAGENTS_HTTP="1")  # TEST-NET-1: never local
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("error: FLOWAGENTS_HOST: cannot listen on 192.0.2.1:0")


def test_check_reports_each_service_and_exits_zero(tmp_path: Path) -> None:
    proc = run_bot("--check", FLOWAGENTS_STORE=f"sqlite:///{tmp_path}/check.db")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "ok      settings: valid"
    assert lines[1] == "ok      agents: BookingAgent, LeaveAgent (left out without an LLM: AssistantAgent)"
    assert lines[2].startswith("ok      store: sqlite:///") and lines[2].endswith("reachable")


def test_check_fails_with_one_line_per_broken_service() -> None:
    proc = run_bot(
        "--check", FLOWAGENTS_STORE="redis://:hunter2@127.0.0.1:1/0", FLOWAGENTS_AGENTS="agents,nope_mod"
    )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[1].startswith("FAILED  agents: cannot import agent module 'nope_mod'")
    assert lines[2].startswith("FAILED  store: cannot open redis://:***@127.0.0.1:1/0")
    assert "hunter2" not in proc.stdout + proc.stderr


async def test_check_talks_to_slack_with_the_real_client() -> None:
    from flowagents.testing.slack import FakeSlack

    async with FakeSlack() as fake:
        ws = fake.add_workspace("T0CHECK")
        env = {
            "SLACK_BOT_TOKEN": ws.bot_token,
            "SLACK_APP_TOKEN": fake.app_token,
            "SLACK_API_URL": fake.api_url,
            "PORT": "0",
        }
        ok = await _run_async("--check", **env)
        bad = await _run_async("--check", **{**env, "SLACK_BOT_TOKEN": "xoxb-wrong-secret9"})
    assert ok.returncode == 0, ok.stdout
    assert "ok      slack: workspace" in ok.stdout and "(T0CHECK)" in ok.stdout and "Socket Mode" in ok.stdout
    assert bad.returncode == 1
    assert "FAILED  slack: auth.test refused the bot token (invalid_auth)" in bad.stdout
    assert "wrong-secret9" not in bad.stdout + bad.stderr


async def _run_async(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=ROOT,
        env={**clean_env(**env), "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return subprocess.CompletedProcess(args, proc.returncode or 0, out.decode(), err.decode())


async def test_check_talks_to_discord() -> None:
    from flowagents.testing.discord import FakeDiscord

    async with FakeDiscord() as fake:
        env = {"DISCORD_BOT_TOKEN": fake.token, "DISCORD_API_URL": fake.api_url, "PORT": "0"}
        ok = await _run_async("--check", **env)
        bad = await _run_async("--check", **{**env, "DISCORD_BOT_TOKEN": "wrong-secret8"})
    assert ok.returncode == 0, ok.stdout
    assert "ok      discord: bot user" in ok.stdout
    assert bad.returncode == 1
    assert "FAILED  discord: the API refused the bot token (401)" in bad.stdout
    assert "wrong-secret8" not in bad.stdout + bad.stderr


async def test_a_local_openai_server_without_a_key_gives_the_bot_its_llm() -> None:
    """OPENAI_BASE_URL alone (Ollama, vLLM: no key) is an LLM, as `--check` and the assistant's docs say."""
    from bot.app import build_orchestrator
    from flowagents.testing.openai import FakeOpenAI, Reply

    async with FakeOpenAI(api_key=None) as fake:
        loaded = settings(
            openai_base_url=fake.base_url, flowagents_routing="hybrid", flowagents_store="memory"
        )
        orchestrator = build_orchestrator(loaded)
        await orchestrator.initialize()
        try:
            assert orchestrator.llm_client is not None
            assert "AssistantAgent" in [agent.name for agent in orchestrator.agent_catalog()]
            fake.script(Reply(chunks=["Canberra."]))
            result = await orchestrator.process("what is the capital of australia", user_id="u")
            assert (result.agent_name, result.raw_message) == ("AssistantAgent", "Canberra.")
        finally:
            await orchestrator.close()
