"""ConfirmDialog: a yes/no question before something that cannot be undone."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static


class ConfirmDialog(ModalScreen[bool]):
    """Asks one question; dismisses with True (the action button or y) or False (Esc or n)."""

    DEFAULT_CSS = """
    ConfirmDialog {
        align: center middle;
        & > #confirm-box {
            width: 64;
            height: auto;
            padding: 1 2;
            border: round $error;
            background: $surface;
        }
        & #confirm-title { text-style: bold; margin: 0 0 1 0; }
        & #confirm-detail { color: $text-muted; margin: 0 0 1 0; }
        & #confirm-buttons { height: auto; align-horizontal: right; }
        & #confirm-buttons > Button { margin: 0 0 0 2; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "escape,n",
            "answer(False)",
            "Cancel",
            tooltip="Keep things as they are",
            id="confirm-no",
        ),
        Binding("y", "answer(True)", "Yes", tooltip="Go ahead", id="confirm-yes"),
    ]

    def __init__(self, question: str, detail: str = "", *, action: str = "Remove") -> None:
        """Args:
        question: The question, one line ("Remove smollm2:135M-Q4_1?").
        detail: What will happen, in a sentence or two.
        action: The label of the button that says yes.
        """
        super().__init__()
        self.question = question
        """What is asked."""
        self.detail = detail
        """What will happen."""
        self.action_label = action
        """The yes button's label."""

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(self.question, id="confirm-title", markup=False)
            if self.detail:
                yield Static(self.detail, id="confirm-detail", markup=False)
            with Horizontal(id="confirm-buttons"):
                yield Button("Cancel", id="confirm-cancel")
                yield Button(self.action_label, id="confirm-ok", variant="error")

    def on_mount(self) -> None:
        self.query_one("#confirm-cancel", Button).focus()

    @on(Button.Pressed, "#confirm-ok")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-cancel")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        """Close with `answer`."""
        self.dismiss(answer)
