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
    """Cancels registered tasks when their deadline passes.

    A task runs one turn at a time, but a turn abandoned mid-stream may clean up later: each deadline
    belongs to the turn (`owner`) that armed it, and only that turn can disarm it.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], tuple[float, object]] = {}  # task -> (deadline, owner)
        self._paused: dict[asyncio.Task[object], tuple[float, object]] = {}  # task -> (seconds left, owner)
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the timer runs on

    def arm(self, task: asyncio.Task[object], seconds: float, owner: object) -> None:
        """Cancel `task` if `owner` has not disarmed it `seconds` from now."""
        self._due[task] = (monotonic() + seconds, owner)  # the event loop's clock is time.monotonic too
        loop = task.get_loop()
        if self._timer is None or self._loop is not loop:  # an orchestrator may outlive its first loop
            if self._timer is not None:
                self._timer.cancel()
            self._loop = loop
            self._timer = loop.call_later(min(TICK, seconds), self._tick, loop)

    def disarm(self, task: asyncio.Task[object], owner: object) -> None:
        """`owner`'s turn is over (or handled its timeout)."""
        due = self._due.get(task)
        if due is not None and due[1] is owner:
            del self._due[task]
        if self._paused:  # only streamed turns pause
            paused = self._paused.get(task)
            if paused is not None and paused[1] is owner:
                del self._paused[task]

    def pause(self) -> None:
        """The current task leaves its turn for a while (to handle the events it streamed)."""
        task = asyncio.current_task()
        due = self._due.pop(task, None) if task is not None else None
        if due is not None and task is not None:
            self._paused[task] = (due[0] - monotonic(), due[1])

    def resume(self) -> None:
        """The current task is back in its turn: its deadline runs on from where it paused."""
        task = asyncio.current_task()
        left = self._paused.pop(task, None) if task is not None else None
        if left is not None and task is not None:
            self.arm(task, *left)

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
        for task, (due, _) in list(self._due.items()):
            if task.get_loop() is not loop:  # left over from an earlier loop: this timer cannot serve it
                del self._due[task]
            elif due <= now:
                del self._due[task]
                if not task.done():
                    self._expired.add(task)
                    task.cancel()
        if self._due:
            self._timer = loop.call_later(TICK, self._tick, loop)
