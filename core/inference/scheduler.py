"""Scheduler: pure decisions over a snapshot of runners (serve, join, queue, start, evict, refuse).

`RunnerPool` takes a snapshot of its runners and of free memory, asks `Scheduler.decide`, and
carries out the answer. Nothing here does I/O or reads a clock: every rule is tested with plain
data.

The rules, where DMR differs (reference §3.2-3.4, §9.1):

- a ready runner with a free llama-server slot serves; with all slots taken the request queues on
  it, up to `queue_limit` waiters, then it is refused as busy (DMR has no bound); a request never
  overtakes queued ones: while any wait, a newcomer queues behind them (the pool hands each freed
  slot to the first in line);
- a model that is not running starts if the runner limit and free memory allow; otherwise the least
  recently used *idle* runners that free enough go first (DMR evicts every idle runner, and only
  when slots run out); busy runners are never evicted: the request waits for them instead;
- a model that cannot fit even with every other runner gone is refused when the memory check is on.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
"""What tells runners apart (the pool's is a model ID and a mode; tests use plain strings)."""


class RunnerState(enum.Enum):
    """Where a runner is in its life, as the API and the TUI show it."""

    STARTING = "starting"
    READY = "ready"
    """Loaded and never used yet."""
    BUSY = "busy"
    """Serving at least one request."""
    IDLE = "idle"
    """Loaded, no request in flight."""
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"
    """llama-server exited without being asked to; the next request reloads it."""


_LOADED = (RunnerState.READY, RunnerState.BUSY, RunnerState.IDLE)


@dataclass(frozen=True, slots=True)
class Need:
    """Bytes of host RAM and of GPU memory."""

    ram_bytes: int = 0
    vram_bytes: int = 0

    def __add__(self, other: Need) -> Need:
        return Need(self.ram_bytes + other.ram_bytes, self.vram_bytes + other.vram_bytes)


@dataclass(frozen=True, slots=True)
class RunnerView(Generic[K]):
    """What the scheduler knows of one runner."""

    key: K
    name: str
    """How to call it in a message (its model's name)."""
    state: RunnerState
    in_use: int = 0
    """Requests in flight."""
    slots: int = 4
    """Requests llama-server serves at once."""
    waiting: int = 0
    """Requests queued for a slot."""
    last_used: float = 0.0
    need: Need = field(default_factory=Need)
    keep_alive: float | None = None
    """Seconds to stay loaded once idle; None: the pool's idle timeout; negative: forever."""

    @property
    def evictable(self) -> bool:
        return self.in_use == 0 and self.state in (*_LOADED, RunnerState.CRASHED)


@dataclass(frozen=True, slots=True)
class Resources:
    """Free memory now, as the pool measured it."""

    ram_free: int
    vram_free: int | None = None
    """None when there is no GPU."""


@dataclass(frozen=True, slots=True)
class Request(Generic[K]):
    """One request for a model."""

    key: K
    name: str
    need: Need = field(default_factory=Need)


@dataclass(frozen=True, slots=True)
class Serve(Generic[K]):
    """Use the running runner."""

    key: K


@dataclass(frozen=True, slots=True)
class Join(Generic[K]):
    """The model is loading: wait for that load."""

    key: K


@dataclass(frozen=True, slots=True)
class Queue(Generic[K]):
    """Every slot of the runner is taken: wait for one."""

    key: K
    waiting: int


@dataclass(frozen=True, slots=True)
class Busy(Generic[K]):
    """Every slot is taken and the queue is full: refuse."""

    key: K
    waiting: int


@dataclass(frozen=True, slots=True)
class Start(Generic[K]):
    """Stop `evict` (idle runners), then start the model."""

    key: K
    evict: tuple[K, ...] = ()
    fits: bool = True
    """False when memory is short and the memory check is off: started anyway."""


@dataclass(frozen=True, slots=True)
class Wait(Generic[K]):
    """No room until a busy runner finishes."""

    key: K
    reason: str


@dataclass(frozen=True, slots=True)
class Refuse(Generic[K]):
    """The model cannot fit, even with every other runner stopped."""

    key: K
    message: str


Decision = Serve[K] | Join[K] | Queue[K] | Busy[K] | Start[K] | Wait[K] | Refuse[K]


@dataclass(frozen=True, slots=True)
class EvictionPreview:
    """What a request for a model would do now: "loading X would stop Y and Z, needs …, … free"."""

    model: str
    action: str
    """"serve", "join" (it is loading), "queue", "busy", "start", "wait" or "refuse"."""
    evict: tuple[str, ...]
    """Names of the runners that would be stopped, least recently used first."""
    needed_bytes: int
    """RAM and GPU memory the model needs (0 when it is running or unknown)."""
    free_bytes: int
    """RAM and GPU memory free now, before any eviction."""
    fits: bool
    message: str


def preview(
    decision: Decision[K],
    request: Request[K],
    runners: Sequence[RunnerView[K]],
    resources: Resources,
) -> EvictionPreview:
    """Describe `decision` (from `Scheduler.decide` on the same data) for a person."""
    names = {r.key: r.name for r in runners}
    evict_keys = decision.evict if isinstance(decision, Start) else ()
    evict = tuple(names.get(key, str(key)) for key in evict_keys)
    needed = request.need.ram_bytes + request.need.vram_bytes
    free = resources.ram_free + (resources.vram_free or 0)
    sizes = f"needs {human_bytes(needed)}, {human_bytes(free)} free"
    action, fits = type(decision).__name__.lower(), True
    if isinstance(decision, Serve):
        message = f"{request.name} is loaded"
    elif isinstance(decision, Join):
        message = f"{request.name} is loading"
    elif isinstance(decision, Queue | Busy):
        message = f"{request.name} is busy: {decision.waiting} requests waiting"
    elif isinstance(decision, Start):
        fits = decision.fits
        stops = f" would stop {_names(evict)}" if evict else ""
        message = f"loading {request.name}{stops}; {sizes}"
        if not fits:
            message += " (it may not fit)"
    elif isinstance(decision, Wait):
        message = f"loading {request.name} must wait: {decision.reason}; {sizes}"
    else:
        fits = False
        message = decision.message
    return EvictionPreview(request.name, action, evict, needed, free, fits, message)


def human_bytes(count: int) -> str:
    """1.2 GB, 340 MB, 12 kB (decimal units, like `docker` and DMR)."""
    value = float(count)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class Scheduler:
    """Decides what a request for a model does, given the runners and free memory."""

    def __init__(
        self, *, max_runners: int = 4, queue_limit: int = 16, memory_check: bool = True
    ) -> None:
        self.max_runners = max(1, max_runners)
        self.queue_limit = max(0, queue_limit)
        self.memory_check = memory_check

    def decide_running(
        self, request: Request[K], runners: Sequence[RunnerView[K]]
    ) -> Decision[K] | None:
        """The decision while the model's runner is loading, loaded or stopping; None when it
        must be started, which takes `decide` and a memory reading."""
        current = next((r for r in runners if r.key == request.key), None)
        if current is not None and current.state is RunnerState.STARTING:
            return Join(request.key)
        if current is not None and current.state in _LOADED:
            if current.in_use < current.slots and current.waiting == 0:
                return Serve(request.key)
            if current.waiting >= self.queue_limit:
                return Busy(request.key, current.waiting)
            return Queue(request.key, current.waiting)
        if current is not None and current.state in (RunnerState.STOPPING, RunnerState.STOPPED):
            # STOPPED: a failed load stopped it and the pool has yet to drop it; nothing to
            # start in its place (told to start, the pool would ask again at once, forever).
            return Wait(request.key, f"{current.name} is stopping")
        return None

    def decide(
        self, request: Request[K], runners: Sequence[RunnerView[K]], resources: Resources
    ) -> Decision[K]:
        running = self.decide_running(request, runners)
        if running is not None:
            return running
        # Not running (or crashed, then replaced in place): start it.
        others = [
            r
            for r in runners
            if r.key != request.key and r.state not in (RunnerState.STOPPED, RunnerState.STOPPING)
        ]
        candidates = sorted(
            (r for r in others if r.evictable),
            key=lambda r: (r.state is not RunnerState.CRASHED, r.last_used),
        )
        over = len(others) + 1 - self.max_runners
        deficit = self._deficit(request.need, resources)
        picks = _pick(candidates, over, deficit)
        if picks is not None:
            return Start(request.key, tuple(r.key for r in picks))
        # Idle runners do not free enough: would it fit once the busy ones are done?
        fits_later = _pick(sorted(others, key=lambda r: r.last_used), over, deficit) is not None
        if not fits_later and self.memory_check:
            return Refuse(request.key, self._too_big(request, resources, others))
        if not self.memory_check and _pick(candidates, over, Need()) is not None:
            # Memory is advisory: free what idle runners hold and try.
            return Start(request.key, tuple(r.key for r in candidates), fits=False)
        busy = [r.name for r in others if not r.evictable]
        return Wait(
            request.key, f"waiting for {_names(busy) if busy else 'other runners'} to finish"
        )

    @staticmethod
    def _deficit(need: Need, resources: Resources) -> Need:
        vram_free = resources.vram_free if resources.vram_free is not None else 0
        vram = need.vram_bytes - vram_free if need.vram_bytes else 0
        return Need(max(0, need.ram_bytes - resources.ram_free), max(0, vram))

    @staticmethod
    def _too_big(request: Request[K], resources: Resources, others: Sequence[RunnerView[K]]) -> str:
        held = sum((r.need for r in others), Need())
        parts = [
            f"{request.name} needs {human_bytes(request.need.ram_bytes)} of RAM, "
            f"{human_bytes(resources.ram_free + held.ram_bytes)} can be made free"
        ]
        if request.need.vram_bytes and resources.vram_free is not None:
            parts.append(
                f"{human_bytes(request.need.vram_bytes)} of GPU memory, "
                f"{human_bytes(resources.vram_free + held.vram_bytes)} can be made free"
            )
        return (
            f"not enough memory to load {request.name}: {'; '.join(parts)} "
            "(set MODEL_RUNNER_RUNTIME_MEMORY_CHECK=0 to try anyway)"
        )


def _covers(picks: Sequence[RunnerView[K]], over: int, deficit: Need) -> bool:
    freed = sum((r.need for r in picks), Need())
    return (
        len(picks) >= over
        and freed.ram_bytes >= deficit.ram_bytes
        and freed.vram_bytes >= deficit.vram_bytes
    )


def _pick(
    candidates: Sequence[RunnerView[K]], over: int, deficit: Need
) -> list[RunnerView[K]] | None:
    """The least recently used candidates that free `over` runners and `deficit` bytes, or None.

    Taken oldest first; then any pick the others make unnecessary is kept, newest first.
    """
    picks: list[RunnerView[K]] = []
    for candidate in candidates:
        if _covers(picks, over, deficit):
            break
        picks.append(candidate)
    if not _covers(picks, over, deficit):
        return None
    for pick in reversed(list(picks)):
        rest = [p for p in picks if p is not pick]
        if _covers(rest, over, deficit):
            picks = rest
    return picks


def expired(runners: Sequence[RunnerView[K]], now: float, idle_timeout: float) -> list[K]:
    """Keys of idle runners whose keep-alive (or the idle timeout) has run out at `now`."""
    return [r.key for r in runners if _deadline(r, idle_timeout) <= now]


def next_expiry(runners: Sequence[RunnerView[K]], idle_timeout: float) -> float | None:
    """When the next idle runner expires (the clock of `last_used`), or None if none will."""
    deadlines = [_deadline(r, idle_timeout) for r in runners]
    finite = [deadline for deadline in deadlines if math.isfinite(deadline)]
    return min(finite) if finite else None


def _deadline(runner: RunnerView[K], idle_timeout: float) -> float:
    if not runner.evictable:
        return math.inf
    keep = idle_timeout if runner.keep_alive is None else runner.keep_alive
    return runner.last_used + keep if keep >= 0 else math.inf
