"""RunnerPool: the single owner of running LlamaServers; loads a model on demand and reuses it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelrunner.core.errors import CoreError
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import EngineBuildProgressed, EngineReady, RunnerStateChanged
from modelrunner.core.inference.configure import RunnerConfigs
from modelrunner.core.inference.llama_build import (
    BuildProgress,
    LlamaServerBinary,
    ensure_llama_server,
)
from modelrunner.core.inference.llama_server import (
    BundleLike,
    LlamaServer,
    sweep_stale_runtime_dirs,
)
from modelrunner.core.inference.process import ProcessState
from modelrunner.core.inference.upstream import UpstreamClient
from modelrunner.core.settings import Settings


class StoredModelLike(Protocol):
    @property
    def id(self) -> str: ...


class StoreLike(Protocol):
    """What the pool needs from ModelStore."""

    def get(self, reference: str) -> StoredModelLike: ...
    def bundle(self, reference: str) -> BundleLike: ...


@dataclass(frozen=True, slots=True)
class RunnerInfo:
    """A snapshot of one runner, for status displays and the API."""

    model_id: str
    reference: str
    """The reference of the request that loaded it."""
    state: str
    """A ProcessState value: "starting", "ready", "stopping", "stopped" or "failed"."""
    pid: int | None
    socket: str
    started_at: float | None
    """Unix seconds."""
    last_used: float
    """Unix seconds of the last acquire."""


class RunnerPool:
    """Starts at most one llama-server per stored model, on first use, and keeps it for reuse."""

    def __init__(
        self,
        settings: Settings,
        store: StoreLike,
        bus: EventBus,
        *,
        stop_grace: float = 5.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.stop_grace = stop_grace
        self.upstream = UpstreamClient()
        """The HTTP client for every runner of this pool."""
        self.configs = RunnerConfigs()
        """`_configure`d configs runners start with (context size, flags, draft model)."""
        self._runners: dict[str, LlamaServer] = {}
        self._loads: dict[str, asyncio.Task[LlamaServer]] = {}
        self._engine: LlamaServerBinary | None = None
        self._engine_lock = asyncio.Lock()
        self._closed = False
        sweep_stale_runtime_dirs()

    async def engine(self) -> LlamaServerBinary:
        """The llama-server binary, found or built once per pool."""
        async with self._engine_lock:
            if self._engine is None:

                def progress(step: BuildProgress) -> None:
                    self.bus.publish(EngineBuildProgressed(step.percent, step.line))

                self._engine = await ensure_llama_server(self.settings, progress)
                self.bus.publish(
                    EngineReady(str(self._engine.path), self._engine.source, self._engine.version)
                )
            return self._engine

    async def acquire(self, reference: str) -> LlamaServer:
        """A ready runner for `reference`, starting one if needed; concurrent callers share a load.

        Raises:
            ModelNotFound: No stored model matches `reference`.
            EngineUnavailable: There is no llama-server and none could be built.
            RunnerFailed: llama-server failed to start.
        """
        if self._closed:
            raise CoreError("the runner pool is closed")
        model = await asyncio.to_thread(self.store.get, reference)
        runner = self._runners.get(model.id)
        if runner is not None and runner.ready:
            runner.last_used = time.time()
            return runner
        load = self._loads.get(model.id)
        if load is None or load.done():
            load = asyncio.create_task(self._load(model.id, reference))
            self._loads[model.id] = load
            load.add_done_callback(self._forget_load)
        try:
            # Shielded: a caller that gives up (client disconnect) does not abort others' load.
            runner = await asyncio.shield(load)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if load.cancelled() and current is not None and current.cancelling() == 0:
                raise CoreError(f"the runner pool closed while loading {reference}") from None
            raise
        runner.last_used = time.time()
        return runner

    async def _load(self, model_id: str, reference: str) -> LlamaServer:
        previous = self._runners.pop(model_id, None)
        if previous is not None:  # it died: clean it up before starting again
            await self._stop(previous)
        binary = await self.engine()
        bundle = await asyncio.to_thread(self.store.bundle, model_id)
        config = self.configs.get(model_id)
        draft = None
        if config is not None and config.speculative is not None:
            draft = await asyncio.to_thread(self.store.bundle, config.speculative.draft_model)
        runner = LlamaServer(
            binary.path,
            bundle,
            model_id=model_id,
            reference=reference,
            llama_args=self.settings.llama_args,
            log_file=self._log_file(model_id),
            on_state=self._publish_state,
            config=config,
            draft=draft,
        )
        self._runners[model_id] = runner
        try:
            await runner.start(self.settings.load_timeout)
        except BaseException:
            self._runners.pop(model_id, None)
            raise
        return runner

    def _forget_load(self, load: asyncio.Task[LlamaServer]) -> None:
        for model_id, current in list(self._loads.items()):
            if current is load:
                del self._loads[model_id]

    def _log_file(self, model_id: str) -> Path:
        return (
            self.settings.state_dir
            / "logs"
            / f"llama-server-{model_id.removeprefix('sha256:')[:12]}.log"
        )

    def _publish_state(self, runner: LlamaServer, state: ProcessState) -> None:
        self.bus.publish(RunnerStateChanged(runner.model_id, runner.reference, state.value))

    def get(self, model_id: str) -> LlamaServer | None:
        """The runner of a model, if one is loaded or loading."""
        return self._runners.get(model_id)

    def running(self) -> list[RunnerInfo]:
        """Every runner the pool holds, oldest first."""
        return [
            RunnerInfo(
                model_id=runner.model_id,
                reference=runner.reference,
                state=runner.state.value,
                pid=runner.pid,
                socket=str(runner.socket_path),
                started_at=runner.started_at,
                last_used=runner.last_used,
            )
            for runner in self._runners.values()
        ]

    async def unload(self, model_ids: Sequence[str] | None = None) -> int:
        """Stop the runners of `model_ids` (all when None); return how many were stopped."""
        wanted = (
            list(self._runners)
            if model_ids is None
            else [m for m in model_ids if m in self._runners]
        )
        runners = [self._runners.pop(model_id) for model_id in wanted]
        await asyncio.gather(*(self._stop(runner) for runner in runners))
        return len(runners)

    async def _stop(self, runner: LlamaServer) -> None:
        await self.upstream.forget(runner)
        await runner.stop(self.stop_grace)

    async def close(self) -> None:
        """Stop every llama-server, including ones still loading, and close the HTTP client."""
        self._closed = True
        loads = list(self._loads.values())
        for load in loads:
            load.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        await self.unload()
        await self.upstream.close()
