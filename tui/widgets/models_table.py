"""The table of models in the local store; Enter picks the one to chat with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.coordinate import Coordinate
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import DataTable

from modelrunner.core.errors import InvalidReference
from modelrunner.core.references import normalize
from modelrunner.core.store.store import StoredModel
from modelrunner.tui.formatting import (
    config_text,
    context_length,
    ellipsize,
    human_context,
    human_quantization,
    human_size,
    short_id,
    short_name,
)

NAME_WIDTH = 22
"""Columns for the model's name; longer names end in "…" (the full name titles the chat)."""

STATE_GLYPHS: dict[str, tuple[str, str]] = {
    "starting": ("◌", "yellow"),
    "ready": ("●", "green"),
    "idle": ("●", "green"),
    "busy": ("◉", "bold green"),
    "stopping": ("◌", "dim"),
    "crashed": ("✕", "red"),
    "failed": ("✕", "red"),
}
"""How a runner state shows in the first column: glyph and Rich style."""


@dataclass(frozen=True, slots=True)
class ModelRow:
    """One row: a stored model under one of its tags (or its ID when it has none)."""

    reference: str
    """What to hand the runner: the normalised tag ("ai/smollm2:135M-Q4_1") or the model ID."""
    name: str
    """What people read: "smollm2:135M-Q4_1"."""
    model: StoredModel
    """The stored model behind the row."""


def rows_for(models: tuple[StoredModel, ...]) -> list[ModelRow]:
    """One row per tag, sorted by name so the table does not depend on the store's order."""
    rows: list[ModelRow] = []
    for model in models:
        if not model.tags:
            rows.append(ModelRow(model.id, short_id(model.id), model))
        for tag in model.tags:
            try:
                reference = normalize(tag)
            except InvalidReference:
                reference = tag
            rows.append(ModelRow(reference, short_name(tag), model))
    return sorted(rows, key=lambda row: (row.name, row.reference))


class ModelsTable(DataTable[str | Text]):
    """Lists stored models with their size, quantisation, parameters and context."""

    DEFAULT_CSS = """
    ModelsTable {
        height: 1fr;
        background: transparent;
        &:focus { background-tint: $foreground 0%; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter",
            "select_cursor",
            "Chat",
            tooltip="Chat with the highlighted model",
            id="chat-with-model",
        ),
    ]

    models: reactive[tuple[StoredModel, ...]] = reactive((), always_update=True)
    """The stored models to show."""

    runner_states: reactive[dict[str, str]] = reactive(dict, always_update=True)
    """Runner state per model ID ("starting", "ready", …), shown as a glyph in the first column."""

    @dataclass
    class ModelSelected(Message):
        """Posted when the user picks a model (Enter or a click on the highlighted row)."""

        reference: str
        """The reference to chat with."""
        name: str
        """Its display name."""
        model: StoredModel
        """The stored model."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._rows: dict[str, ModelRow] = {}

    def on_mount(self) -> None:
        self.add_column("", key="state", width=1)
        self.add_column("MODEL", key="name", width=NAME_WIDTH)
        self.add_column("PARAMS", key="parameters")
        self.add_column("QUANT", key="quantization")
        self.add_column(Text("CTX", justify="right"), key="context")
        self.add_column(Text("SIZE", justify="right"), key="size")

    @property
    def rows_by_reference(self) -> dict[str, ModelRow]:
        """The rows on show, by reference."""
        return dict(self._rows)

    @property
    def highlighted(self) -> ModelRow | None:
        """The row under the cursor, if any."""
        if not self._rows or self.cursor_row < 0:
            return None
        key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        return self._rows.get(key or "")

    def find(self, reference: str) -> ModelRow | None:
        """The row for a reference as a user would type it ("smollm2:135M-Q4_1"), if shown."""
        try:
            wanted = normalize(reference)
        except InvalidReference:
            wanted = reference
        return self._rows.get(wanted)

    def highlight(self, reference: str) -> bool:
        """Move the cursor to a model's row; False when it is not shown."""
        row = self.find(reference)
        if row is None:
            return False
        self.move_cursor(row=self.get_row_index(row.reference), animate=False)
        return True

    def watch_models(self, models: tuple[StoredModel, ...]) -> None:
        keep = self.highlighted
        self.clear()
        self._rows = {row.reference: row for row in rows_for(models)}
        for row in self._rows.values():
            config = row.model.config
            self.add_row(
                self._state_cell(row.model.id),
                ellipsize(row.name, NAME_WIDTH),
                config_text(config, "parameters"),
                human_quantization(config),
                Text(human_context(context_length(config)), justify="right"),
                Text(human_size(row.model.size_bytes), justify="right"),
                key=row.reference,
            )
        if keep is not None:
            self.highlight(keep.reference)

    def watch_runner_states(self, states: dict[str, str]) -> None:
        for row in self._rows.values():
            self.update_cell(row.reference, "state", self._state_cell(row.model.id))

    def _state_cell(self, model_id: str) -> Text:
        glyph, style = STATE_GLYPHS.get(self.runner_states.get(model_id, ""), (" ", ""))
        return Text(glyph, style=style)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        row = self._rows.get(event.row_key.value or "")
        if row is not None:
            self.post_message(self.ModelSelected(row.reference, row.name, row.model))
