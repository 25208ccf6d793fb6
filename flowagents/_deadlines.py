"""Per-turn deadlines enforced by one shared timer instead of one timer per turn.

`asyncio.timeout` schedules a timer handle for every turn; at tens of thousands of turns a second that
is a measurable share of the orchestrator's cost. Here one periodic tick cancels the tasks whose
deadline has passed (resolution `TICK` seconds) and the turn turns that cancellation into a timeout.
A streamed turn runs in its caller's task: while the caller holds the turn's events, its deadline is
paused, so the cancellation never lands in the caller's own code and the caller's time is not billed.
"""

from __future__ import annotations

import asyncio
from time import monotonic

TICK = 0.02


class Deadlines:
    """Cancels registered tasks when their deadline passes."""

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], float] = {}
        self._paused: dict[asyncio.Task[object], float] = {}  # task -> seconds it had left
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the timer runs on

    def arm(self, task: asyncio.Task[object], seconds: float) -> None:
        """Cancel `task` if it is still armed `seconds` from now."""
        self._due[task] = monotonic() + seconds  # the event loop's clock is time.monotonic too
        loop = task.get_loop()
        if self._timer is None or self._loop is not loop:  # an orchestrator may outlive its first loop
            if self._timer is not None:
                self._timer.cancel()
            self._loop = loop
            self._timer = loop.call_later(min(TICK, seconds), self._tick, loop)

    def disarm(self, task: asyncio.Task[object]) -> None:
        """The turn is over (or handled its timeout)."""
        self._due.pop(task, None)
        self._paused.pop(task, None)

    def pause(self) -> None:
        """The current task leaves its turn for a while (to handle the events it streamed)."""
        task = asyncio.current_task()
        due = self._due.pop(task, None) if task is not None else None
        if due is not None and task is not None:
            self._paused[task] = due - monotonic()

    def resume(self) -> None:
        """The current task is back in its turn: its deadline runs on from where it paused."""
        task = asyncio.current_task()
        left = self._paused.pop(task, None) if task is not None else None
        if left is not None and task is not None:
            self.arm(task, left)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """True (once) when this task was cancelled because its deadline passed; the cancel is absorbed."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        now = monotonic()
        for task, due in list(self._due.items()):
            if task.get_loop() is not loop:  # left over from an earlier loop: this timer cannot serve it
                del self._due[task]
            elif due <= now:
                del self._due[task]
                if not task.done():
                    self._expired.add(task)
                    task.cancel()
        if self._due:
            self._timer = loop.call_later(TICK, self._tick, loop)
