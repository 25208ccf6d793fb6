"""The bot's one aiohttp web server: `/healthz`, `/metrics`, and whatever the channels and the playground
attach (Slack HTTP events and OAuth routes, the playground page)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from bot.metrics import BotMetrics

log = logging.getLogger("bot.http")


def make_app(metrics: BotMetrics | None, health: Callable[[], dict[str, object]]) -> web.Application:
    """An application serving `GET /healthz` (200 while serving, 503 while stopping) and `GET /metrics`."""
    app = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        state = health()
        status = 200 if state.get("status") == "ok" else 503
        return web.json_response(state, status=status)

    async def metrics_page(request: web.Request) -> web.Response:
        if metrics is None:
            return web.Response(
                status=404, text="metrics need prometheus-client: pip install 'flowagents[metrics]'\n"
            )
        body = metrics.render()
        response = web.Response(body=body)
        response.headers["Content-Type"] = metrics.content_type
        return response

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


class HttpServer:
    """Runs an application on host:port; port 0 picks a free one (see `port` after `start`)."""

    def __init__(self, app: web.Application, host: str, port: int, *, grace: float = 5.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.grace = grace
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve. Raises OSError when the port is taken."""
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=self.grace
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        if self._runner.addresses:
            self.port = int(self._runner.addresses[0][1])
        log.info("serving http://%s:%s (/healthz, /metrics)", self.host, self.port)

    @property
    def url(self) -> str:
        """The base URL (localhost form when bound to every interface)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Stop accepting connections, let open requests finish up to `timeout` (default `grace`) seconds,
        then cancel them and close."""
        if self._runner is not None:
            if timeout is not None:
                self._runner._shutdown_timeout = timeout  # aiohttp reads it in cleanup(); no public setter
            await self._runner.cleanup()
            self._runner = None
