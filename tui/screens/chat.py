"""ChatScreen: the stored models beside a conversation with the one picked."""

from __future__ import annotations

import logging
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.signal import Signal
from textual.widgets import Footer, Static

from modelrunner.core.errors import CoreError
from modelrunner.core.events import ModelsChanged, RunnerStateChanged
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.tui.formatting import family_name
from modelrunner.tui.keys import CHAT_BINDINGS
from modelrunner.tui.messages import (
    CoreNews,
    CoreStarted,
    CoreStartFailed,
    ModelsListed,
    ModelsListFailed,
    ReplyFailed,
    ReplyFinished,
    ReplyStreamed,
)
from modelrunner.tui.news import status_news
from modelrunner.tui.screens.library import LibraryScreen
from modelrunner.tui.widgets.gauges import SystemGauges
from modelrunner.tui.widgets.models_table import ModelRow, ModelsTable
from modelrunner.tui.widgets.prompt import PromptInput
from modelrunner.tui.widgets.pull_list import PullList
from modelrunner.tui.widgets.runner_list import RunnerList
from modelrunner.tui.widgets.status_line import StatusLine
from modelrunner.tui.widgets.transcript import ReplyTurn, Transcript

log = logging.getLogger(__name__)

STATE_WORDS = {
    "starting": "loading…",
    "ready": "loaded",
    "busy": "loaded",
    "idle": "loaded",
    "stopping": "unloading…",
    "failed": "failed",
    "crashed": "crashed",
}
"""How a runner state reads in the chat pane's subtitle."""

EMPTY_STORE = "No models in the store yet: press p to pull one."
"""What the models pane says while the store is empty."""


class ChatScreen(LibraryScreen):
    """Pick a model on the left, talk to it on the right."""

    BINDINGS: ClassVar[list[BindingType]] = CHAT_BINDINGS

    chat_model: reactive[ModelRow | None] = reactive[ModelRow | None](None)
    """The model the conversation talks to, or None until one is picked."""

    generating: reactive[bool] = reactive(False)
    """Whether a reply is being written."""

    def __init__(
        self, runner: ModelRunner, settings: Settings, core_events: Signal[CoreNews]
    ) -> None:
        super().__init__(runner)
        self.settings = settings
        self.core_events = core_events
        self.conversation: list[dict[str, str]] = []
        """The messages sent with each turn, as the OpenAI API wants them."""
        self._turn = 0
        self._reply: ReplyTurn | None = None
        self._listed_once = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="panes"):
            with Vertical(id="library"):
                with Vertical(id="models-pane"):
                    yield ModelsTable(id="models")
                    yield Static(EMPTY_STORE, id="models-empty", markup=False)
                yield PullList(id="pulls")
                yield RunnerList(id="runners")
                yield SystemGauges(id="system")
            with Vertical(id="chat-pane"):
                yield Transcript(id="transcript")
                yield PromptInput(id="prompt", placeholder="Pick a model first")
        yield StatusLine(id="status")
        yield Footer()

    @property
    def turn(self) -> int:
        """How many prompts were sent (or chats cleared) so far; labels the reply in progress."""
        return self._turn

    @property
    def is_listed(self) -> bool:
        """Whether the store's models have been read at least once."""
        return self._listed_once

    @property
    def transcript(self) -> Transcript:
        """The conversation on show."""
        return self.query_one(Transcript)

    @property
    def prompt(self) -> PromptInput:
        """Where the user types."""
        return self.query_one(PromptInput)

    def on_mount(self) -> None:
        self.query_one("#models-pane").border_title = "Models"
        self.core_events.subscribe(self, self.show_core_news)
        self._show_chat_title()
        self.transcript.show_hint("Opening the model store…")
        self.table.focus()
        self.sample_system()

    # -- the core's news ---------------------------------------------------------------------

    def show_core_news(self, news: CoreNews) -> None:
        """Reflect one piece of core news on screen."""
        if (said := status_news(news)) is not None:
            status = self.query_one(StatusLine)
            status.say(said.text, percent=said.percent, error=said.error, linger=said.linger)
        self.show_library_news(news)
        match news:
            case CoreStarted() | ModelsChanged():
                self.load_models()
            case CoreStartFailed(message=message):
                self.transcript.show_hint(f"The model store could not be opened: {message}")
            case RunnerStateChanged(model_id=model_id, state=state, mode="completion"):
                # the runner chats use; an embedding runner of the model is not it
                self.table.runner_states = {**self.table.runner_states, model_id: state}
                self._show_chat_title()
                if self._reply is not None and not self._reply.text and state == "starting":
                    self._reply.set_status(self._waiting_text())

    @work(exclusive=True, group="models", exit_on_error=False)
    async def load_models(self) -> None:
        """Read the store's models for the table."""
        try:
            models = await self.runner.list_models()
        except CoreError as error:
            self.post_message(ModelsListFailed(error.message))
            return
        self.post_message(ModelsListed(models))

    @on(ModelsListed)
    def _show_models(self, message: ModelsListed) -> None:
        table = self.table
        table.models = tuple(message.models)
        empty = not table.rows_by_reference
        count = table.row_count
        subtitle = "" if empty else f"{count} model{'s' if count != 1 else ''}"
        self.query_one("#models-pane").border_subtitle = subtitle
        self.query_one("#models-empty").display = empty
        table.display = not empty
        current = self.chat_model
        if current is not None and current.reference not in table.rows_by_reference:
            self.chat_model = None
        elif current is not None:
            table.highlight(current.reference)
        self._listed_once = True
        # The default model is picked when it is there and nothing else is: at start, or once
        # the first run's import has stored it.
        default = table.find(self.settings.default_model)
        if self.chat_model is None and default is not None:
            self.chat_model = default
            table.highlight(default.reference)
            self.prompt.focus_input()
        self._show_hint()

    @on(ModelsListFailed)
    def _show_models_error(self, message: ModelsListFailed) -> None:
        self.query_one(StatusLine).say(message.message, error=True)

    # -- picking a model ---------------------------------------------------------------------

    @on(ModelsTable.ModelSelected)
    async def _pick_model(self, message: ModelsTable.ModelSelected) -> None:
        row = self.table.rows_by_reference.get(message.reference)
        previous = self.chat_model
        if row is None:
            return
        if previous is None or previous.reference != row.reference:
            await self._stop_generating()
            self.chat_model = row
            if self.conversation:
                await self.transcript.add_notice(f"Now talking to {row.name}.")
        self.prompt.focus_input()

    def watch_chat_model(self, row: ModelRow | None) -> None:
        self._show_chat_title()
        self._show_hint()
        self.prompt.placeholder = (
            f"Message {row.name} (Enter to send)" if row else "Pick a model first"
        )

    def _show_chat_title(self) -> None:
        pane = self.query_one("#chat-pane")
        row = self.chat_model
        pane.border_title = f"Chat · {row.name}" if row else "Chat"
        state = self.table.runner_states.get(row.model.id, "") if row else ""
        writing = self.generating and state != "starting"
        pane.border_subtitle = "writing…" if writing else STATE_WORDS.get(state, "")

    def _show_hint(self) -> None:
        if not self._listed_once:
            return
        if not self.table.rows_by_reference:
            hint = (
                "The store is empty: press Ctrl+O to pull a model (ai/smollm2, say), "
                "or add one with `modelrunner package`; then pick it here."
            )
        elif self.chat_model is None:
            hint = "Pick a model on the left (↑/↓ then Enter) to start chatting."
        else:
            hint = f"Say something to {self.chat_model.name}: type below and press Enter."
        self.transcript.show_hint(hint)

    # -- chatting ----------------------------------------------------------------------------

    @on(PromptInput.Submitted)
    async def _send(self, message: PromptInput.Submitted) -> None:
        row = self.chat_model
        if row is None:
            self.notify("Pick a model on the left first (↑/↓ then Enter).", severity="warning")
            self.table.focus()
            return
        if self.generating:
            self.notify("Still answering; press Esc to stop it first.", severity="warning")
            return
        self._turn += 1
        self.conversation.append({"role": "user", "content": message.text})
        await self.transcript.add_user_turn(message.text)
        self._reply = await self.transcript.add_reply(row.name, self._waiting_text())
        self.generating = True
        self.stream_reply(self._turn, row.reference, list(self.conversation))

    def _waiting_text(self) -> str:
        row = self.chat_model
        if row is None:
            return ""
        state = self.table.runner_states.get(row.model.id)
        loaded = state in ("ready", "busy", "idle")
        return "…" if loaded else f"Loading {family_name(row.name)}…"

    @work(exclusive=True, group="chat", exit_on_error=False)
    async def stream_reply(self, turn: int, reference: str, messages: list[dict[str, str]]) -> None:
        """Stream the model's answer to the conversation as ReplyStreamed messages."""
        deltas = self.runner.chat(reference, list(messages))
        try:
            async for delta in deltas:
                self.post_message(ReplyStreamed(turn, delta))
        except CoreError as error:
            self.post_message(ReplyFailed(turn, error.message))
            return
        except (
            Exception
        ) as error:  # a bug or an unexpected transport error: one line, not a traceback
            log.exception("chat failed")
            self.post_message(
                ReplyFailed(turn, f"Unexpected error: {error or type(error).__name__}")
            )
            return
        self.post_message(ReplyFinished(turn))

    @on(ReplyStreamed)
    async def _show_delta(self, message: ReplyStreamed) -> None:
        if self._reply is not None and message.turn == self._turn:
            await self._reply.append(message.delta)

    @on(ReplyFinished)
    async def _finish_reply(self, message: ReplyFinished) -> None:
        reply = self._reply
        if reply is None or message.turn != self._turn:
            return
        self._reply = None
        self.generating = False
        await reply.finish(stopped=message.stopped)
        if reply.text:
            self.conversation.append({"role": "assistant", "content": reply.text})

    @on(ReplyFailed)
    async def _fail_reply(self, message: ReplyFailed) -> None:
        reply = self._reply
        if reply is None or message.turn != self._turn:
            return
        self._reply = None
        self.generating = False
        await reply.fail(message.message)
        # The question was never answered: take it back so the next turn does not repeat it.
        if self.conversation and self.conversation[-1]["role"] == "user":
            self.conversation.pop()

    def watch_generating(self, generating: bool) -> None:
        self._show_chat_title()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_reply":
            return self.generating
        return super().check_action(action, parameters)

    async def action_stop_reply(self) -> None:
        """Stop the reply being written; what arrived so far stays."""
        await self._stop_generating()

    async def _stop_generating(self) -> None:
        if not self.generating:
            return
        self.workers.cancel_group(self, "chat")
        self.post_message(ReplyFinished(self._turn, stopped=True))

    def action_scroll_transcript(self, pages: int) -> None:
        """Scroll the conversation by whole pages (negative: up)."""
        if pages < 0:
            self.transcript.scroll_page_up()
        else:
            self.transcript.scroll_page_down()

    async def action_new_chat(self) -> None:
        """Forget the conversation and start again with the same model."""
        self.workers.cancel_group(self, "chat")
        self._turn += 1
        self._reply = None
        self.generating = False
        self.conversation.clear()
        await self.transcript.clear_turns()
        self._show_hint()
        if self.chat_model is not None:
            self.prompt.focus_input()
