"""Runners in the TUI: the Running list follows the core's events; u unloads, d removes for real."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from modelrunner.core.events import RunnerEvicted, RunnerStateChanged
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.tui.app import ModelRunnerApp, make_app
from modelrunner.tui.commands import ModelCommands
from modelrunner.tui.dialogs import ConfirmDialog
from modelrunner.tui.widgets.runner_list import RunnerList
from modelrunner.tui.widgets.status_line import StatusLine
from tests.tui.conftest import (
    DEFAULT_TAG,
    OTHER_TAG,
    CannedRunner,
    models_shown,
    reply_done,
    wait_until,
)

SIZE = (120, 36)


def shown(runners: RunnerList) -> str:
    """The list's text as it renders."""
    console = Console(width=58, record=True)
    console.print(runners.content)
    return console.export_text()


class RecordingRunner(CannedRunner):
    """CannedRunner that notes the unloads it is asked for, then does them for real."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.unloads: list[list[str] | None] = []

    async def unload(
        self, references: Sequence[str] | None = None, *, include_busy: bool = True
    ) -> int:
        self.unloads.append(list(references) if references is not None else None)
        return await super().unload(references, include_busy=include_busy)


async def model_id(runner: ModelRunner, reference: str) -> str:
    """A stored model's ID."""
    return (await runner.get_model(reference)).id


class TestRunnerList:
    async def test_states_from_events(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            runners = screen.runner_list
            assert runners.has_class("-empty")
            smol, tiny = await model_id(runner, DEFAULT_TAG), await model_id(runner, OTHER_TAG)

            runner.bus.publish(RunnerStateChanged(smol, DEFAULT_TAG, "starting"))
            await wait_until(pilot, lambda: smol in runners.model_ids)
            assert not runners.has_class("-empty")
            assert "smollm2:135M-Q4_1" in shown(runners)
            assert "loading…" in shown(runners)

            runner.bus.publish(RunnerStateChanged(smol, DEFAULT_TAG, "ready"))
            runner.bus.publish(RunnerStateChanged(tiny, OTHER_TAG, "crashed", "exit 134\nabort"))
            await wait_until(pilot, lambda: len(runners.runners) == 2)
            text = shown(runners)
            assert "ready" in text
            assert "crashed" in text
            assert "abort" in text
            assert runners.border_subtitle == "2 models"
            assert screen.table.runner_states[smol] == "ready"

            runner.bus.publish(RunnerEvicted(tiny, OTHER_TAG, "idle"))
            runner.bus.publish(RunnerStateChanged(smol, DEFAULT_TAG, "stopped"))
            await wait_until(pilot, lambda: runners.runners == ())
            assert runners.has_class("-empty")
            status = screen.query_one(StatusLine)
            assert status.text == "Unloaded tiny-llama:F16: idle past its keep-alive."

    async def test_a_model_in_two_modes_has_two_rows(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            runners = screen.runner_list
            smol = await model_id(runner, DEFAULT_TAG)
            runner.bus.publish(RunnerStateChanged(smol, DEFAULT_TAG, "ready"))
            runner.bus.publish(RunnerStateChanged(smol, DEFAULT_TAG, "starting", mode="embedding"))
            await wait_until(pilot, lambda: len(runners.runners) == 2)
            lines = [line for line in shown(runners).splitlines() if "smollm2" in line]
            assert len(lines) == 2
            assert "embedding" in lines[1]
            assert "embedding" not in lines[0]
            assert runners.border_subtitle == "1 model"
            assert screen.table.runner_states[smol] == "ready"  # chat's runner, not embedding's

            runner.bus.publish(RunnerEvicted(smol, DEFAULT_TAG, "idle", mode="embedding"))
            await wait_until(pilot, lambda: len(runners.runners) == 1)
            assert runners.runners[0].mode == "completion"
            status = screen.query_one(StatusLine)
            assert (
                status.text == "Unloaded smollm2:135M-Q4_1 (embedding): idle past its keep-alive."
            )

    async def test_u_unloads_the_highlighted_model(self, two_models: Settings) -> None:
        runner = RecordingRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("u")  # in the prompt, u is a letter
            assert runner.unloads == []
            await pilot.press("shift+tab", "down", "u")
            await wait_until(pilot, lambda: runner.unloads == [[OTHER_TAG]])
            status = screen.query_one(StatusLine)
            await wait_until(pilot, lambda: status.text == "tiny-llama:F16 is not loaded.")


class TestRemoving:
    async def test_d_asks_then_removes_for_real(self, two_models: Settings) -> None:
        runner = ModelRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("shift+tab", "down", "d")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press("n")  # no: nothing happens
            await wait_until(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
            assert len(await runner.list_models()) == 2

            await pilot.press("delete")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.click("#confirm-ok")
            await wait_until(pilot, lambda: screen.table.row_count == 1)
            stored = await runner.list_models()
            assert [model.tags for model in stored] == [("docker.io/" + DEFAULT_TAG,)]
            assert screen.query_one(StatusLine).text == "Removed tiny-llama:F16."

    async def test_remove_from_the_palette(self, two_models: Settings) -> None:
        runner = ModelRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("ctrl+p", *"remove tiny")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press("y")
            await wait_until(pilot, lambda: screen.table.row_count == 1)
            assert len(await runner.list_models()) == 1


async def test_the_palette_offers_one_unload_per_loaded_model(two_models: Settings) -> None:
    """A model under two tags has one llama-server: one "Unload" entry, under the runner's name."""
    runner = RecordingRunner(two_models)
    await runner.tag_model(DEFAULT_TAG, "ai/second-name:v1")
    app = make_app(runner, two_models)
    async with app.run_test(size=SIZE) as pilot:
        screen = await models_shown(pilot, count=3)
        smol = await model_id(runner, DEFAULT_TAG)
        runner.bus.publish(RunnerStateChanged(smol, DEFAULT_TAG, "ready"))
        await wait_until(pilot, lambda: smol in screen.runner_list.model_ids)

        entries = ModelCommands(screen)._entries()
        unloads = [(title, action) for title, _, action in entries if title.startswith("Unload")]
        assert [title for title, _ in unloads] == ["Unload smollm2:135M-Q4_1"]
        unloads[0][1]()
        await wait_until(pilot, lambda: runner.unloads == [[smol]])


async def test_a_real_runner_shows_its_pid_and_unloads(
    llama_server: Path, two_models: Settings
) -> None:
    """A real llama-server: it is listed with its pid while loaded, and u stops it."""
    runner = ModelRunner(two_models)
    app: ModelRunnerApp = make_app(runner, two_models)
    async with app.run_test(size=SIZE) as pilot:
        screen = await models_shown(pilot)
        await pilot.press(*"hi", "enter")
        await reply_done(pilot, within=180)
        runners = screen.runner_list
        await wait_until(pilot, lambda: len(runners.runners) == 1)
        info = runner.running()[0]
        row: Any = runners.runners[0]
        assert row.pid == info.pid
        assert f"pid {info.pid}" in shown(runners)
        await pilot.press("shift+tab", "u")
        await wait_until(pilot, lambda: runner.running() == [], within=30)
        await wait_until(pilot, lambda: runners.runners == (), within=30)
