"""LibraryScreen: the models column (stored models, pulls, runners) and what the keys do to it."""

from __future__ import annotations

import logging
from typing import ClassVar

from textual import on, work
from textual.binding import BindingType
from textual.screen import Screen

from modelrunner.core.errors import CoreError
from modelrunner.core.events import (
    PullFailed,
    PullFinished,
    PullProgressed,
    PullStarted,
    RunnerEvicted,
    RunnerStateChanged,
)
from modelrunner.core.runner import ModelRunner
from modelrunner.tui.dialogs import ConfirmDialog, PullDialog
from modelrunner.tui.formatting import human_size
from modelrunner.tui.keys import MODEL_BINDINGS
from modelrunner.tui.messages import (
    CoreNews,
    CoreStarted,
    ModelActionDone,
    PullCallFailed,
    ReadingsTaken,
)
from modelrunner.tui.news import pull_failed_text
from modelrunner.tui.widgets.gauges import SystemGauges
from modelrunner.tui.widgets.models_table import ModelRow, ModelsTable
from modelrunner.tui.widgets.pull_list import PullList
from modelrunner.tui.widgets.runner_list import RunnerList
from modelrunner.tui.widgets.status_line import StatusLine

log = logging.getLogger(__name__)

TABLE_ACTIONS = frozenset({"remove_model", "unload_model"})
"""Actions on the highlighted model: offered only while the models table has the focus."""


class LibraryScreen(Screen[None]):
    """A screen with a ModelsTable, a PullList, a RunnerList and SystemGauges.

    Subclasses compose the widgets and start `sample_system`; this class keeps the widgets in step
    with the core's events and readings, and runs the facade calls the keys and the command
    palette ask for (pulls, removes, unloads), in workers.
    """

    BINDINGS: ClassVar[list[BindingType]] = MODEL_BINDINGS

    def __init__(self, runner: ModelRunner) -> None:
        super().__init__()
        self.runner = runner
        """The facade every action goes through."""

    @property
    def table(self) -> ModelsTable:
        """The stored models."""
        return self.query_one(ModelsTable)

    @property
    def pull_list(self) -> PullList:
        """The pulls of this session."""
        return self.query_one(PullList)

    @property
    def runner_list(self) -> RunnerList:
        """The loaded models."""
        return self.query_one(RunnerList)

    def show_library_news(self, news: CoreNews) -> None:
        """Reflect pull and runner events in the lists."""
        match news:
            case CoreStarted():  # pulls resumed from the queue, as they stand now
                for status in self.runner.pulls():
                    phase = "queued" if status.state == "queued" else "resolving"
                    self.pull_list.apply(PullStarted(status.reference, phase))
                    for layer in status.layers:
                        self.pull_list.apply(layer)
            case PullStarted() | PullProgressed() | PullFinished() | PullFailed():
                self.pull_list.apply(news)
            case RunnerStateChanged() | RunnerEvicted():
                self.runner_list.apply(news)
                self.runner_list.add_details(self.runner.running())

    def say(self, text: str, *, error: bool = False) -> None:
        """One sentence on the status line; good news clears itself."""
        self.query_one(StatusLine).say(text, error=error, linger=None if error else 10.0)

    # -- system readings ---------------------------------------------------------------------

    @work(exclusive=True, group="system", exit_on_error=False)
    async def sample_system(self) -> None:
        """Take the facade's CPU, RAM and GPU readings for the life of the screen."""
        try:
            async for sample in self.runner.sample_system():
                self.post_message(ReadingsTaken(sample))
        except CoreError as error:  # the gauges stop; the rest of the app goes on
            log.warning("system readings stopped: %s", error.message)

    @on(ReadingsTaken)
    def _show_readings(self, message: ReadingsTaken) -> None:
        self.query_one(SystemGauges).show(message.sample)
        self.runner_list.measure(message.sample)

    # -- pulling -----------------------------------------------------------------------------

    def action_pull_model(self) -> None:
        """Ask for a reference, then pull it."""
        self.app.push_screen(
            PullDialog(stored=self.table.rows_by_reference.keys()), self._pull_chosen
        )

    def _pull_chosen(self, reference: str | None) -> None:
        if reference:
            self.start_pull(reference)

    def start_pull(self, reference: str) -> None:
        """Show the pull at once and run it; several pulls run side by side."""
        self.pull_list.start(reference)
        self.pull_model(reference)

    @work(group="pull", exit_on_error=False)
    async def pull_model(self, reference: str) -> None:
        """Pull through the facade; progress and the outcome come back as core events."""
        try:
            await self.runner.pull(reference)
        except CoreError as error:
            self.post_message(PullCallFailed(reference, error.message))
        except Exception as error:  # a bug or a transport surprise: one line, not a traceback
            log.exception("pull failed")
            self.post_message(PullCallFailed(reference, f"unexpected error: {error!r}"))

    @on(PullCallFailed)
    def _pull_failed(self, message: PullCallFailed) -> None:
        self.pull_list.fail(message.reference, message.message)
        self.say(pull_failed_text(message.reference, message.message), error=True)

    def cancel_pull(self, reference: str) -> None:
        """Stop a pull; its partial download stays for next time."""
        self.run_cancel(reference)

    @work(group="pull-cancel", exit_on_error=False)
    async def run_cancel(self, reference: str) -> None:
        """Cancel through the facade."""
        try:
            stopped = await self.runner.cancel_pull(reference)
        except CoreError as error:
            self.post_message(ModelActionDone(error.message, error=True))
            return
        if not stopped:
            self.post_message(ModelActionDone(f"{reference} is not being pulled."))

    # -- removing and unloading --------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in TABLE_ACTIONS:
            return self.focused is self.table and self.table.highlighted is not None
        return True

    def action_remove_model(self) -> None:
        """Confirm, then remove the highlighted model."""
        row = self.table.highlighted
        if row is not None:
            self.confirm_remove(row)

    def confirm_remove(self, row: ModelRow) -> None:
        """Ask before removing `row`'s tag (and the model when it is the last tag)."""
        if len(row.model.tags) > 1:
            detail = "The model keeps its other tags; only this name goes."
        else:
            detail = f"Its files ({human_size(row.model.size_bytes)}) are deleted from the store."

        def answered(yes: bool | None) -> None:
            if yes:
                self.remove_model(row.reference, row.name)

        self.app.push_screen(ConfirmDialog(f"Remove {row.name}?", detail), answered)

    @work(group="remove", exit_on_error=False)
    async def remove_model(self, reference: str, name: str) -> None:
        """Remove through the facade (which unloads a deleted model first)."""
        try:
            result = await self.runner.remove_model(reference)
        except CoreError as error:
            self.post_message(ModelActionDone(f"Could not remove {name}: {error.message}", True))
            return
        deleted = any("Deleted" in entry for entry in result)
        said = f"Removed {name}." if deleted else f"Untagged {name}; the model keeps other tags."
        self.post_message(ModelActionDone(said))

    def action_unload_model(self) -> None:
        """Stop the highlighted model's llama-server."""
        row = self.table.highlighted
        if row is not None:
            self.unload_model(row.reference, row.name)

    @work(group="unload", exit_on_error=False)
    async def unload_model(self, reference: str, name: str) -> None:
        """Unload through the facade."""
        try:
            count = await self.runner.unload([reference])
        except CoreError as error:
            self.post_message(ModelActionDone(f"Could not unload {name}: {error.message}", True))
            return
        said = f"Unloaded {name}." if count else f"{name} is not loaded."
        self.post_message(ModelActionDone(said))

    @on(ModelActionDone)
    def _action_done(self, message: ModelActionDone) -> None:
        self.say(message.text, error=message.error)
        if not message.error:
            self.runner_list.add_details(self.runner.running())
