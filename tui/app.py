"""ModelRunnerApp: owns the runner's lifetime and turns the core's events into Textual messages."""

from __future__ import annotations

import logging
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import BindingType
from textual.screen import Screen
from textual.signal import Signal
from textual.widgets import Input

from modelrunner.core.errors import CoreError
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.tui.commands import ModelCommands
from modelrunner.tui.keys import APP_BINDINGS
from modelrunner.tui.messages import CoreEventArrived, CoreNews, CoreStarted, CoreStartFailed
from modelrunner.tui.screens.chat import ChatScreen

log = logging.getLogger(__name__)


class ModelRunnerApp(App[None]):
    """The modelrunner terminal app: stored models and a chat, over one ModelRunner."""

    CSS_PATH = "app.tcss"
    TITLE = "modelrunner"

    BINDINGS: ClassVar[list[BindingType]] = APP_BINDINGS

    COMMANDS = App.COMMANDS | {ModelCommands}

    def __init__(self, runner: ModelRunner, settings: Settings) -> None:
        super().__init__()
        self.runner = runner
        """The facade every screen talks to; started on mount, stopped on unmount."""
        self.settings = settings
        """What the runner was configured with."""
        self.core_events: Signal[CoreNews] = Signal(self, "core-events")
        """Screens subscribe here for the core's events and its start-up outcome."""

    def get_default_screen(self) -> Screen[None]:
        return ChatScreen(self.runner, self.settings, self.core_events)

    def on_mount(self) -> None:
        # After the first refresh, so the screen has mounted and subscribed to core_events.
        self.call_after_refresh(self.run_core)

    @work(exclusive=True, group="core-events", exit_on_error=False)
    async def run_core(self) -> None:
        """Start the runner, then forward its events as messages for the life of the app."""
        events = self.runner.subscribe()
        try:
            await self.runner.start()
        except CoreError as error:
            self.post_message(CoreEventArrived(CoreStartFailed(error.message)))
            return
        self.post_message(CoreEventArrived(CoreStarted()))
        async for event in events:
            self.post_message(CoreEventArrived(event))

    def on_core_event_arrived(self, message: CoreEventArrived) -> None:
        self.core_events.publish(message.news)

    async def on_unmount(self) -> None:
        try:
            await self.runner.stop()
        except CoreError as error:  # the app is going away; say it in the log, not a traceback
            log.warning("stopping the runner: %s", error.message)

    async def action_interrupt(self) -> None:
        """Ctrl+C: copy a selection if there is one, else stop a reply, else quit."""
        focused = self.focused
        if isinstance(focused, Input) and focused.selected_text:
            focused.action_copy()
            return
        if self.screen.get_selected_text():
            self.screen.action_copy_text()
            return
        if isinstance(self.screen, ChatScreen) and self.screen.generating:
            await self.screen.action_stop_reply()
            return
        self.exit()


def make_app(runner: ModelRunner, settings: Settings) -> ModelRunnerApp:
    """The app as the CLI and the tests build it."""
    return ModelRunnerApp(runner, settings)
