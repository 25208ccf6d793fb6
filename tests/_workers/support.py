"""Shared pieces of the store tests: service checks, a clean Redis database, worker processes."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from _requirements import require_service

from flowagents.storage import KeyBuilder

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
PG_URL = os.environ.get("FLOWAGENTS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
WORKER = Path(__file__).with_name("bot_worker.py")


class RedisNamespace(NamedTuple):
    """A unique key prefix in the test database: concurrent test runs never see each other's keys."""

    url: str
    """Store URL with `?prefix=...` (for `store_from_url` and worker processes)."""
    base: str
    """The plain Redis URL."""
    keys: KeyBuilder


def redis_namespace() -> RedisNamespace:
    """A fresh namespace in db 13 (fails in CI, skips locally, when Redis is missing)."""
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"fatest-{uuid.uuid4().hex[:12]}"
    return RedisNamespace(f"{REDIS_URL}?prefix={prefix}", REDIS_URL, KeyBuilder(prefix))


def drop_redis_namespace(ns: RedisNamespace) -> None:
    """Delete every key of the namespace (never FLUSHDB: other sessions may be testing at the same time)."""
    import redis

    client = redis.Redis.from_url(ns.base)
    try:
        names = list(client.scan_iter(match=ns.keys.prefix + ns.keys.separator + "*", count=1000))
        for start in range(0, len(names), 500):
            client.delete(*names[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def redis_ns() -> Iterator[RedisNamespace]:
    """A Redis namespace for one test, deleted afterwards."""
    ns = redis_namespace()
    yield ns
    drop_redis_namespace(ns)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowLink:
    """A TCP proxy to the test Redis (or another server) that holds what it reads `up` (requests) or
    `down` (replies) seconds.

    The delay is the one set when a chunk is read, so a command already on its way keeps its delay after
    the attribute changes; chunks keep their order on each connection.
    """

    def __init__(self, host: str = REDIS_HOST, port: int = REDIS_PORT) -> None:
        self.up = 0.0
        self.down = 0.0
        self.target = (host, port)
        self.port = 0
        """The proxy's own port, once started."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        """Listen on a free port; returns the Redis URL (test database) through the proxy."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{self.port}/{REDIS_DB}"

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        redis_reader, redis_writer = await asyncio.open_connection(*self.target)
        self._writers |= {client_writer, redis_writer}
        await asyncio.gather(
            self._pump(client_reader, redis_writer, "up"), self._pump(redis_reader, client_writer, "down")
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        try:
            while data := await reader.read(65536):
                delay: float = getattr(self, direction)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    async def stop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class RedisServer:
    """A private redis-server (AOF on, so data survives a stop) for tests that stop Redis."""

    def __init__(self, directory: Path) -> None:
        if shutil.which("redis-server") is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("redis-server is not installed (CI must provide it)")
            pytest.skip("redis-server is not installed")
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """`redis-cli shutdown nosave` on this private server only."""
        command = ["redis-cli", "-p", str(self.port), "shutdown", "nosave"]
        subprocess.run(command, capture_output=True, check=False)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


class Worker:
    """A bot process (tests/_workers/bot_worker.py) fed JSON lines on stdin, answering on stdout."""

    def __init__(self, store_url: str, *extra: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "--store", store_url, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self.queued: queue.Queue[dict[str, Any]] = queue.Queue()
        self.running: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        ready = self.next(timeout=20)
        assert ready.get("ready"), ready
        self.pid = ready["pid"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                item = json.loads(line)
                if "running" in item:
                    self.running.put(item)
                else:
                    (self.queued if "queued" in item else self.replies).put(item)
        self.replies.put({"eof": True})

    def send(self, **message: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 20) -> dict[str, Any]:
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            tail = self.stderr_tail()
            raise AssertionError(f"worker sent nothing for {timeout}s; stderr: {tail}") from None
        if reply.get("eof"):
            raise AssertionError(f"worker exited; stderr: {self.stderr_tail()}")
        return reply

    def ask(self, timeout: float = 20, **message: Any) -> dict[str, Any]:
        """Send one message and wait for its reply."""
        self.send(**message)
        reply = self.next(timeout)
        assert reply["id"] == message["id"], reply
        return reply

    def stderr_tail(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-2000:]

    def sigkill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
