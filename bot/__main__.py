"""`python -m bot`: run the bot (console channel when no platform token is set).

`--check` validates the configuration and reachable connections, then exits; `--playground` serves the
local web playground on 127.0.0.1. A wrong setting stops the bot with one line naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading

from pydantic import ValidationError

from bot.settings import BotSettings, describe_error
from flowagents import ConfigurationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description="Run the flowagents bot.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--console", action="store_true", help="chat in the terminal even if tokens are set")
    group.add_argument("--playground", action="store_true", help="serve the web playground on 127.0.0.1:PORT")
    group.add_argument("--check", action="store_true", help="validate settings and connections, then exit")
    return parser


async def _main(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.app import Mode, StartupError, run
    from bot.check import check
    from bot.logs import setup_logging
    from bot.tracing import setup_tracing

    redact = setup_logging(settings)
    try:
        if args.check:
            return await check(settings, sys.stdout)
        flush_traces = setup_tracing(settings)
        try:
            mode: Mode = "playground" if args.playground else "console" if args.console else "auto"
            return await run(settings, mode=mode)
        finally:
            if flush_traces is not None:
                flush_traces()
    except StartupError as exc:
        print(
            redact(f"error: {exc}" if exc.exit_code != 2 else f"configuration error: {exc}"), file=sys.stderr
        )
        return exc.exit_code
    except ConfigurationError as exc:
        print(redact(f"configuration error: {exc}"), file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and settings, run, and return the exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = BotSettings()
    except ValidationError as exc:
        print(describe_error(exc), file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:  # pydantic-settings reads .env as UTF-8
        print(
            f"configuration error: .env: not UTF-8 text (byte {exc.start + 1} cannot be decoded); "
            "save the file as UTF-8",
            file=sys.stderr,
        )
        return 2
    loop = asyncio.new_event_loop()
    try:
        code = loop.run_until_complete(_main(settings, args))
    except KeyboardInterrupt:
        code = 0
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    return code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        os._exit(exit_code)  # a console read is still blocked on stdin after a signal; everything is closed
    sys.exit(exit_code)
