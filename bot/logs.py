"""Structured logging: JSON lines (or text on a terminal) with tokens and secrets masked everywhere.

stdlib logging only. `setup_logging(settings)` installs one stderr handler with a `RedactionFilter`
and a `JsonFormatter`/`TextFormatter`; both formatters redact their final output again, so a secret
inside an exception message or traceback is masked too.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from bot.settings import BotSettings

MASK = "[REDACTED]"

TOKEN_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\bxox[abposre]-[A-Za-z0-9-]+"),  # Slack bot/user/refresh/config tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]+"),  # Slack app-level tokens
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),  # OpenAI-style keys (sk-, sk-proj-)
    re.compile(r"\b[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}"),  # Discord bot tokens
    re.compile(r"(?i)(?<=\bBot )[A-Za-z0-9_.-]{20,}"),  # Authorization: Bot <token>
    re.compile(r"(?i)(?<=\bBearer )[A-Za-z0-9_.~+/=-]{8,}"),  # Authorization: Bearer <token>
    re.compile(r"(?<=://)([^:/@\s]*):(?!\*\*\*@)[^@/\s]+(?=@)"),  # URL passwords (user:pw@, :pw@; not ***)
)
"""Shapes of secrets masked wherever they appear, configured or not."""

# attributes every LogRecord has; anything else was passed with `extra=` and goes into the JSON line
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class Redactor:
    """Masks token shapes and the configured secret values in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in TOKEN_PATTERNS:
            text = pattern.sub(_mask_match, text)
        return text

    def value(self, value: Any) -> Any:
        """Redact strings (and strings inside lists/dicts); other values pass through."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def _mask_match(match: re.Match[str]) -> str:
    if match.re.pattern.startswith("(?<=://)"):
        return f"{match.group(1)}:{MASK}"
    return MASK


class RedactionFilter(logging.Filter):
    """Renders the message with its arguments and masks secrets in it and in `extra=` fields."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string should not hide the line
            message = str(record.msg)
        record.msg = self.redactor(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self.redactor.value(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, every `extra=` field, exception text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.redactor(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """`LEVEL logger message key=value ...` for people reading a terminal."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(levelname)s %(name)s %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _STANDARD and not k.startswith("_") and v is not None
        ]
        if extras:
            first, _, rest = text.partition("\n")
            text = first + " " + " ".join(extras) + (("\n" + rest) if rest else "")
        return self.redactor(text)


def setup_logging(settings: BotSettings, stream: TextIO | None = None) -> Redactor:
    """Configure the root logger for the bot; returns the redactor (the playground uses it too)."""
    stream = stream or sys.stderr
    redactor = Redactor(settings.secret_values())
    as_json = settings.log_format == "json" or (settings.log_format == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactionFilter(redactor))
    handler.setFormatter(JsonFormatter(redactor) if as_json else TextFormatter(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in (
        "aiohttp.access",
        "slack_bolt",
        "slack_sdk",
        "discord",
        "websockets",
        "urllib3",
        "selenium",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    return redactor
