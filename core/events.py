"""Events the core publishes while it works; the TUI (and later GET /events) subscribe to them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineBuildProgressed:
    """The llama-server build moved on."""

    percent: float
    """0-100, from cmake's own progress figures."""
    line: str
    """The build output line the figure came from."""


@dataclass(frozen=True, slots=True)
class EngineReady:
    """A llama-server binary is available."""

    path: str
    source: str
    """"env", "cache", "path" or "built"."""
    version: str


@dataclass(frozen=True, slots=True)
class RunnerStateChanged:
    """A llama-server process moved to a new state."""

    model_id: str
    reference: str
    """The reference of the request that loaded it."""
    state: str
    """"starting", "ready", "stopping", "stopped" or "failed"."""


@dataclass(frozen=True, slots=True)
class ModelsChanged:
    """Models were added to, tagged in or removed from the store."""


@dataclass(frozen=True, slots=True)
class DefaultModelProgressed:
    """The default model is being fetched or imported."""

    reference: str
    message: str
    """What is happening, for a status line."""
    done: bool = False
    """True once the model is in the store (or the import failed)."""
    error: str | None = None


Event = (
    EngineBuildProgressed
    | EngineReady
    | RunnerStateChanged
    | ModelsChanged
    | DefaultModelProgressed
)
"""Everything the core may publish."""
