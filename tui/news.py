"""What the status line says about a piece of core news: pure, so it is easy to test and reuse."""

from __future__ import annotations

from dataclasses import dataclass

from modelrunner.core.events import DefaultModelProgressed, EngineBuildProgressed, EngineReady
from modelrunner.tui.formatting import short_name
from modelrunner.tui.messages import CoreNews, CoreStartFailed

NEWS_LINGER = 10.0
"""Seconds good news stays on show."""


@dataclass(frozen=True, slots=True)
class StatusNews:
    """One line for the status line."""

    text: str
    """The sentence to show."""
    percent: float | None = None
    """Progress for a bar, or None for no bar."""
    error: bool = False
    """Whether it is bad news (shown until replaced)."""
    linger: float | None = None
    """Seconds until it clears itself; None keeps it until the next news."""


def status_news(news: CoreNews) -> StatusNews | None:
    """The status line's sentence for `news`, or None when the status line has nothing to say."""
    match news:
        case CoreStartFailed(message=message):
            return StatusNews(message, error=True)
        case EngineBuildProgressed(percent=percent):
            return StatusNews(f"Building llama-server (first run only)… {percent:.0f}%", percent)
        case EngineReady(version=version, source="built"):
            return StatusNews(f"llama-server {version} is built and ready.", linger=NEWS_LINGER)
        case DefaultModelProgressed(reference=reference, message=message, done=done, error=error):
            name = short_name(reference)
            if error:
                return StatusNews(f"Could not import {name}: {error}", error=True)
            if done:
                return StatusNews(f"{name} is in the store.", linger=NEWS_LINGER)
            return StatusNews(f"Importing {name}: {message}…")
    return None
