"""The pulls under way: one row per model with a bar, bytes, honest speed, time left and state."""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import Label, ProgressBar, Static

from modelrunner.core.events import PullFailed
from modelrunner.tui.formatting import ellipsize, short_name
from modelrunner.tui.pull_progress import (
    PullEvent,
    PullView,
    fold,
    progress_line,
    pull_key,
    state_text,
)

NAME_WIDTH = 28
"""Columns for the model's name on a row's first line."""

FADE_SECONDS = 0.6
"""How long a finished row takes to fade out."""


class PullRow(Vertical):
    """One pull: name and state, a progress bar, then bytes · speed · time left."""

    DEFAULT_CSS = """
    PullRow {
        height: auto;
        margin: 0 0 1 0;
        & > .pull--head { height: 1; }
        & > .pull--head > .pull--name { width: 1fr; text-style: bold; }
        & > .pull--head > .pull--state { width: auto; color: $text-accent; }
        & > ProgressBar { width: 1fr; height: 1; }
        & > ProgressBar > Bar { width: 1fr; }
        & > .pull--line { color: $text-muted; }
        &.-stalled > .pull--head > .pull--state,
        &.-retrying > .pull--head > .pull--state { color: $text-warning; }
        &.-done > .pull--head > .pull--state { color: $text-success; }
        &.-failed > .pull--head > .pull--state,
        &.-failed > .pull--line { color: $text-error; }
        &.-cancelled > .pull--head > .pull--state { color: $text-muted; }
    }
    """

    view: reactive[PullView] = reactive[PullView](PullView(""), always_update=True, init=False)
    """The pull as folded from its events so far."""

    quiet: reactive[bool] = reactive(False, init=False)
    """Whether no event came for a while (the line then says nothing flows)."""

    @dataclass
    class Faded(Message):
        """Posted when a finished row has faded out and can go."""

        row: PullRow
        """The row that faded."""

    def __init__(self, view: PullView) -> None:
        super().__init__()
        self.set_reactive(PullRow.view, view)
        self.last_event_at = time.monotonic()
        """When the last event for this pull arrived (monotonic seconds)."""
        self.fade_timer: Timer | None = None
        """The timer that will fade the row out once the pull is over."""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="pull--head"):
            yield Label(
                ellipsize(short_name(self.view.reference), NAME_WIDTH), classes="pull--name"
            )
            yield Label("", classes="pull--state")
        yield ProgressBar(total=100, show_eta=False)
        yield Static("", classes="pull--line", markup=False)

    def on_mount(self) -> None:
        self._show(self.view)

    def watch_view(self, view: PullView) -> None:
        self.last_event_at = time.monotonic()
        self.set_reactive(PullRow.quiet, False)
        if self.is_mounted:
            self._show(view)

    def watch_quiet(self, quiet: bool) -> None:
        if self.is_mounted:
            self._show(self.view)

    def _show(self, view: PullView) -> None:
        state = view.state
        for name in ("stalled", "retrying", "done", "failed", "cancelled"):
            self.set_class(state == name, f"-{name}")
        self.query_one(".pull--state", Label).update(state_text(view))
        fraction = view.fraction
        bar = self.query_one(ProgressBar)
        # Over before any size was known (not found, refused): an empty bar would pulse on.
        bar.display = fraction is not None or not view.ended
        if fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=100, progress=round(fraction * 100, 1))
        line = progress_line(view, quiet=self.quiet)
        self.query_one(".pull--line", Static).update(line)

    def fade(self) -> None:
        """Fade out, then post PullRow.Faded."""
        self.styles.animate("opacity", 0.0, duration=FADE_SECONDS, on_complete=self._faded)

    def _faded(self) -> None:
        self.post_message(self.Faded(self))


class PullList(VerticalScroll, can_focus=False):
    """Every pull of this session, newest last; finished rows fade out, failed ones stay a while.

    Hidden while there is nothing to show. It takes no focus: pulls are started and cancelled
    from the screen's keys and the command palette.
    """

    DEFAULT_CSS = """
    PullList {
        height: auto;
        max-height: 13;
        padding: 0 1;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        background: transparent;
        &.-empty { display: none; }
        & > PullRow:last-of-type { margin: 0; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes="-empty")
        self.done_linger = 5.0
        """Seconds a finished pull stays on show before it fades."""
        self.failed_linger = 60.0
        """Seconds a failed or cancelled pull stays on show before it fades."""
        self.quiet_after = 3.0
        """Seconds without an event after which a downloading row stops showing its old speed."""
        self._rows: dict[str, PullRow] = {}

    def on_mount(self) -> None:
        self.border_title = "Pulls"
        self.set_interval(1.0, self._mark_quiet_rows)

    @property
    def views(self) -> dict[str, PullView]:
        """The pulls on show, by normalised reference."""
        return {key: row.view for key, row in self._rows.items()}

    @property
    def active(self) -> list[str]:
        """The references of the pulls not yet over."""
        return [key for key, row in self._rows.items() if not row.view.ended]

    def start(self, reference: str) -> None:
        """Show a pull the user just asked for, before the core has said anything about it."""
        key = pull_key(reference)
        row = self._rows.get(key)
        if row is None or row.view.ended:
            self._set(key, PullView(key))

    def apply(self, event: PullEvent) -> None:
        """Fold one core event into its pull's row (a new row for a new pull)."""
        key = pull_key(event.reference)
        row = self._rows.get(key)
        previous = row.view if row is not None and not row.view.ended else None
        self._set(key, fold(previous, event))

    def fail(self, reference: str, message: str) -> None:
        """Mark a pull failed when the call failed without the core publishing PullFailed."""
        key = pull_key(reference)
        row = self._rows.get(key)
        if row is None or not row.view.ended:
            self.apply(PullFailed(key, message))

    def _set(self, key: str, view: PullView) -> None:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = PullRow(view)
            self.mount(row)
        else:
            row.view = view
        if row.fade_timer is not None:
            row.fade_timer.stop()
            row.fade_timer = None
            row.styles.opacity = 1.0
        if view.ended:
            linger = self.done_linger if view.ended == "done" else self.failed_linger
            row.fade_timer = self.set_timer(linger, row.fade)
        self._show_count()

    @on(PullRow.Faded)
    async def _drop(self, message: PullRow.Faded) -> None:
        row = message.row
        if self._rows.get(pull_key(row.view.reference)) is row and row.view.ended:
            del self._rows[pull_key(row.view.reference)]
            await row.remove()
            self._show_count()

    def _show_count(self) -> None:
        self.set_class(not self._rows, "-empty")
        active = len(self.active)
        self.border_subtitle = f"{active} under way" if active else ""

    def _mark_quiet_rows(self) -> None:
        now = time.monotonic()
        for row in self._rows.values():
            quiet = row.view.state == "downloading" and now - row.last_event_at > self.quiet_after
            if quiet != row.quiet:
                row.quiet = quiet
