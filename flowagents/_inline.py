"""Run a coroutine in the caller's task and hand out what it emits each time it waits.

`process_stream` must yield a turn's events as they happen. Running the turn in a task of its own and
passing the events through a queue costs event-loop round trips per turn (more than the turn itself
when nothing waits on the network). Here the async generator steps the turn's coroutine by hand:
whenever the turn waits for something (a reply from the network, a lock), the events it emitted so far
are yielded first, then the wait is handed on to the caller's task. The turn runs in the caller's
task, so `asyncio.current_task()`, timeouts and cancellation behave as under `await`, and nothing runs
behind the caller's back; it runs in its own copy of the caller's context, taken when the first event
is asked for, as a task of its own would (what it sets in context variables stays in the turn).
"""

from __future__ import annotations

import asyncio
import contextvars
import types
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


@types.coroutine
def _wait(pending: Any) -> Generator[Any, Any, Any]:
    """Hand what the coroutine yielded (a future, or None for a bare yield) to the running task."""
    return (yield pending)


async def run_inline(
    start: Callable[[Callable[[T], None]], Coroutine[Any, Any, object]],
    pause: Callable[[], None] = lambda: None,
    resume: Callable[[], None] = lambda: None,
) -> AsyncGenerator[T, None]:
    """Run the coroutine `start(emit)` to its end, yielding what it emits before each of its waits.

    What the coroutine raises is raised here. Closing the generator early cancels the coroutine and waits
    for it to clean up, as cancelling a task running it would. `pause` and `resume` are called when the
    caller gets events while the coroutine has not finished, and when it asks for more.
    """
    emitted: list[T] = []
    coro = start(emitted.append)
    step = contextvars.copy_context().run
    failure: BaseException | None = None
    pending: Any = None
    finished = False
    try:
        while True:
            try:
                pending = step(coro.send, None) if failure is None else step(coro.throw, failure)
            except StopIteration:
                finished = True
                break
            except BaseException:
                finished = True
                raise
            failure = None
            if emitted:
                batch = emitted.copy()
                emitted.clear()
                pause()
                for item in batch:
                    yield item
                resume()
            try:
                await _wait(pending)
            except BaseException as exc:  # a cancellation (or timeout) reaches the coroutine where it waits
                failure = exc
        for item in emitted:
            yield item
    finally:
        if not finished:  # the caller stopped listening mid-turn
            await _cancel(coro, pending, step)


async def _cancel(coro: Coroutine[Any, Any, object], pending: Any, step: Callable[..., Any]) -> None:
    """Cancel a coroutine suspended on `pending` and run it until it has cleaned up."""
    if isinstance(pending, asyncio.Future):
        pending.cancel()
    failure: BaseException | None = asyncio.CancelledError()
    while True:
        try:
            pending = step(coro.send, None) if failure is None else step(coro.throw, failure)
        except (StopIteration, Exception, asyncio.CancelledError):
            return
        try:
            await _wait(pending)
            failure = None
        except BaseException as exc:
            failure = exc
