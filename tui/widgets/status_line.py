"""One line under the panes for what the core is doing: engine builds, the default model import."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.reactive import reactive
from textual.timer import Timer
from textual.widgets import ProgressBar, Static


class StatusLine(Horizontal):
    """Shows the core's latest news; hides itself when there is none."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        padding: 0 1;
        background: $boost;
        &.-idle { display: none; }
        & > #status-text { width: 1fr; color: $text-muted; }
        &.-error > #status-text { color: $text-error; }
        & > ProgressBar { width: 34; }
        & > ProgressBar.-hidden { display: none; }
    }
    """

    text: reactive[str] = reactive("", init=False)
    """The news; empty hides the line."""

    percent: reactive[float | None] = reactive[float | None](None, init=False)
    """Progress of the engine build (0-100), or None to hide the bar."""

    error: reactive[bool] = reactive(False, init=False)
    """Whether the news is bad."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self._clear_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="status-text", markup=False)
        yield ProgressBar(total=100, show_eta=False, classes="-hidden")

    def on_mount(self) -> None:
        self.set_class(not self.text, "-idle")

    def say(
        self,
        text: str,
        *,
        percent: float | None = None,
        error: bool = False,
        linger: float | None = None,
    ) -> None:
        """Show one piece of news (with a progress bar when `percent` is given).

        Args:
            text: The news.
            percent: Build progress for the bar, or None for no bar.
            error: Whether to show it as bad news.
            linger: Seconds until good news clears itself; None keeps it until the next news.
        """
        if self._clear_timer is not None:
            self._clear_timer.stop()
            self._clear_timer = None
        self.text = text
        self.percent = percent
        self.error = error
        if linger is not None:
            self._clear_timer = self.set_timer(linger, self.clear)

    def clear(self) -> None:
        """Hide the line until there is news again."""
        self.say("")

    def watch_text(self, text: str) -> None:
        self.query_one("#status-text", Static).update(text)
        self.set_class(not text, "-idle")

    def watch_percent(self, percent: float | None) -> None:
        bar = self.query_one(ProgressBar)
        bar.set_class(percent is None, "-hidden")
        if percent is not None:
            bar.update(progress=percent)

    def watch_error(self, error: bool) -> None:
        self.set_class(error, "-error")
