"""What the status line says about a piece of core news: pure, so it is easy to test and reuse."""

from __future__ import annotations

from dataclasses import dataclass

from modelrunner.core.events import (
    CANCELLED_STATUS,
    DefaultModelProgressed,
    EngineBuildProgressed,
    EngineReady,
    PreloadFailed,
    PullFailed,
    PullFinished,
    RunnerEvicted,
)
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
        case PullFinished(reference=reference, cached=cached):
            name = short_name(reference)
            said = f"{name} was already in the store; tagged." if cached else f"Pulled {name}."
            return StatusNews(said, linger=NEWS_LINGER)
        case PullFailed(reference=reference, message=message, status=status):
            if status == CANCELLED_STATUS:
                return StatusNews(f"Pull of {short_name(reference)} cancelled.", linger=NEWS_LINGER)
            return StatusNews(pull_failed_text(reference, message), error=True)
        case PreloadFailed(reference=reference, message=message):
            return StatusNews(f"Could not load {short_name(reference)}: {message}", error=True)
        case RunnerEvicted(reference=reference, reason=reason, for_model=for_model, mode=mode):
            why = (
                "idle past its keep-alive"
                if reason == "idle"
                else f"to make room for {short_name(for_model) or 'another model'}"
            )
            name = short_name(reference) + ("" if mode == "completion" else f" ({mode})")
            return StatusNews(f"Unloaded {name}: {why}.", linger=NEWS_LINGER)
    return None


def pull_failed_text(reference: str, message: str) -> str:
    """The sentence for a pull that failed."""
    return f"Could not pull {short_name(reference)}: {message}"
