"""What the app looks like, per state: real runner and store on tmp dirs, fixed size, no clocks
(and canned CPU/RAM/GPU readings, so no live number reaches a baseline)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from modelrunner.core.settings import Settings
from modelrunner.tui.app import make_app
from modelrunner.tui.dialogs import PullDialog
from tests.gguf_factory import write_tiny_gguf
from tests.tui.conftest import (
    CannedRunner,
    PullingRunner,
    models_shown,
    readings_shown,
    reply_done,
    wait_until,
)

SIZE = (120, 36)

SnapCompare = Any
"""pytest-textual-snapshot's fixture (its type is not exported)."""


class TestFirstScreen:
    def test_two_models_default_preselected(
        self, snap_compare: SnapCompare, two_models: Settings
    ) -> None:
        """Two stored models; the default one is picked and the prompt has the cursor."""
        app = make_app(CannedRunner(two_models), two_models)

        async def run_before(pilot: Pilot[Any]) -> None:
            await readings_shown(pilot)
            await models_shown(pilot)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)

    def test_empty_store(self, snap_compare: SnapCompare, settings: Settings) -> None:
        """No models: the store says so and the chat explains how to add one."""
        app = make_app(CannedRunner(settings), settings)

        async def run_before(pilot: Pilot[Any]) -> None:
            await readings_shown(pilot)
            await models_shown(pilot, count=0)
            await pilot.pause(0.1)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


class TestChat:
    def test_one_turn_answered(self, snap_compare: SnapCompare, two_models: Settings) -> None:
        """One question and the streamed answer, rendered as Markdown."""
        runner = CannedRunner(
            two_models, reply="Hello! Here is a **bold** word and a list:\n\n- one\n- two"
        )
        app = make_app(runner, two_models)

        async def run_before(pilot: Pilot[Any]) -> None:
            await readings_shown(pilot)
            await models_shown(pilot)
            await pilot.press(*"Say hello", "enter")
            await reply_done(pilot)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


class TestPulls:
    def test_one_pull_at_40_percent(
        self, snap_compare: SnapCompare, two_models: Settings, tmp_path: Path
    ) -> None:
        """A resumed pull at 40 % of 1 GiB at 5 MiB/s: numbers from fixed events, no clock."""
        runner = PullingRunner(two_models, write_tiny_gguf(tmp_path / "pulled.gguf"))
        app = make_app(runner, two_models)

        async def run_before(pilot: Pilot[Any]) -> None:
            await readings_shown(pilot)
            screen = await models_shown(pilot)
            screen.pull_list.quiet_after = math.inf  # the speed must not go quiet mid-snapshot
            await pilot.press("ctrl+o", *"gemma3", "enter")
            await wait_until(
                pilot,
                lambda: [view.state for view in screen.pull_list.views.values()] == ["downloading"],
            )
            await pilot.pause(0.1)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)

    def test_pull_dialog_with_an_invalid_name(
        self, snap_compare: SnapCompare, two_models: Settings
    ) -> None:
        """Upper case outside hf.co: the error shows inline and Pull is disabled."""
        app = make_app(CannedRunner(two_models), two_models)

        async def run_before(pilot: Pilot[Any]) -> None:
            await readings_shown(pilot)
            await models_shown(pilot)
            await pilot.press("ctrl+o", *"Gemma3:4B")
            await wait_until(pilot, lambda: isinstance(app.screen, PullDialog))
            await pilot.pause(0.1)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
