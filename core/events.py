"""Events the core publishes while it works; the TUI (and later GET /events) subscribe to them."""

from __future__ import annotations

from dataclasses import dataclass

from modelrunner.core.system.gpu import GpuSample
from modelrunner.core.system.host import HostSample


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
    """The model's name: its first tag, normalised ("ai/smollm2:135M-Q4_1")."""
    state: str
    """"starting", "ready", "busy", "idle", "stopping", "stopped" or "crashed"."""
    detail: str = ""
    """Why, when it says more than the state: a crash's exit status and last output lines."""
    mode: str = "completion"
    """Which of the model's runners: "completion", "embedding" or "reranking"."""


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


@dataclass(frozen=True, slots=True)
class PullStarted:
    """A pull was asked for (state "queued"), or it got its turn (state "resolving").

    Published before the pull touches the network, so observers show it at once; a pull that then
    waits for a free slot says "queued" until it is admitted. Every pull that starts ends with
    PullFinished or PullFailed. Joining a pull already running publishes nothing.
    """

    reference: str
    """The normalised reference being pulled, e.g. "ai/gemma3:latest"."""
    state: str
    """"queued" (waiting for a slot) or "resolving" (admitted: reading the manifest)."""


@dataclass(frozen=True, slots=True)
class PullProgressed:
    """One layer of a model pull moved on (bytes, speed or state)."""

    reference: str
    """The normalised reference being pulled, e.g. "ai/gemma3:latest"."""
    layer: str
    """The layer digest (DMR's diff ID)."""
    size: int
    current: int
    """Bytes of this layer on disk, including a resumed part."""
    total: int
    """Sum of the sizes of every layer of the model."""
    pulled: int
    """Sum of `current` over every layer."""
    state: str
    """"queued", "downloading", "verifying", "stalled", "retrying", "done" or "failed"."""
    speed: float = 0.0
    """Bytes per second over the last second or so."""
    average_speed: float = 0.0
    """Bytes per second since this layer started downloading in this run."""
    eta: float | None = None
    """Seconds until this layer is done, when known."""


@dataclass(frozen=True, slots=True)
class PullFinished:
    """A pull stored (or found) its model and tagged it."""

    reference: str
    model_id: str
    cached: bool
    """True when the manifest was already in the store and only the tag was added."""
    size: str = ""
    """The model's size as its config states it ("256.35MiB"), for DMR's cached message."""


CANCELLED_STATUS = 499
"""PullFailed.status of a pull that was cancelled (nginx's "client closed request")."""


@dataclass(frozen=True, slots=True)
class PullFailed:
    """A pull ended without storing anything new under its tag."""

    reference: str
    message: str
    status: int = 500
    """The HTTP status a front end should answer with; CANCELLED_STATUS for a cancel."""


@dataclass(frozen=True, slots=True)
class RunnerEvicted:
    """The pool stopped a runner on its own."""

    model_id: str
    reference: str
    reason: str
    """"idle" (keep-alive ran out), "memory" or "limit" (room for `for_model`)."""
    for_model: str = ""
    """The model whose load needed the room, for "memory" and "limit"."""
    mode: str = "completion"
    """Which of the model's runners: "completion", "embedding" or "reranking"."""


@dataclass(frozen=True, slots=True)
class PreloadFailed:
    """A runner loaded in the background (after `_configure`, as DMR) could not be loaded.

    Nobody waits for a preload, so this (and the log) is where its failure shows; a llama-server
    that died while loading is also reported "crashed" by RunnerStateChanged.
    """

    model_id: str
    reference: str
    """The model's name: its first tag, normalised."""
    message: str
    """Why, as a request for the model would have been told."""
    mode: str = "completion"


@dataclass(frozen=True, slots=True)
class SystemSampled:
    """The machine's CPU, RAM and GPUs were read, with each runner's share attributed."""

    host: HostSample
    """CPU and RAM, and each runner's process tree by root pid."""
    gpus: GpuSample
    """Every GPU, or none with the reason."""


Event = (
    EngineBuildProgressed
    | EngineReady
    | RunnerStateChanged
    | RunnerEvicted
    | PreloadFailed
    | ModelsChanged
    | DefaultModelProgressed
    | PullStarted
    | PullProgressed
    | PullFinished
    | PullFailed
    | SystemSampled
)
"""Everything the core may publish."""
