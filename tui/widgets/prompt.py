"""The prompt: one line of text; Enter sends it."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Label


class PromptInput(Horizontal):
    """Where the user types; posts PromptInput.Submitted and clears itself on Enter."""

    DEFAULT_CSS = """
    PromptInput {
        height: 3;
        border: round $panel-lighten-2;
        &:focus-within { border: round $accent; }
        & > .prompt--caret { width: 2; color: $text-accent; text-style: bold; }
        & > Input, & > Input:focus {
            width: 1fr;
            height: 1;
            border: none;
            padding: 0;
            background: transparent;
        }
    }
    """

    @dataclass
    class Submitted(Message):
        """Posted when the user pressed Enter on a prompt that is not blank."""

        text: str
        """The prompt, as typed."""

    def __init__(self, *, id: str | None = None, placeholder: str = "") -> None:  # noqa: A002
        super().__init__(id=id)
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        yield Label("›", classes="prompt--caret")
        yield Input(placeholder=self._placeholder, id="prompt-text")

    @property
    def input(self) -> Input:
        """The text field itself."""
        return self.query_one(Input)

    @property
    def placeholder(self) -> str:
        """The grey text shown while the prompt is empty."""
        return self.input.placeholder

    @placeholder.setter
    def placeholder(self, text: str) -> None:
        self.input.placeholder = text

    def focus_input(self) -> None:
        """Put the cursor in the prompt."""
        self.input.focus()

    @on(Input.Submitted)
    def _send(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value
        if not text.strip():
            return
        self.input.clear()
        self.post_message(self.Submitted(text))
