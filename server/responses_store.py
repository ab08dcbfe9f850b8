"""The Responses API's memory: each stored response with its input, for an hour (DMR's TTL).

A response is kept with the chat conversation that led to it (its `previous_response_id` chain's
messages, its own input, its own output), so a later request continuing from it sends the whole
conversation again. The lists share their message dicts, so a long chain costs a pointer per
message per response, not a copy. Pure: no I/O, no web framework.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TTL_SECONDS = 3600.0
"""How long a response is kept after it was stored (DMR: 1 h)."""

MAX_ENTRIES = 1000
"""Responses kept at most; the oldest go first beyond it."""


@dataclass(frozen=True)
class StoredResponse:
    """One response as the API answered it, and what it needs to be continued."""

    response: dict[str, Any]
    """The Response object (status, output, usage, …)."""
    input_items: list[dict[str, Any]]
    """Its own input, as Responses items with IDs (what GET …/input_items lists)."""
    conversation: list[dict[str, Any]]
    """Chat messages of the whole chain: earlier turns, its input and its output (no
    instructions: OpenAI does not carry them over to the next response)."""


class ResponseStore:
    """Responses by ID, each for `ttl` seconds, at most `max_entries` of them."""

    def __init__(
        self,
        ttl: float = TTL_SECONDS,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, StoredResponse]] = OrderedDict()

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def put(self, stored: StoredResponse) -> None:
        """Keep `stored` under its response's ID (replacing an earlier one of that ID)."""
        response_id = str(stored.response["id"])
        self._entries.pop(response_id, None)
        self._entries[response_id] = (self._clock() + self._ttl, stored)
        self._expire()
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse | None:
        """The response stored under `response_id`, unless it expired or was deleted."""
        self._expire()
        entry = self._entries.get(response_id)
        return entry[1] if entry else None

    def delete(self, response_id: str) -> bool:
        """Forget a response; False when there was none of that ID."""
        self._expire()
        return self._entries.pop(response_id, None) is not None

    def _expire(self) -> None:
        # Every entry lives as long, so the oldest stored (the first) expires first.
        now = self._clock()
        while self._entries:
            expires, _ = next(iter(self._entries.values()))
            if expires > now:
                return
            self._entries.popitem(last=False)
