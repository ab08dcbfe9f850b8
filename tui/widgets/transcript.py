"""The chat transcript: the user's turns, the model's streamed replies, and short notices."""

from __future__ import annotations

from typing import TypeVar

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownStream


class UserTurn(Vertical):
    """One message the user sent."""

    DEFAULT_CSS = """
    UserTurn {
        height: auto;
        margin: 1 0 0 0;
        padding: 0 1;
        border-left: outer $primary;
        & > .turn--who { color: $text-primary; text-style: bold; }
    }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        """What the user wrote."""

    def compose(self) -> ComposeResult:
        yield Label("You", classes="turn--who")
        yield Static(self.text, markup=False, classes="turn--text")


class ReplyTurn(Vertical):
    """The model's answer to one turn, streamed in as Markdown."""

    DEFAULT_CSS = """
    ReplyTurn {
        height: auto;
        margin: 1 0 0 0;
        padding: 0 1;
        border-left: outer $success;
        & > .turn--who { color: $text-success; text-style: bold; }
        & > Markdown { margin: 0; padding: 0; background: transparent; }
        & > Markdown > *:last-child { margin-bottom: 0; }
        & > Markdown.-empty { display: none; }
        & > .turn--status { color: $text-muted; text-style: italic; }
        & > .turn--status.-hidden { display: none; }
        & > .turn--status.-error { color: $text-error; text-style: none; }
        &.-failed { border-left: outer $error; }
    }
    """

    def __init__(self, model_name: str, status: str) -> None:
        super().__init__()
        self.model_name = model_name
        """Which model answered."""
        self.text = ""
        """The reply so far."""
        self._status = status
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Label(self.model_name, classes="turn--who")
        yield Markdown(classes="-empty")
        yield Static(self._status, markup=False, classes="turn--status")

    @property
    def _markdown(self) -> Markdown:
        return self.query_one(Markdown)

    @property
    def _status_line(self) -> Static:
        return self.query_one(".turn--status", Static)

    def set_status(self, text: str) -> None:
        """Say what the reply is waiting for ("Loading smollm2…"); empty hides the line."""
        self._status_line.update(text)
        self._status_line.set_class(not text, "-hidden")

    async def append(self, delta: str) -> None:
        """Add streamed text to the reply."""
        if not delta:
            return
        if self._stream is None:
            self.set_status("")
            self._markdown.remove_class("-empty")
            self._stream = Markdown.get_stream(self._markdown)
        self.text += delta
        await self._stream.write(delta)

    async def finish(self, *, stopped: bool = False) -> None:
        """The reply is complete; render it in full once more and note a stop."""
        await self._close_stream()
        if stopped:
            self.set_status("Stopped." if self.text else "Stopped before the model answered.")
        elif not self.text:
            self.set_status("The model returned an empty reply.")
        else:
            self.set_status("")

    async def fail(self, message: str) -> None:
        """Show why the reply failed, in the core's words."""
        await self._close_stream()
        self.add_class("-failed")
        self._status_line.add_class("-error")
        self.set_status(message)

    async def _close_stream(self) -> None:
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
            # A final full render closes any block left open mid-stream (oterm #308).
            await self._markdown.update(self.text)


class Notice(Static):
    """A line from the app rather than a participant: model switches, hints, errors."""

    DEFAULT_CSS = """
    Notice {
        height: auto;
        margin: 1 0 0 0;
        padding: 0 1;
        color: $text-muted;
        &.-error { color: $text-error; }
    }
    """


_TurnT = TypeVar("_TurnT", UserTurn, ReplyTurn, Notice)


class Transcript(VerticalScroll, can_focus=False):
    """The conversation so far; stays scrolled to the newest text until the user scrolls up.

    It takes no focus, so Tab moves between the models and the prompt; the screen scrolls it.
    """

    DEFAULT_CSS = """
    Transcript {
        height: 1fr;
        padding: 0 1 1 1;
        background: transparent;
        & > #transcript-hint { margin: 1 0 0 0; color: $text-muted; }
        & > #transcript-hint.-hidden { display: none; }
    }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="transcript-hint", markup=False)

    @property
    def turns(self) -> list[UserTurn | ReplyTurn | Notice]:
        """The turns and notices on show, oldest first."""
        return [
            child for child in self.children if isinstance(child, UserTurn | ReplyTurn | Notice)
        ]

    def show_hint(self, text: str) -> None:
        """What to show while the conversation is empty."""
        hint = self.query_one("#transcript-hint", Static)
        hint.update(text)
        hint.set_class(bool(self.turns) or not text, "-hidden")

    async def add_user_turn(self, text: str) -> UserTurn:
        """Show a message the user sent."""
        return await self._add(UserTurn(text))

    async def add_reply(self, model_name: str, status: str) -> ReplyTurn:
        """Start the model's reply, showing `status` until the first text arrives."""
        return await self._add(ReplyTurn(model_name, status))

    async def add_notice(self, text: str, *, error: bool = False) -> Notice:
        """Show a line from the app."""
        return await self._add(Notice(text, markup=False, classes="-error" if error else ""))

    async def clear_turns(self) -> None:
        """Forget everything on show (a new chat)."""
        await self.remove_children([*self.turns])
        self.release_anchor()
        self.query_one("#transcript-hint").remove_class("-hidden")

    async def _add(self, turn: _TurnT) -> _TurnT:
        self.query_one("#transcript-hint").add_class("-hidden")
        await self.mount(turn)
        self.anchor()
        return turn
