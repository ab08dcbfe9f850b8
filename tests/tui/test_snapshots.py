"""What the app looks like, per state: real runner and store on tmp dirs, fixed size, no clocks."""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot

from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.tui.app import make_app
from tests.tui.conftest import CannedRunner, models_shown, reply_done

SIZE = (120, 36)

SnapCompare = Any
"""pytest-textual-snapshot's fixture (its type is not exported)."""


class TestFirstScreen:
    def test_two_models_default_preselected(
        self, snap_compare: SnapCompare, two_models: Settings
    ) -> None:
        """Two stored models; the default one is picked and the prompt has the cursor."""
        app = make_app(ModelRunner(two_models), two_models)

        async def run_before(pilot: Pilot[Any]) -> None:
            await models_shown(pilot)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)

    def test_empty_store(self, snap_compare: SnapCompare, settings: Settings) -> None:
        """No models: the store says so and the chat explains how to add one."""
        app = make_app(ModelRunner(settings), settings)

        async def run_before(pilot: Pilot[Any]) -> None:
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
            await models_shown(pilot)
            await pilot.press(*"Say hello", "enter")
            await reply_done(pilot)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
