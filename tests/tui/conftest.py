"""TUI fixtures: a real ModelRunner on tmp dirs with tiny models; baselines in snapshots/."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import gguf
import pytest
import pytest_textual_snapshot  # type: ignore[import-untyped]
from textual.css.query import NoMatches
from textual.pilot import Pilot
from textual.widgets import Input

from modelrunner.core.errors import CoreError
from modelrunner.core.events import (
    PullFailed,
    PullFinished,
    PullProgressed,
    RunnerStateChanged,
    SystemSampled,
)
from modelrunner.core.references import parse_reference
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore, StoredModel
from modelrunner.core.system.gpu import GpuSample
from modelrunner.core.system.host import HostSample, ProcessSample
from modelrunner.tui.app import ModelRunnerApp
from modelrunner.tui.screens.chat import ChatScreen
from modelrunner.tui.widgets.gauges import SystemGauges
from tests.gguf_factory import write_tiny_gguf

SNAPSHOTS = Path(__file__).parents[2] / "snapshots"
"""Baselines live in the top-level snapshots/<test_file_stem>/<test_name>.svg."""

DEFAULT_TAG = "ai/smollm2:135M-Q4_1"
"""The default model's tag; a tiny GGUF stands in for it so the app preselects it."""
OTHER_TAG = "ai/tiny-llama:F16"
"""The second stored model."""


@classmethod  # type: ignore[misc]
def _snapshot_dirname(cls: type, *, test_location: Any) -> str:
    return str(SNAPSHOTS / test_location.basename)


pytest_textual_snapshot.SVGImageExtension.dirname = _snapshot_dirname


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep text cursors lit: a blink caught mid-way made a snapshot flip between two images."""

    def stay_visible(self: Input) -> None:
        self._cursor_visible = True

    monkeypatch.setattr(Input, "_toggle_cursor", stay_visible)


@pytest.fixture
def two_models(settings: Settings, tmp_path: Path) -> Settings:
    """Settings whose store holds two tiny models, one of them under the default model's tag."""
    store = ModelStore(settings.models_path)
    q4 = write_tiny_gguf(tmp_path / "q4.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q4_1, ctx=2048)
    f16 = write_tiny_gguf(tmp_path / "f16.gguf", file_type=gguf.LlamaFileType.MOSTLY_F16, seed=1)
    store.package_gguf(q4, DEFAULT_TAG)
    store.package_gguf(f16, OTHER_TAG)
    return settings


GIB = 1 << 30
MIB = 1 << 20

NO_GPU = GpuSample(reason="No NVIDIA GPU (NVML library not found)")
"""What a machine without an NVIDIA GPU reads."""


def canned_readings(
    count: int = 40,
    gpus: GpuSample = NO_GPU,
    processes: dict[int, ProcessSample] | None = None,
) -> list[SystemSampled]:
    """`count` fixed readings: CPU in a slow wave around 35 %, 12-13 of 32 GiB of RAM in use."""
    readings = []
    for index in range(count):
        cpu = round(35 + 25 * math.sin(index / 5), 1)
        used = 12 * GIB + index * 24 * MIB
        host = HostSample(cpu, 8, 32 * GIB, 32 * GIB - used, dict(processes or {}))
        readings.append(SystemSampled(host, gpus))
    return readings


class CannedRunner(ModelRunner):
    """The real runner and store, but chat answers with canned text instead of a llama-server,
    and the system readings are canned too (no live number may reach a snapshot)."""

    def __init__(self, settings: Settings, reply: str = "Hello from a **canned** reply.") -> None:
        super().__init__(settings)
        self.readings_script: list[SystemSampled] = canned_readings()
        """What sample_system yields, at once; then it waits for good."""
        self.readings_held = asyncio.Event()
        """Cleared: sample_system waits for it before yielding (set: no wait)."""
        self.readings_held.set()
        self.reply = reply
        """What every chat answers, streamed a word at a time."""
        self.delay = 0.0
        """Seconds to wait before each word (a slow model, to test Esc)."""
        self.chats: list[tuple[str, list[dict[str, Any]]]] = []
        """Each chat call: the reference and a copy of the messages."""

    async def chat(
        self, reference: str, messages: list[dict[str, Any]], **options: Any
    ) -> AsyncIterator[str]:
        self.chats.append((reference, [dict(message) for message in messages]))
        model = await self.get_model(reference)
        self.bus.publish(RunnerStateChanged(model.id, reference, "ready"))
        for index, word in enumerate(self.reply.split(" ")):
            await asyncio.sleep(self.delay)
            yield word if index == 0 else f" {word}"

    async def sample_system(self, interval: float = 1.0) -> AsyncIterator[SystemSampled]:
        await self.readings_held.wait()
        for sample in self.readings_script:
            self.bus.publish(sample)
            yield sample
        await asyncio.Event().wait()  # no more readings, as a real sampler between two


def pull_at_40_percent(reference: str) -> list[PullProgressed]:
    """A pull resumed from a partial file, then at 40 % of 1 GiB, 5 MiB/s: fixed numbers, no clock.

    The GGUF layer had 96 MiB on disk from an earlier run; the licence layer was stored already.
    """
    total = GIB
    gguf_size, licence_size = GIB - 4096, 4096
    gguf, licence = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    pulled = int(0.4 * GIB)
    at_start = 96 * MIB + licence_size
    speed = 5 * MIB
    return [
        PullProgressed(reference, gguf, gguf_size, 96 * MIB, total, at_start, "queued"),
        PullProgressed(reference, licence, licence_size, licence_size, total, at_start, "done"),
        PullProgressed(
            reference, gguf, gguf_size, pulled - licence_size, total, pulled, "downloading",
            speed=speed, average_speed=speed, eta=(total - pulled) / speed,
        ),
    ]  # fmt: skip


class PullingRunner(CannedRunner):
    """CannedRunner whose pull publishes scripted events on the real bus, then stores a tiny GGUF.

    The network is not under test here: the events are what the distribution code publishes.
    """

    def __init__(self, settings: Settings, gguf: Path) -> None:
        super().__init__(settings)
        self.gguf = gguf
        """What a successful pull stores under the reference."""
        self.release = asyncio.Event()
        """Set it to let the pulls finish (or fail)."""
        self.failure: CoreError | None = None
        """Raise this (after publishing PullFailed) instead of storing the model."""
        self.pulled: list[str] = []
        """Each reference pull() was called with."""
        self.cancelled: list[str] = []
        """Each reference cancel_pull() was called with."""

    async def pull(
        self, reference: str, *, on_progress: Any = None, token: str | None = None
    ) -> StoredModel:
        key = parse_reference(reference).normalized
        self.pulled.append(key)
        for event in pull_at_40_percent(key):
            self.bus.publish(event)
            await asyncio.sleep(0)
        await self.release.wait()
        if self.failure is not None:
            self.bus.publish(PullFailed(key, self.failure.message, self.failure.status))
            raise self.failure
        model = await self.package_model(self.gguf, key)  # publishes ModelsChanged
        self.bus.publish(PullFinished(key, model.id, cached=False, size="1.00GiB"))
        return model

    async def cancel_pull(self, reference: str) -> bool:
        self.cancelled.append(parse_reference(reference).normalized)
        return True


async def wait_until(pilot: Pilot[Any], condition: Callable[[], bool], within: float = 10) -> None:
    """Let the app run until `condition()` holds; fail the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not _holds(condition):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {condition}")
        await pilot.pause(0.02)


def _holds(condition: Callable[[], bool]) -> bool:
    try:
        return condition()
    except NoMatches:  # not composed yet
        return False


def chat_screen(app: ModelRunnerApp) -> ChatScreen:
    """The app's chat screen."""
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def models_shown(pilot: Pilot[Any], count: int = 2) -> ChatScreen:
    """Wait until the models table lists `count` rows; returns the chat screen."""
    app = pilot.app
    assert isinstance(app, ModelRunnerApp)
    await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
    screen = chat_screen(app)
    await wait_until(pilot, lambda: screen.table.row_count == count and screen.is_listed)
    await pilot.pause()
    return screen


async def reply_done(pilot: Pilot[Any], turn: int = 1, within: float = 60) -> ChatScreen:
    """Wait until the reply to prompt number `turn` has finished or failed."""
    app = pilot.app
    assert isinstance(app, ModelRunnerApp)
    screen = chat_screen(app)
    await wait_until(pilot, lambda: screen.turn >= turn and not screen.generating, within)
    # Never wait_for_complete() on everything: the core-events pump runs for the app's life.
    chat_workers = [worker for worker in app.workers if worker.group == "chat"]
    if chat_workers:
        await app.workers.wait_for_complete(chat_workers)
    await pilot.pause()
    return screen


async def readings_shown(pilot: Pilot[Any]) -> SystemGauges:
    """Wait until the System pane has shown every canned reading; returns the pane."""
    app = pilot.app
    assert isinstance(app, ModelRunnerApp)
    runner = app.runner
    assert isinstance(runner, CannedRunner)
    count = len(runner.readings_script)
    await wait_until(pilot, lambda: app.screen.query_one(SystemGauges).samples_shown == count)
    await pilot.pause()
    return app.screen.query_one(SystemGauges)
