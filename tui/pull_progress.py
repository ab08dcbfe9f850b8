"""One pull as the TUI shows it, folded from the core's pull events: pure, so easy to test."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from modelrunner.core.errors import InvalidReference
from modelrunner.core.events import (
    CANCELLED_STATUS,
    PullFailed,
    PullFinished,
    PullProgressed,
    PullStarted,
)
from modelrunner.core.references import normalize
from modelrunner.tui.formatting import NOT_KNOWN, human_size

PullEvent = PullStarted | PullProgressed | PullFinished | PullFailed
"""The events a pull row is built from."""

LAYER_STATE_ORDER = ("failed", "retrying", "stalled", "downloading", "verifying", "queued")
"""A pull shows the first of these states any of its layers is in: trouble first."""


def pull_key(reference: str) -> str:
    """The key a pull is known by: its normalised reference (as typed when it does not parse)."""
    try:
        return normalize(reference)
    except InvalidReference:
        return reference


@dataclass(frozen=True, slots=True)
class PullView:
    """Everything a pull row shows, folded from the events seen so far."""

    reference: str
    """The normalised reference, e.g. "ai/gemma3:latest"."""
    layers: dict[str, PullProgressed] = field(default_factory=dict)
    """The newest event per layer digest."""
    total: int = 0
    """Bytes of every layer together (0 before the manifest is read)."""
    pulled: int = 0
    """Bytes on disk over every layer."""
    on_disk_at_start: int = 0
    """Bytes already on disk when each layer was first seen: what a resumed pull did not fetch."""
    ended: str = ""
    """"done", "failed" or "cancelled" once the pull is over, else empty."""
    message: str = ""
    """Why it failed, or a note on how it finished."""
    phase: str = "queued"
    """What the pull said before any layer moved: "queued" (waiting for a slot) or "resolving"."""

    @property
    def state(self) -> str:
        """queued, resolving, downloading, verifying, stalled, retrying, storing, done, failed or
        cancelled."""
        if self.ended:
            return self.ended
        states = {layer.state for layer in self.layers.values()}
        for state in LAYER_STATE_ORDER:
            if state in states:
                return state
        return "storing" if states else self.phase

    @property
    def speed(self) -> float:
        """Bytes per second now, over the layers downloading; 0 when stalled."""
        return sum(layer.speed for layer in self.layers.values() if layer.state == "downloading")

    @property
    def eta(self) -> float | None:
        """Seconds left at the current speed; None while nothing is flowing."""
        speed = self.speed
        if self.ended or speed <= 0 or self.total <= 0:
            return None
        return max(self.total - self.pulled, 0) / speed

    @property
    def fraction(self) -> float | None:
        """0-1 of the bytes on disk, or None before the size is known."""
        if self.ended == "done":
            return 1.0
        return min(self.pulled / self.total, 1.0) if self.total > 0 else None

    @property
    def resumed(self) -> bool:
        """Whether some bytes were already on disk (a partial download or shared layers)."""
        return self.on_disk_at_start > 0


def fold(view: PullView | None, event: PullEvent) -> PullView:
    """The view after one more event (a new view when `view` is None)."""
    if view is None:
        view = PullView(pull_key(event.reference))
    match event:
        case PullStarted(state=phase):
            if view.ended:  # the same model pulled again
                return PullView(view.reference, phase=phase)
            return replace(view, phase=phase)
        case PullProgressed():
            first_sight = event.layer not in view.layers
            return replace(
                view,
                layers={**view.layers, event.layer: event},
                total=event.total or view.total,
                pulled=event.pulled,
                on_disk_at_start=view.on_disk_at_start + (event.current if first_sight else 0),
                ended="",
                message="",
            )
        case PullFinished(cached=cached):
            note = "already in the store; tagged" if cached else ""
            return replace(view, ended="done", message=note, pulled=max(view.pulled, view.total))
        case PullFailed(message=message, status=status):
            ended = "cancelled" if status == CANCELLED_STATUS else "failed"
            return replace(view, ended=ended, message=message)
    raise AssertionError(f"not a pull event: {event!r}")  # pragma: no cover


def human_rate(bytes_per_second: float) -> str:
    """A transfer speed: "12.3 MiB/s"; "0 B/s" when nothing flows."""
    if not math.isfinite(bytes_per_second) or bytes_per_second < 0:
        return NOT_KNOWN
    return f"{human_size(int(bytes_per_second))}/s"


def human_eta(seconds: float | None) -> str:
    """Time left as people say it: "45s", "2m 31s", "1h 05m", "3d 4h"; a dash when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return NOT_KNOWN
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def progress_line(view: PullView, *, quiet: bool = False) -> str:
    """The row's second line: bytes, speed and time left, or how it ended.

    Args:
        view: The pull.
        quiet: No event came for a while: say nothing flows rather than repeat an old speed.
    """
    if view.ended in ("failed", "cancelled"):
        return view.message or view.ended
    if view.ended == "done":
        size = human_size(view.total) if view.total else ""
        return " · ".join(part for part in (size, view.message or "stored") if part)
    if view.total <= 0:
        if view.state == "queued":
            return "waiting for other pulls to finish…"
        return "reading the manifest…"
    parts = [f"{human_size(view.pulled)} / {human_size(view.total)}"]
    state = view.state
    if quiet and state == "downloading":
        parts += [human_rate(0), "waiting for bytes…"]
    elif state in ("downloading", "stalled", "retrying"):
        parts.append(human_rate(view.speed))
        eta = view.eta
        parts.append(f"{human_eta(eta)} left" if eta is not None else "time left unknown")
    return " · ".join(parts)


def state_text(view: PullView) -> str:
    """The row's state word, saying when a pull picked up bytes already on disk."""
    state = view.state
    if view.resumed and not view.ended:
        return f"resumed at {human_size(view.on_disk_at_start)} · {state}"
    return state
