"""Drive the app with Pilot: pick a model, chat, stop, start over, see errors and core news."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.message import Message
from textual.widget import Widget

from modelrunner.core.events import DefaultModelProgressed, EngineBuildProgressed
from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.tui.app import make_app
from modelrunner.tui.messages import ReplyFailed, ReplyStreamed
from modelrunner.tui.widgets.prompt import PromptInput
from modelrunner.tui.widgets.status_line import StatusLine
from modelrunner.tui.widgets.transcript import ReplyTurn, UserTurn
from tests.gguf_factory import write_tiny_gguf
from tests.tui.conftest import (
    DEFAULT_TAG,
    OTHER_TAG,
    CannedRunner,
    models_shown,
    reply_done,
    wait_until,
)

SIZE = (120, 36)


def focused(app: App[None]) -> Widget | None:
    """The focused widget (a call, so mypy does not carry narrowing across key presses)."""
    return app.focused


def replies(app: Any) -> list[ReplyTurn]:
    """The model's replies on show."""
    return list(app.screen.query(ReplyTurn))


class TestPickingAModel:
    async def test_default_model_is_preselected(self, two_models: Settings) -> None:
        app = make_app(CannedRunner(two_models), two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            assert screen.chat_model is not None
            assert screen.chat_model.reference == DEFAULT_TAG
            assert focused(app) is screen.prompt.input

    async def test_arrows_and_enter_pick_another_model(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("shift+tab")  # from the prompt back to the models table
            assert focused(app) is screen.table
            await pilot.press("down", "enter")
            assert screen.chat_model is not None
            assert screen.chat_model.reference == OTHER_TAG
            assert focused(app) is screen.prompt.input
            await pilot.press(*"hi", "enter")
            await reply_done(pilot)
            assert runner.chats[0][0] == OTHER_TAG


class TestChatting:
    async def test_the_conversation_is_sent_each_turn(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models, reply="Hello from the canned model.")
        messages: list[Message] = []
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await models_shown(pilot)
            await pilot.press(*"first", "enter")
            await reply_done(pilot, turn=1)
            await pilot.press(*"second", "enter")
            screen = await reply_done(pilot, turn=2)

            assert [turn.text for turn in screen.query(UserTurn)] == ["first", "second"]
            assert [reply.text for reply in replies(app)] == ["Hello from the canned model."] * 2
            assert runner.chats[1] == (
                DEFAULT_TAG,
                [
                    {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "Hello from the canned model."},
                    {"role": "user", "content": "second"},
                ],
            )
            streamed = [m for m in messages if isinstance(m, ReplyStreamed)]
            assert len(streamed) == 10  # five words per reply, each shown as it arrived

    async def test_escape_stops_the_reply_and_keeps_what_arrived(
        self, two_models: Settings
    ) -> None:
        runner = CannedRunner(two_models, reply=" ".join(["word"] * 200))
        runner.delay = 0.02
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press(*"talk", "enter")
            await wait_until(pilot, lambda: bool(replies(app)) and bool(replies(app)[0].text))
            await pilot.press("escape")
            await reply_done(pilot)
            reply = replies(app)[0]
            assert 0 < len(reply.text.split()) < 200
            assert "Stopped." in str(reply.query_one(".turn--status").render())
            assert screen.conversation[-1] == {"role": "assistant", "content": reply.text}

    async def test_ctrl_n_starts_a_new_chat(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press(*"hello", "enter")
            await reply_done(pilot)
            await pilot.press("ctrl+n")
            await pilot.pause()
            assert screen.conversation == []
            assert screen.transcript.turns == []
            await pilot.press(*"again", "enter")
            await reply_done(pilot, turn=3)
            assert runner.chats[-1][1] == [{"role": "user", "content": "again"}]

    async def test_a_blank_prompt_is_not_sent(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models)
        messages: list[Message] = []
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await models_shown(pilot)
            await pilot.press("space", "enter")
            await pilot.pause()
            assert not any(isinstance(m, PromptInput.Submitted) for m in messages)
            assert runner.chats == []


class TestErrors:
    async def test_a_model_removed_behind_the_apps_back(self, two_models: Settings) -> None:
        """The real runner raises ModelNotFound; the reply says so in a sentence."""
        runner = ModelRunner(two_models)
        messages: list[Message] = []
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await models_shown(pilot)
            runner.store.remove(DEFAULT_TAG, force=True)
            await pilot.press(*"anyone there?", "enter")
            await reply_done(pilot)

            [failure] = [m for m in messages if isinstance(m, ReplyFailed)]
            assert "not found" in failure.message
            reply = replies(app)[0]
            assert reply.has_class("-failed")
            assert failure.message in str(reply.query_one(".turn--status").render())
            assert "Traceback" not in failure.message
            assert screen.conversation == []  # the unanswered question is not resent
            assert app.is_running

    async def test_a_llama_server_that_dies_on_start(
        self, two_models: Settings, tmp_path: Path
    ) -> None:
        """llama-server exits at once: RunnerFailed's message shows, and the app carries on."""
        broken = tmp_path / "llama-server"
        broken.write_text("#!/bin/sh\necho 'error: no backend for this machine' >&2\nexit 3\n")
        broken.chmod(broken.stat().st_mode | stat.S_IXUSR)
        settings = two_models.with_changes(llama_server_path=broken)
        messages: list[Message] = []
        app = make_app(ModelRunner(settings), settings)
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await models_shown(pilot)
            await pilot.press(*"hello", "enter")
            await reply_done(pilot, within=30)
            [failure] = [m for m in messages if isinstance(m, ReplyFailed)]
            assert "exited with status 3" in failure.message
            assert "no backend for this machine" in failure.message
            assert replies(app)[0].has_class("-failed")


class TestCoreNews:
    async def test_build_progress_and_import_errors_show_in_the_status_line(
        self, two_models: Settings
    ) -> None:
        runner = CannedRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            status = app.screen.query_one(StatusLine)
            assert status.has_class("-idle")
            runner.bus.publish(EngineBuildProgressed(42.0, "[ 42%] Building CXX object"))
            await wait_until(pilot, lambda: "42%" in status.text)
            assert not status.has_class("-idle")
            runner.bus.publish(DefaultModelProgressed(DEFAULT_TAG, "failed", True, "disk full"))
            await wait_until(pilot, lambda: "disk full" in status.text)
            assert status.has_class("-error")

    async def test_a_model_added_elsewhere_appears(
        self, two_models: Settings, tmp_path: Path
    ) -> None:
        runner = CannedRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            gguf = write_tiny_gguf(tmp_path / "third.gguf", seed=3)
            await runner.package_model(gguf, "ai/third:latest")  # publishes ModelsChanged
            await wait_until(pilot, lambda: screen.table.row_count == 3)
            assert screen.table.find("third") is not None
            assert screen.chat_model is not None
            assert screen.chat_model.reference == DEFAULT_TAG  # the chat keeps its model


class TestQuitting:
    async def test_ctrl_q_quits_and_stops_the_runner(self, two_models: Settings) -> None:
        stopped: list[bool] = []

        class RecordingRunner(CannedRunner):
            async def stop(self) -> None:
                stopped.append(True)
                await super().stop()

        app = make_app(RecordingRunner(two_models), two_models)
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            await pilot.press("ctrl+q")
            await pilot.pause()
        assert stopped == [True]


@pytest.mark.llama
async def test_a_real_llama_server_streams_into_the_transcript(
    llama_server: Path, two_models: Settings
) -> None:
    """Select the second model with the keyboard, send a prompt, watch the deltas arrive."""
    messages: list[Message] = []
    runner = ModelRunner(two_models)
    app = make_app(runner, two_models)
    async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
        screen = await models_shown(pilot)
        await pilot.press("shift+tab", "down", "enter")
        assert screen.chat_model is not None
        assert screen.chat_model.reference == OTHER_TAG
        await pilot.press(*"hello", "enter")
        await reply_done(pilot, within=180)

        assert not [m for m in messages if isinstance(m, ReplyFailed)]
        streamed = [m for m in messages if isinstance(m, ReplyStreamed)]
        assert len(streamed) > 1
        reply = replies(app)[0]
        assert reply.text == "".join(m.delta for m in streamed)
        assert screen.conversation[-1] == {"role": "assistant", "content": reply.text}
        assert [info.reference for info in runner.running()] == [OTHER_TAG]
    assert runner.running() == []  # quitting stopped llama-server
