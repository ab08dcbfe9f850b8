"""Messages carrying the core's news and the chat worker's results to the widgets showing them."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from modelrunner.core.events import EngineBuildProgressed, Event, SystemSampled
from modelrunner.core.store.store import StoredModel


@dataclass(frozen=True, slots=True)
class CoreStarted:
    """The runner started: the store is ready to list."""


@dataclass(frozen=True, slots=True)
class CoreStartFailed:
    """The runner could not start; the app keeps running to say why."""

    message: str
    """The core's explanation, fit to show as it is."""


CoreNews = Event | CoreStarted | CoreStartFailed
"""What the app's core-events signal publishes: the core's events plus its own start-up outcome."""


@dataclass
class CoreEventArrived(Message):
    """Posted when the core published an event or finished starting."""

    news: CoreNews
    """The event, as the core published it."""

    def can_replace(self, message: Message) -> bool:
        """A burst of build progress keeps only the newest line."""
        return isinstance(message, CoreEventArrived) and (
            isinstance(self.news, EngineBuildProgressed)
            and isinstance(message.news, EngineBuildProgressed)
        )


@dataclass
class ModelsListed(Message, bubble=False):
    """Posted when the store's models were (re)read."""

    models: list[StoredModel]
    """Every stored model, in the store's order."""


@dataclass
class ModelsListFailed(Message, bubble=False):
    """Posted when reading the store failed."""

    message: str
    """The core's explanation."""


@dataclass
class ReplyStreamed(Message, bubble=False):
    """Posted when the model produced more text for the reply in progress."""

    turn: int
    """Which reply the text belongs to; text for an abandoned reply is dropped."""
    delta: str
    """The new text, to append."""


@dataclass
class ReplyFinished(Message, bubble=False):
    """Posted when the model finished (or was stopped on) the reply in progress."""

    turn: int
    """Which reply ended."""
    stopped: bool = False
    """True when the user stopped it before the model was done."""


@dataclass
class ReplyFailed(Message, bubble=False):
    """Posted when the chat call failed before or while the model answered."""

    turn: int
    """Which reply failed."""
    message: str
    """What went wrong, in the core's words."""


@dataclass
class PullCallFailed(Message, bubble=False):
    """Posted when a pull worker's call to the facade raised."""

    reference: str
    """The normalised reference that was asked for."""
    message: str
    """What went wrong, in the core's words."""


@dataclass
class ModelActionDone(Message, bubble=False):
    """Posted when a remove or unload worker finished; the text says what happened."""

    text: str
    """One sentence for the status line."""
    error: bool = False
    """Whether it failed."""


@dataclass
class ReadingsTaken(Message, bubble=False):
    """Posted when the system worker got a new CPU, RAM and GPU reading from the facade."""

    sample: SystemSampled
    """The reading, as the facade yielded it."""
