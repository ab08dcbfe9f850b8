"""Launcher: what starting a runner takes, for the pool.

The llama-server binary (found or built once), what a runner of a model in a mode needs (its
bundle, `_configure`d config, draft model and memory estimate: `Prepared`, read once and shared
by concurrent requests), and the LlamaServer itself, not yet started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from modelrunner.core.errors import CoreError
from modelrunner.core.event_bus import EventBus
from modelrunner.core.events import EngineBuildProgressed, EngineReady
from modelrunner.core.inference.configure import RunnerConfigs
from modelrunner.core.inference.devices import list_devices, offloads
from modelrunner.core.inference.llama_build import (
    BuildProgress,
    LlamaServerBinary,
    ensure_llama_server,
    resolve_llama_server,
)
from modelrunner.core.inference.llama_server import LlamaServer, build_argv
from modelrunner.core.inference.memory import estimate_for_argv
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.inference.process import ProcessState
from modelrunner.core.inference.runners import Prepared, RunnerKey, StoreLike
from modelrunner.core.log_files import ENGINE_LOG, LogFile
from modelrunner.core.settings import Settings
from modelrunner.core.system.gpu import GpuSampler


class Launcher:
    """Finds the engine, reads what each runner needs, and builds its LlamaServer."""

    def __init__(
        self,
        settings: Settings,
        store: StoreLike,
        bus: EventBus,
        configs: RunnerConfigs,
        gpu: GpuSampler,
    ) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.configs = configs
        self.gpu = gpu
        self._prepared: dict[RunnerKey, asyncio.Task[Prepared]] = {}
        self._has_gpu: bool | None = None
        self._engine: LlamaServerBinary | None = None
        self._engine_lock = asyncio.Lock()
        self.engine_log = (
            None if settings.log_dir is None else LogFile(settings.log_dir / ENGINE_LOG)
        )
        """DMR's engine log: every runner's output lines, bracket-stamped (None: not kept)."""

    async def engine(self) -> LlamaServerBinary:
        """The llama-server binary, found or built once."""
        async with self._engine_lock:
            if self._engine is None:

                def progress(step: BuildProgress) -> None:
                    self.bus.publish(EngineBuildProgressed(step.percent, step.line))

                self._engine = await ensure_llama_server(self.settings, progress)
                self.bus.publish(
                    EngineReady(str(self._engine.path), self._engine.source, self._engine.version)
                )
            return self._engine

    async def prepare(self, key: RunnerKey) -> Prepared:
        """The bundle, config and memory need of a runner; shared by concurrent requests.

        Kept between loads (a model's files never change under its ID), and read again only
        when its _configure'd config changed or its bundle went away.
        """
        task = self._prepared.get(key)
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            kept = task.result()
            config = self.configs.get(key.model_id, key.mode)
            if kept.config != config or not kept.bundle.gguf.exists():
                del self._prepared[key]
                task = None
        if task is None:
            task = asyncio.create_task(self._read(key))
            self._prepared[key] = task
        try:
            return await asyncio.shield(task)
        except BaseException:
            if task.done() and self._prepared.get(key) is task:
                del self._prepared[key]
            raise

    def forget(self, key: RunnerKey) -> None:
        """Read the runner's model afresh next time (its load failed)."""
        self._prepared.pop(key, None)

    async def _read(self, key: RunnerKey) -> Prepared:
        bundle = await asyncio.to_thread(self.store.bundle, key.model_id)
        config = self.configs.get(key.model_id, key.mode)
        draft = None
        if config is not None and config.speculative is not None:
            draft = await asyncio.to_thread(self.store.bundle, config.speculative.draft_model)
        if self._has_gpu is None:
            self._has_gpu = await self._offloads()
        gpu = self._has_gpu is not False  # unknown yet: a readable GPU takes the layers
        argv = build_argv(
            Path("llama-server"), bundle, Path("/"), self.settings.llama_args,
            mode=key.mode, config=config, draft=draft,
        )  # fmt: skip
        try:
            estimate = await asyncio.to_thread(
                estimate_for_argv, bundle.gguf, argv, mmproj=bundle.mmproj, gpu=gpu
            )
        except CoreError:
            estimate = None  # not a readable GGUF: llama-server will say more
        return Prepared(bundle, config, draft, estimate)

    async def _offloads(self) -> bool | None:
        """Whether layers go to GPU memory: a GPU we can read, and a build that can use it.

        A CPU-only build on an NVIDIA machine keeps every layer in RAM, so its estimate must too.
        None (ask again next time) while there is no binary yet to ask.
        """
        if not (await self.gpu.read()).gpus:
            return False
        try:
            binary = self._engine or await asyncio.to_thread(resolve_llama_server, self.settings)
        except CoreError:
            binary = None  # a bad LLAMA_SERVER_PATH: starting the runner will say so
        if binary is None:
            return None
        return offloads(await list_devices(binary.path))

    async def server(
        self,
        key: RunnerKey,
        name: str,
        prepared: Prepared,
        *,
        on_state: Callable[[ProcessState], None],
        on_load_stage: Callable[[str], None],
    ) -> LlamaServer:
        """The runner's llama-server, ready to `start()`; answers call the model `name`."""
        binary = await self.engine()
        return LlamaServer(
            binary.path,
            prepared.bundle,
            model_id=key.model_id,
            reference=name,
            llama_args=self.settings.llama_args,
            log_file=self.log_file(key),
            on_state=lambda _server, state: on_state(state),
            mode=key.mode,
            config=prepared.config,
            draft=prepared.draft,
            sandbox=self.settings.sandbox,
            on_load_stage=on_load_stage,
            alias=name,
            engine_log=self.engine_log,
        )

    def log_file(self, key: RunnerKey) -> Path:
        """Where a runner's llama-server output goes: one file per model and mode."""
        name = key.model_id.removeprefix("sha256:")[:12]
        if key.mode != COMPLETION:
            name += f"-{key.mode}"
        return self.settings.state_dir / "logs" / f"llama-server-{name}.log"
