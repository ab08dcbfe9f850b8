"""The pool's record of each runner (state, requests in flight and queued, keep-alive), its key,
Lease and RunnerInfo.

A runner is one llama-server for one model in one mode (`RunnerKey`). Requests that find every
slot of a runner taken wait in its queue, first come first served: a finishing request hands its
slot straight to the first in line, so nobody overtakes (see `RunnerEntry.hand_over`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from modelrunner.core.errors import RunnerBusy, RunnerFailed
from modelrunner.core.inference.configure import RunnerConfig
from modelrunner.core.inference.llama_server import BundleLike, LlamaServer
from modelrunner.core.inference.memory import DEFAULT_SLOTS, MemoryEstimate, runner_slots
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.inference.process import ProcessState
from modelrunner.core.inference.scheduler import Need, RunnerState, RunnerView
from modelrunner.core.settings import Settings

_PROCESS_STATES = {
    ProcessState.STARTING: RunnerState.STARTING,
    ProcessState.READY: RunnerState.READY,
    ProcessState.STOPPING: RunnerState.STOPPING,
    ProcessState.STOPPED: RunnerState.STOPPED,
    ProcessState.FAILED: RunnerState.CRASHED,
}


_LOADED = (RunnerState.READY, RunnerState.BUSY, RunnerState.IDLE)


@dataclass(frozen=True, slots=True, order=True)
class RunnerKey:
    """Which runner: one llama-server per model and mode (DMR's key, less backend and draft)."""

    model_id: str
    mode: str = COMPLETION

    @property
    def label(self) -> str:
        """The key as one string (GPU attribution, log names): the model ID, with "/<mode>"
        for any mode but completion."""
        return self.model_id if self.mode == COMPLETION else f"{self.model_id}/{self.mode}"


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    """A snapshot of one runner, for status displays and the API (`/engines/ps`)."""

    model_id: str
    reference: str
    """The model's name: its first tag, normalised, as `GET /v1/models` lists it."""
    state: str
    """A RunnerState value: starting, ready, busy, idle, stopping, stopped or crashed."""
    pid: int | None
    socket: str
    started_at: float | None
    """Unix seconds."""
    last_used: float
    """Unix seconds when a request last took or gave back the runner."""
    in_use: int = 0
    """Requests in flight."""
    loading: bool = False
    keep_alive: float | None = None
    """Seconds it stays loaded once idle, if set (0: unload when idle, negative: never)."""
    mode: str = COMPLETION
    """completion, embedding or reranking: what the runner's llama-server was started for."""
    memory_bytes: int = 0
    """Estimated RAM + GPU memory (0 when the GGUF could not be read)."""
    vram_bytes: int = 0
    """The GPU part of memory_bytes (0 when everything runs on the CPU)."""
    slots: int = DEFAULT_SLOTS
    """Requests llama-server serves at once."""
    waiting: int = 0
    """Requests queued for a slot."""
    detail: str = ""
    """Why it crashed, when it did."""

    @property
    def key(self) -> RunnerKey:
        return RunnerKey(self.model_id, self.mode)


@dataclass(frozen=True, slots=True)
class Prepared:
    """What starting a model needs, read once: its bundle, config, draft and memory estimate."""

    bundle: BundleLike
    config: RunnerConfig | None
    draft: BundleLike | None
    estimate: MemoryEstimate | None

    @property
    def need(self) -> Need:
        if self.estimate is None:
            return Need()
        return Need(self.estimate.ram_bytes, self.estimate.vram_bytes)


Publish = Callable[["RunnerEntry"], None]


class RunnerEntry:
    """One runner as the pool tracks it, from the decision to start it until it is stopped."""

    def __init__(self, key: RunnerKey, name: str, prepared: Prepared) -> None:
        """Args:
        name: The model's name (`references.model_name`), however the request spelt it.
        """
        self.key = key
        self.model_id = key.model_id
        self.mode = key.mode
        self.reference = name
        self.need = prepared.need
        self.server: LlamaServer | None = None
        self.load: asyncio.Task[LlamaServer] | None = None
        self.state = RunnerState.STARTING
        self.in_use = 0
        self.queue: deque[asyncio.Future[bool]] = deque()
        """Requests waiting for a slot, first come first; each learns True (a slot is theirs)
        or False (the runner went away: decide again)."""
        self.slots = DEFAULT_SLOTS
        self.last_used = time.time()
        self.keep_alive = prepared.config.keep_alive if prepared.config is not None else None
        self.configured_keep_alive = self.keep_alive
        """What a request without its own keep_alive gets (from _configure, else the default)."""
        self.detail = ""

    @property
    def holds_memory(self) -> bool:
        return self.state is not RunnerState.CRASHED

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self.queue)

    def enqueue(self) -> asyncio.Future[bool]:
        """A place at the back of the queue; `hand_over` or `wake_all` settles it."""
        place: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.queue.append(place)
        return place

    def leave(self, place: asyncio.Future[bool]) -> bool:
        """A waiter gives up its place; True if a slot had been handed to it already (the
        caller must then pass it on)."""
        with contextlib.suppress(ValueError):
            self.queue.remove(place)
        return place.done() and not place.cancelled() and place.result()

    async def wait_for_slot(
        self, deadline: float, waited: float, pass_on: Callable[[RunnerEntry], None]
    ) -> bool:
        """Wait in line for a slot: True once one is handed over, False when the runner went
        away (decide again). A waiter handed a slot as it leaves `pass_on`s it.

        Raises:
            RunnerBusy: No slot came free by `deadline` (time.monotonic(); `waited` seconds).
        """
        place = self.enqueue()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await asyncio.shield(place)
        except BaseException as error:
            waiting = self.waiting
            if self.leave(place):  # handed a slot while leaving: the next in line gets it
                pass_on(self)
            if isinstance(error, TimeoutError):
                raise RunnerBusy(
                    f"{self.reference} is busy: {waiting} requests waiting "
                    f"(nothing freed up within {waited:g} s)"
                ) from None
            raise

    def hand_over(self) -> bool:
        """Give the slot of a finishing request to the first waiter, if any (`in_use` stays)."""
        if self.state not in _LOADED:
            return False
        while self.queue:
            place = self.queue.popleft()
            if not place.done():
                place.set_result(True)
                self.last_used = time.time()
                return True
        return False

    def wake_all(self) -> None:
        """The runner crashed or is going away: every waiter decides again."""
        while self.queue:
            place = self.queue.popleft()
            if not place.done():
                place.set_result(False)

    def attach(self, server: LlamaServer) -> None:
        self.server = server
        self.slots = runner_slots(server.argv)

    def process_state(self, state: ProcessState) -> str:
        """Follow llama-server's process state; returns the detail to publish with it."""
        new = _PROCESS_STATES[state]
        if new is RunnerState.READY and self.in_use:
            new = RunnerState.BUSY
        self.state = new
        if new is RunnerState.CRASHED:
            self.wake_all()
        if new is RunnerState.CRASHED and self.server is not None:
            status = self.server.process.returncode
            tail = "\n".join(self.server.tail(5))
            self.detail = f"llama-server exited with status {status}" + (
                f":\n{tail}" if tail else ""
            )
            return self.detail
        return ""

    def take(
        self, counted: bool, keep_alive: float | None, publish: Publish, *, handed: bool = False
    ) -> None:
        """A request starts using the runner (`handed`: with a slot `hand_over` gave it)."""
        self.last_used = time.time()
        if counted:  # each request sets it, as Ollama: one without keep_alive gets the default
            self.keep_alive = self.configured_keep_alive if keep_alive is None else keep_alive
        if counted and not handed:
            self.in_use += 1
            if self.state in (RunnerState.READY, RunnerState.IDLE):
                self.state = RunnerState.BUSY
                publish(self)

    def give_back(self, publish: Publish) -> None:
        """A request is done with the runner."""
        self.in_use = max(0, self.in_use - 1)
        self.last_used = time.time()
        if self.in_use == 0 and self.state is RunnerState.BUSY:
            self.state = RunnerState.IDLE
            publish(self)

    def view(self, idle_timeout: float) -> RunnerView[RunnerKey]:
        """What the scheduler needs to know of this runner."""
        return RunnerView(
            key=self.key,
            name=self.reference,
            state=self.state,
            in_use=self.in_use,
            slots=self.slots,
            waiting=self.waiting,
            last_used=self.last_used,
            need=self.need if self.holds_memory else Need(),
            keep_alive=self.keep_alive,
        )

    def info(self) -> RunnerInfo:
        server = self.server
        return RunnerInfo(
            model_id=self.model_id,
            reference=self.reference,
            state=self.state.value,
            pid=server.pid if server is not None else None,
            socket=str(server.socket_path) if server is not None else "",
            started_at=server.started_at if server is not None else None,
            last_used=self.last_used,
            in_use=self.in_use,
            loading=self.state is RunnerState.STARTING,
            keep_alive=self.keep_alive,
            mode=self.mode,
            memory_bytes=self.need.ram_bytes + self.need.vram_bytes,
            vram_bytes=self.need.vram_bytes,
            slots=self.slots,
            waiting=self.waiting,
            detail=self.detail,
        )


class Lease:
    """A slot of a runner held by one request; `release()` gives it back (idempotent)."""

    def __init__(
        self, runner: LlamaServer, entry: RunnerEntry, on_release: Callable[[RunnerEntry], None]
    ) -> None:
        self.runner = runner
        self._entry = entry
        self._on_release = on_release
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._on_release(self._entry)

    async def explain(self, error: RunnerFailed) -> RunnerFailed:
        """A clearer error when the request failed because llama-server died under it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runner.process.wait(), 1.0)
        if self.runner.process.alive or self._entry.state is not RunnerState.CRASHED:
            return error
        return RunnerFailed(
            f"llama-server for {self.runner.reference} crashed while serving this request "
            f"({self._entry.detail or 'no exit status'}); the next request reloads it"
        )


class StoredModelLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def tags(self) -> Sequence[str]: ...


class StoreLike(Protocol):
    """What the pool needs from ModelStore."""

    def get(self, reference: str) -> StoredModelLike: ...
    def find(self, reference: str) -> StoredModelLike: ...
    def bundle(self, reference: str) -> BundleLike: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """The pool's scheduling knobs."""

    max_runners: int
    idle_timeout: float
    """Seconds an idle runner stays loaded unless its keep_alive says otherwise."""
    queue_limit: int
    """Requests that may wait for a slot of one busy runner."""
    queue_timeout: float
    """Seconds a request waits for a slot, or for room to load, before a 503."""

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_runners=settings.max_runners,
            idle_timeout=settings.idle_timeout,
            queue_limit=settings.queue_limit,
            queue_timeout=settings.queue_timeout,
        )
