"""PullDialog: ask for a model reference, checking and normalising it as it is typed."""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from modelrunner.core.errors import InvalidReference
from modelrunner.core.references import ModelReference, parse_reference

PLACEHOLDER = "ai/smollm2:360M-Q4_K_M or hf.co/org/repo:Q4_K_M"
"""What the empty field suggests."""


def describe(reference: ModelReference, stored: Collection[str] = ()) -> str:
    """One line saying what will be pulled, and from where."""
    if reference.is_huggingface:
        quant = "" if reference.tag != "latest" else " (Q4_K_M, as DMR picks by default)"
        where = f"from Hugging Face{quant}"
    elif reference.registry == "docker.io":
        where = "from Docker Hub"
    else:
        where = f"from {reference.registry}"
    line = f"Will pull {reference.normalized} {where}."
    if reference.normalized in stored:
        line += " It is in the store already: pulling again fetches what changed."
    return line


class PullDialog(ModalScreen[str | None]):
    """Asks which model to pull; dismisses with its normalised reference, or None."""

    DEFAULT_CSS = """
    PullDialog {
        align: center middle;
        & > #pull-box {
            width: 72;
            height: auto;
            padding: 1 2;
            border: round $accent;
            background: $surface;
        }
        & #pull-title { text-style: bold; margin: 0 0 1 0; }
        & #pull-reference { margin: 0; }
        & #pull-feedback { color: $text-muted; margin: 1 0; height: auto; }
        & #pull-feedback.-error { color: $text-error; }
        & #pull-buttons { height: auto; align-horizontal: right; }
        & #pull-buttons > Button { margin: 0 0 0 2; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", tooltip="Close without pulling", id="pull-cancel"),
    ]

    reference: reactive[ModelReference | None] = reactive[ModelReference | None](None, init=False)
    """The reference typed so far, parsed, or None while it is empty or invalid."""

    def __init__(self, initial: str = "", *, stored: Collection[str] = ()) -> None:
        """Args:
        initial: Text to start with.
        stored: Normalised references already in the store, to say so.
        """
        super().__init__()
        self._initial = initial
        self._stored = frozenset(stored)

    def compose(self) -> ComposeResult:
        with Vertical(id="pull-box"):
            yield Label("Pull a model", id="pull-title")
            yield Input(self._initial, placeholder=PLACEHOLDER, id="pull-reference")
            yield Static("", id="pull-feedback", markup=False)
            with Horizontal(id="pull-buttons"):
                yield Button("Cancel", id="pull-cancel-button")
                yield Button("Pull", id="pull-ok", variant="primary", disabled=True)

    def on_mount(self) -> None:
        self._check(self._initial)
        self.query_one(Input).focus()

    @on(Input.Changed, "#pull-reference")
    def _typed(self, event: Input.Changed) -> None:
        self._check(event.value)

    def _check(self, text: str) -> None:
        feedback = self.query_one("#pull-feedback", Static)
        if not text.strip():
            self.reference = None
            feedback.update("Type a model name; Docker Hub's ai/ namespace is the default.")
            feedback.remove_class("-error")
            return
        try:
            self.reference = parse_reference(text)
        except InvalidReference as error:
            self.reference = None
            feedback.update(error.message)
            feedback.add_class("-error")
            return
        feedback.update(describe(self.reference, self._stored))
        feedback.remove_class("-error")

    def watch_reference(self, reference: ModelReference | None) -> None:
        self.query_one("#pull-ok", Button).disabled = reference is None

    @on(Input.Submitted, "#pull-reference")
    @on(Button.Pressed, "#pull-ok")
    def _pull(self) -> None:
        if self.reference is not None:
            self.dismiss(self.reference.normalized)

    @on(Button.Pressed, "#pull-cancel-button")
    def action_cancel(self) -> None:
        """Close without pulling."""
        self.dismiss(None)
