"""RunnerPool: the single owner of running LlamaServers; carries out the Scheduler's decisions.

A request leases a runner (`async with pool.lease(reference, mode=...) as runner:`): one
llama-server per model and mode, so a model can serve chat and embeddings at once, each runner
counted on its own (limit, memory, eviction, keep-alive). The pool asks the pure `Scheduler` what
to do with a snapshot of its runners and of free memory, and does it: serve, join a load, queue
for a slot (first come, first served), stop least recently used idle runners and start, wait in
the load queue for room (first come, first served too), or refuse. Idle runners stop when their
keep-alive runs out; a runner whose llama-server dies is reported crashed and is reloaded by the
next request. What starting one takes is the Launcher's; `preload` loads one in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Collection, Sequence

from modelrunner.core.errors import (
    InsufficientMemory,
    RunnerBusy,
    RunnerFailed,
    RunnerGone,
)
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import RunnerEvicted, RunnerStateChanged
from modelrunner.core.inference.configure import RunnerConfigs
from modelrunner.core.inference.launcher import Launcher
from modelrunner.core.inference.llama_build import LlamaServerBinary
from modelrunner.core.inference.llama_server import LlamaServer, sweep_stale_runtime_dirs
from modelrunner.core.inference.load_queue import LoadQueue, Place
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.inference.preload import PRELOAD_WAIT, Preloads
from modelrunner.core.inference.process import ProcessState
from modelrunner.core.inference.runners import (
    Lease,
    Limits,
    Prepared,
    RunnerEntry,
    RunnerInfo,
    RunnerKey,
    StoreLike,
)
from modelrunner.core.inference.scheduler import (
    Busy,
    Decision,
    EvictionPreview,
    Join,
    Need,
    Queue,
    Refuse,
    Request,
    Resources,
    RunnerState,
    RunnerView,
    Scheduler,
    Serve,
    Start,
    Wait,
    expired,
    next_expiry,
    preview,
)
from modelrunner.core.inference.upstream import UpstreamClient
from modelrunner.core.references import model_name
from modelrunner.core.settings import Settings
from modelrunner.core.system.gpu import GpuSampler
from modelrunner.core.system.host import HostSampler

_CLOSED = "the model runner is shutting down; try again once it is back"  # a 503

__all__ = ["Lease", "Limits", "RunnerInfo", "RunnerKey", "RunnerPool", "StoreLike"]


class RunnerPool:
    """Starts llama-servers on demand within the runner limit and free memory; reuses, evicts."""

    def __init__(
        self,
        settings: Settings,
        store: StoreLike,
        bus: EventBus,
        *,
        stop_grace: float = 5.0,
        limits: Limits | None = None,
        memory_budget: int | None = None,
        host: HostSampler | None = None,
        gpu: GpuSampler | None = None,
    ) -> None:
        """Args:
        limits: Runner limit, idle timeout, queue bound and timeout (default: settings).
        memory_budget: Bytes of RAM the runners may use in total (default: all of it).
        host, gpu: Samplers for free memory (tests inject fakes).
        """
        self.settings = settings
        self.store = store
        self.bus = bus
        self.stop_grace = stop_grace
        self.limits = limits or Limits.from_settings(settings)
        self.scheduler = Scheduler(
            max_runners=self.limits.max_runners,
            queue_limit=self.limits.queue_limit,
            memory_check=settings.runtime_memory_check,
        )
        self.memory_budget = memory_budget
        self.host = host or HostSampler()
        self.gpu = gpu or GpuSampler()
        self.upstream = UpstreamClient()
        """The HTTP client for every runner of this pool."""
        self.configs = RunnerConfigs()
        """`_configure`d configs runners start with (context size, flags, draft model)."""
        self.launcher = Launcher(settings, store, bus, self.configs, self.gpu)
        self._runners: dict[RunnerKey, RunnerEntry] = {}
        self._loads = LoadQueue()
        """Requests waiting for room to load a model, first come first served."""
        self._preloads = Preloads(
            lambda reference, mode, wait: self.acquire(reference, mode, wait=wait),
            bus,
            wait=min(PRELOAD_WAIT, self.limits.queue_timeout),
        )
        self._changed = asyncio.Event()
        self._no_gpu = False
        self._idle_task: asyncio.Task[None] | None = None
        self._closed = False
        sweep_stale_runtime_dirs()

    async def engine(self) -> LlamaServerBinary:
        """The llama-server binary, found or built once per pool."""
        return await self.launcher.engine()

    # -- leasing ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self, reference: str, *, mode: str = COMPLETION, keep_alive: float | None = None
    ) -> AsyncIterator[LlamaServer]:
        """Hold a slot of a ready runner of `reference` in `mode` while the block runs.

        Args:
            mode: completion, embedding or reranking: which of the model's runners.
            keep_alive: Seconds the runner stays loaded once idle (0: unload after this request,
                negative: never); None keeps what it had (the idle timeout by default).

        Raises:
            ModelNotFound, EngineUnavailable, RunnerFailed: As `acquire`.
            RunnerBusy: Every slot is taken and the queue is full, or no slot freed in time.
            InsufficientMemory: The model cannot fit (with the memory check on).
        """
        held = await self.checkout(reference, mode=mode, keep_alive=keep_alive)
        try:
            yield held.runner
        except RunnerFailed as error:
            clearer = await held.explain(error)
            if clearer is error:
                raise
            raise clearer from error
        finally:
            held.release()

    async def checkout(
        self, reference: str, *, mode: str = COMPLETION, keep_alive: float | None = None
    ) -> Lease:
        """A lease on a runner of `reference` in `mode`; the caller must `release()` it (e.g.
        after streaming a response). `lease()` is the context-manager form."""
        entry = await self._admit(reference, mode, counted=True, keep_alive=keep_alive)
        assert entry.server is not None
        return Lease(entry.server, entry, self._release)

    async def acquire(
        self, reference: str, mode: str = COMPLETION, *, wait: float | None = None
    ) -> LlamaServer:
        """A ready runner of `reference` in `mode`, started if needed; concurrent callers share
        a load.

        Unlike `lease`, the request is not counted in flight: the runner may be evicted under it.

        Args:
            wait: Seconds to wait for room to load it (default: the queue timeout).

        Raises:
            ModelNotFound: No stored model matches `reference`.
            EngineUnavailable: There is no llama-server and none could be built.
            RunnerFailed: llama-server failed to start.
            RunnerBusy: No room to load it came free in time.
            InsufficientMemory: The model cannot fit (with the memory check on).
        """
        entry = await self._admit(reference, mode, counted=False, keep_alive=None, wait=wait)
        assert entry.server is not None
        return entry.server

    def preload(self, reference: str, mode: str = COMPLETION) -> asyncio.Task[bool]:
        """Load a runner of `reference` in `mode` in the background (DMR's after `_configure`):
        as `acquire`, waiting for room at most DMR's minute (or the queue timeout, if shorter);
        the task ends False, with the failure logged and published (`PreloadFailed`), when it
        could not be loaded.

        Raises:
            ModelNotFound: No stored model matches `reference`.
        """
        key, name = self._identify(reference, mode)
        return self._preloads.start(key, name)

    async def _admit(
        self,
        reference: str,
        mode: str,
        *,
        counted: bool,
        keep_alive: float | None,
        wait: float | None = None,
    ) -> RunnerEntry:
        if self._closed:
            raise RunnerGone(_CLOSED)
        self._ensure_idle_task()
        key, name = self._identify(reference, mode)
        waited = self.limits.queue_timeout if wait is None else wait
        deadline = time.monotonic() + waited
        place: Place | None = None  # in the load queue
        try:
            while True:
                if self._closed:
                    raise RunnerGone(_CLOSED)
                decision, prepared = await self._decide(key, name)
                if self._closed:  # it closed while we decided: start nothing it cannot stop
                    raise RunnerGone(_CLOSED)
                if isinstance(decision, Start) and place is None and self._loads:
                    self._loads.wake_first()  # there may be room for them too
                    decision = Wait(key, f"{len(self._loads)} requests wait to load before it")
                if place is not None and not isinstance(decision, Wait):
                    self._loads.leave(place)  # the next in line decides in turn
                    place = None
                entry = self._runners.get(key)
                if isinstance(decision, Serve) or (
                    isinstance(decision, Queue | Busy) and not counted
                ):
                    assert entry is not None
                    entry.take(counted, keep_alive, self._publish)
                    return entry
                if isinstance(decision, Join):
                    assert entry is not None
                    assert entry.load is not None
                    await self._join(entry.load, name)
                elif isinstance(decision, Start):
                    if prepared is not None:
                        self._start(key, name, prepared, decision.evict)
                elif isinstance(decision, Busy):
                    raise RunnerBusy(f"{name} is busy: {decision.waiting} requests waiting")
                elif isinstance(decision, Refuse):
                    raise InsufficientMemory(decision.message)
                elif isinstance(decision, Queue):
                    assert entry is not None
                    if await entry.wait_for_slot(deadline, waited, self._release):
                        entry.take(counted, keep_alive, self._publish, handed=True)
                        return entry
                elif isinstance(decision, Wait):
                    place = place or self._loads.join()
                    try:
                        await self._loads.wait_turn(place, deadline)
                    except TimeoutError:
                        raise RunnerBusy(
                            f"cannot load {name}: {decision.reason} "
                            f"(nothing freed up within {waited:g} s)"
                        ) from None
        finally:
            if place is not None:
                self._loads.leave(place)

    async def _decide(
        self, key: RunnerKey, name: str
    ) -> tuple[Decision[RunnerKey], Prepared | None]:
        """The scheduler's decision for a request now, and what starting the runner needs
        (read, with free memory, only when it is not running)."""
        decision = self.scheduler.decide_running(Request(key, name), self._views())
        if decision is not None:
            return decision, None
        request, resources, prepared = await self._snapshot(key, name)
        return self.scheduler.decide(request, self._views(), resources), prepared

    async def _snapshot(
        self, key: RunnerKey, name: str
    ) -> tuple[Request[RunnerKey], Resources, Prepared | None]:
        """A request for runner `key` with what it needs, and the memory free now."""
        current = self._runners.get(key)
        prepared = None
        if current is None or current.state is RunnerState.CRASHED:
            prepared = await self.launcher.prepare(key)
        resources = await self._resources()
        return Request(key, name, prepared.need if prepared else Need()), resources, prepared

    def _identify(self, reference: str, mode: str) -> tuple[RunnerKey, str]:
        """The runner key of a request and its model's name, however the request spelt it.

        As `GET /models/{name}` does, a bare name finds the one model of that repository, so
        "smollm2" reaches ai/smollm2:135M-Q4_1 (DMR's inference routes want the exact tag).
        On the loop, not a thread: the store reads models.json without a lock, once per version
        (a thread hop was half of the proxy's own share of a request's time to first token).
        """
        model = self.store.find(reference)
        return RunnerKey(model.id, mode), model_name(model.tags, model.id)

    async def _join(self, load: asyncio.Task[LlamaServer], reference: str) -> None:
        try:
            # Shielded: a caller that gives up (client disconnect) does not abort others' load.
            await asyncio.shield(load)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if load.cancelled() and current is not None and current.cancelling() == 0:
                how = "is shutting down" if self._closed else "was unloaded or removed"
                raise RunnerGone(f"{reference} {how} while it was loading") from None
            raise

    def _release(self, entry: RunnerEntry) -> None:
        if self._runners.get(entry.key) is entry and entry.hand_over():
            return  # the slot went to the first in line: nothing else changed
        entry.give_back(self._publish)
        self._notify()

    def _notify(self) -> None:
        """Wake the first request waiting for room to load, and the idle check (slot waiters
        are handed slots in order by `_release`)."""
        self._loads.wake_first()
        self._changed.set()
        self._changed = asyncio.Event()

    # -- snapshot --------------------------------------------------------------------------

    def _views(self) -> list[RunnerView[RunnerKey]]:
        return [entry.view(self.limits.idle_timeout) for entry in self._runners.values()]

    async def _resources(self) -> Resources:
        held = sum((e.need for e in self._runners.values() if e.holds_memory), Need())
        ram_free = self.host.ram_available()
        ceiling = self.memory_budget if self.memory_budget is not None else self.host.ram_total()
        ram_free = min(ram_free, ceiling - held.ram_bytes)
        vram_free: int | None = None
        if not self._no_gpu:
            sample = await self.gpu.read()
            self._no_gpu = not sample.gpus
            if sample.memory_free is not None:
                # Loading runners have not allocated yet: count what they will take.
                loading = sum(
                    e.need.vram_bytes
                    for e in self._runners.values()
                    if e.state is RunnerState.STARTING
                )
                vram_free = max(0, sample.memory_free - loading)
        return Resources(max(0, ram_free), vram_free)

    async def preview(self, reference: str, mode: str = COMPLETION) -> EvictionPreview:
        """What a request for `reference` in `mode` would do now, without doing it (for the API
        and TUI)."""
        request, resources, _ = await self._snapshot(*self._identify(reference, mode))
        views = self._views()
        return preview(self.scheduler.decide(request, views, resources), request, views, resources)

    # -- loading ---------------------------------------------------------------------------

    def _start(
        self, key: RunnerKey, name: str, prepared: Prepared, evict: Sequence[RunnerKey]
    ) -> None:
        victims = [self._runners.pop(k) for k in evict if k in self._runners]
        for victim in victims:
            reason = "limit" if victim.need == Need() else "memory"
            self._evicted(victim, reason, name)
        replaced = self._runners.get(key)
        entry = RunnerEntry(key, name, prepared)
        self._runners[key] = entry
        entry.load = asyncio.create_task(self._load(entry, prepared, replaced, victims))
        entry.load.add_done_callback(lambda load: self._loaded(entry, load))

    async def _load(
        self,
        entry: RunnerEntry,
        prepared: Prepared,
        replaced: RunnerEntry | None,
        victims: Sequence[RunnerEntry],
    ) -> LlamaServer:
        stopping = [*victims, *([replaced] if replaced is not None else [])]
        await asyncio.gather(*(self._stop(victim) for victim in stopping))
        server = await self.launcher.server(
            entry.key,
            entry.reference,
            prepared,
            on_state=lambda state: self._process_state(entry, state),
            on_load_stage=lambda stage: self._publish(entry, stage),
        )
        entry.attach(server)
        await server.start(self.settings.load_timeout)
        return server

    def _loaded(self, entry: RunnerEntry, load: asyncio.Task[LlamaServer]) -> None:
        failed = load.cancelled() or load.exception() is not None
        if failed:
            self.launcher.forget(entry.key)  # read it afresh next time
        if failed and self._runners.get(entry.key) is entry:
            del self._runners[entry.key]
        self._notify()

    def _process_state(self, entry: RunnerEntry, state: ProcessState) -> None:
        detail = entry.process_state(state)
        self._publish(entry, detail)
        if entry.state is RunnerState.CRASHED:
            self._notify()

    def _publish(self, entry: RunnerEntry, detail: str = "") -> None:
        self.bus.publish(
            RunnerStateChanged(
                entry.model_id, entry.reference, entry.state.value, detail, entry.mode
            )
        )

    def _evicted(self, entry: RunnerEntry, reason: str, for_model: str = "") -> None:
        self.bus.publish(
            RunnerEvicted(entry.model_id, entry.reference, reason, for_model, entry.mode)
        )

    # -- status and stopping -----------------------------------------------------------------

    def get(self, model_id: str, mode: str = COMPLETION) -> LlamaServer | None:
        """The llama-server of a model in a mode, if one is loaded or loading."""
        entry = self._runners.get(RunnerKey(model_id, mode))
        return None if entry is None else entry.server

    def running(self) -> list[RunnerInfo]:
        """Every runner the pool holds (loading, loaded or crashed), oldest first."""
        return [entry.info() for entry in self._runners.values()]

    @property
    def waiting_to_load(self) -> int:
        """Requests waiting for room to load a model."""
        return len(self._loads)

    async def unload(
        self,
        model_ids: Sequence[str] | None = None,
        *,
        modes: Collection[str] | None = None,
        include_busy: bool = True,
    ) -> int:
        """Stop the runners of `model_ids` (all when None) in `modes` (all when None); return
        how many were stopped.

        With `include_busy=False` runners serving or loading are left alone (DMR's unload);
        otherwise their requests fail with "was unloaded".
        """
        entries = [
            entry
            for key, entry in self._runners.items()
            if (model_ids is None or key.model_id in model_ids)
            and (modes is None or key.mode in modes)
        ]
        if not include_busy:
            entries = [e for e in entries if e.in_use == 0 and e.state is not RunnerState.STARTING]
        for entry in entries:
            del self._runners[entry.key]
        await asyncio.gather(*(self._stop(entry) for entry in entries))
        self._notify()
        return len(entries)

    async def _stop(self, entry: RunnerEntry) -> None:
        entry.wake_all()  # its queue decides again (and starts a new runner if still wanted)
        if entry.load is not None and not entry.load.done():
            entry.load.cancel()
            await asyncio.gather(entry.load, return_exceptions=True)
        if entry.server is not None:
            # Stop first: in-flight readers then see the connection end and fail cleanly;
            # closing the session first would leave them waiting for bytes forever.
            await entry.server.stop(self.stop_grace)
            await self.upstream.forget(entry.server)

    def _ensure_idle_task(self) -> None:
        if self._idle_task is None or self._idle_task.done():
            self._idle_task = asyncio.create_task(self._expire_idle())

    async def _expire_idle(self) -> None:
        """Stop idle runners whose keep-alive ran out; sleep until the next one would."""
        while not self._closed:
            changed = self._changed
            # Afresh after each stop: while one stops, another may be taken or replaced.
            while keys := expired(self._views(), time.time(), self.limits.idle_timeout):
                entry = self._runners.pop(keys[0])
                self._evicted(entry, "idle")
                await self._stop(entry)
            soonest = next_expiry(self._views(), self.limits.idle_timeout)
            timeout = None if soonest is None else max(0.0, soonest - time.time()) + 0.01
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    async def close(self) -> None:
        """Stop every llama-server, including ones still loading, and close the HTTP client."""
        self._closed = True
        self._loads.wake_all()
        await self._preloads.close()
        if self._idle_task is not None:
            self._idle_task.cancel()
            await asyncio.gather(self._idle_task, return_exceptions=True)
        await self.unload()
        await self.upstream.close()
        self.gpu.close()
