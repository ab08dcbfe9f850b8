"""The key bindings, in one place: each id is stable and is what a user keymap would remap."""

from __future__ import annotations

from textual.binding import Binding, BindingType

APP_BINDINGS: list[BindingType] = [
    Binding(
        "ctrl+q",
        "quit",
        "Quit",
        tooltip="Quit and stop every running model",
        priority=True,
        id="quit",
    ),
    Binding(
        "ctrl+c",
        "interrupt",
        "Stop or quit",
        show=False,
        tooltip="Copy selected text, else stop the answer being written, else quit",
        priority=True,
        id="interrupt",
    ),
]
"""Bindings that work on every screen."""

CHAT_BINDINGS: list[BindingType] = [
    Binding("tab", "app.focus_next", "Next pane", tooltip="Move to the next pane", id="focus-next"),
    Binding(
        "shift+tab",
        "app.focus_previous",
        "Previous pane",
        show=False,
        tooltip="Move to the previous pane",
        id="focus-previous",
    ),
    Binding(
        "pageup",
        "scroll_transcript(-1)",
        "Scroll up",
        show=False,
        tooltip="Scroll the conversation up a page",
        id="scroll-transcript-up",
    ),
    Binding(
        "pagedown",
        "scroll_transcript(1)",
        "Scroll down",
        show=False,
        tooltip="Scroll the conversation down a page",
        id="scroll-transcript-down",
    ),
    Binding("ctrl+n", "new_chat", "New chat", tooltip="Start a new conversation", id="new-chat"),
    Binding(
        "escape", "stop_reply", "Stop", tooltip="Stop the answer being written", id="stop-reply"
    ),
]
"""Bindings of the chat screen (models pane + conversation)."""

MODEL_BINDINGS: list[BindingType] = [
    Binding("p", "pull_model", "Pull", tooltip="Pull a model from a registry", id="pull-model"),
    Binding(
        "ctrl+o",
        "pull_model",
        "Pull",
        show=False,
        tooltip="Pull a model from a registry (also while typing)",
        id="pull-model-anywhere",
    ),
    Binding(
        "d,delete",
        "remove_model",
        "Remove",
        tooltip="Remove the highlighted model from the store",
        id="remove-model",
    ),
    Binding(
        "u",
        "unload_model",
        "Unload",
        tooltip="Stop the highlighted model's llama-server",
        id="unload-model",
    ),
]
"""Bindings for managing models: pulling anywhere, removing and unloading from the models table."""
