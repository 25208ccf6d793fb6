"""`python -m bot`: run the bot (console channel when no platform token is set)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from pydantic import ValidationError

from flowagents import ConfigurationError

from bot.app import run
from bot.settings import BotSettings


def _settings_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    name = str(first["loc"][0]).upper() if first["loc"] else "settings"
    return f"configuration error: {name}: {first['msg']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the flowagents bot.")
    parser.add_argument("--console", action="store_true", help="chat in the terminal even if tokens are set")
    args = parser.parse_args(argv)
    try:
        settings = BotSettings()
    except ValidationError as exc:
        print(_settings_error(exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(run(settings, console=args.console))
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
