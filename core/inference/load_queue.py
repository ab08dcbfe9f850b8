"""LoadQueue: requests waiting for room to load a model, first come first served.

A request the scheduler tells to wait (`Wait`: the runner limit or the memory is held by busy
runners) takes a place at the back of the pool's one line. When the pool changes (a request
finishes, a runner stops or crashes, a load ends) only the first in line decides again; once it
stops waiting (it started its model, joined a load, or gave up) the next one decides in turn.
A newcomer that could start a model while others wait goes to the back, so nobody overtakes;
a big model first in line holds back smaller ones behind it until it fits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque


class Place:
    """One request's place in line."""

    __slots__ = ("turn",)

    def __init__(self) -> None:
        self.turn = asyncio.Event()
        """Set when it is this request's turn to decide again; cleared as it does."""


class LoadQueue:
    """The line of requests waiting for room to load; the pool wakes its first."""

    def __init__(self) -> None:
        self._line: deque[Place] = deque()

    def __len__(self) -> int:
        return len(self._line)

    def join(self) -> Place:
        """A place at the back of the line."""
        place = Place()
        self._line.append(place)
        return place

    def leave(self, place: Place) -> None:
        """`place` stops waiting; if it was first, the next in line decides now."""
        first = bool(self._line) and self._line[0] is place
        with contextlib.suppress(ValueError):
            self._line.remove(place)
        if first:
            self.wake_first()

    def wake_first(self) -> None:
        """Something changed: the first in line decides again."""
        if self._line:
            self._line[0].turn.set()

    def wake_all(self) -> None:
        """The pool is closing: everyone decides again (and learns it)."""
        for place in self._line:
            place.turn.set()

    async def wait_turn(self, place: Place, deadline: float) -> None:
        """Until it is `place`'s turn to decide again.

        The turn is taken (cleared) before the caller looks at the pool again, so a change
        while it decides is not lost: its next wait returns at once.

        Raises:
            TimeoutError: `deadline` (time.monotonic()) passed first.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        await asyncio.wait_for(place.turn.wait(), remaining)
        place.turn.clear()
