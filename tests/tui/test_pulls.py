"""Pulls in the TUI: the dialog checks names as they are typed; rows follow the core's events."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest
from textual.widgets import Button, Input, ProgressBar, Static

from modelrunner.core.distribution.pull import Puller
from modelrunner.core.distribution.pull_queue import PullQueue
from modelrunner.core.errors import ModelNotFound
from modelrunner.core.events import PullFailed, PullFinished, PullProgressed, PullStarted
from modelrunner.core.settings import Settings
from modelrunner.tui.app import ModelRunnerApp, make_app
from modelrunner.tui.dialogs import PullDialog
from modelrunner.tui.pull_progress import PullView, fold, human_eta, human_rate, progress_line
from modelrunner.tui.widgets.pull_list import PullList, PullRow
from modelrunner.tui.widgets.status_line import StatusLine
from tests.distribution.gated_registry import GatedRegistry
from tests.gguf_factory import write_tiny_gguf
from tests.tui.conftest import (
    GIB,
    MIB,
    CannedRunner,
    PullingRunner,
    chat_screen,
    models_shown,
    pull_at_40_percent,
    wait_until,
)

SIZE = (120, 36)
GEMMA = "ai/gemma3:latest"
QWEN = "ai/qwen3:latest"


class QueueingRunner(CannedRunner):
    """The real facade and Puller, one pull at a time, over a registry whose manifests wait at a
    gate: a second pull stays queued, and no byte ever flows (then each pull fails with a 404)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.gated = GatedRegistry()
        """Open its gate to let the pulls fail."""
        self.puller = Puller(settings, self.store, self.bus, lambda: self.gated, max_active=1)


@pytest.fixture
def pulling(two_models: Settings, tmp_path: Path) -> tuple[PullingRunner, ModelRunnerApp]:
    """A runner whose pulls are scripted, and the app over it."""
    tiny = write_tiny_gguf(tmp_path / "pulled.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q8_0)
    runner = PullingRunner(two_models, tiny)
    return runner, make_app(runner, two_models)


def rows(app: ModelRunnerApp) -> dict[str, PullRow]:
    """The pull rows on show, by reference."""
    return {row.view.reference: row for row in app.screen.query(PullRow)}


def line_of(row: PullRow) -> str:
    """A row's bytes · speed · time-left line."""
    return str(row.query_one(".pull--line", Static).render())


class TestFolding:
    def test_a_resumed_pull_at_40_percent(self) -> None:
        view: PullView | None = None
        for event in pull_at_40_percent(GEMMA):
            view = fold(view, event)
        assert view is not None
        assert view.state == "downloading"
        assert view.fraction == pytest.approx(0.4)
        assert view.speed == 5 * MIB
        assert view.eta == pytest.approx(0.6 * GIB / (5 * MIB))
        assert view.on_disk_at_start == 96 * MIB + 4096
        assert progress_line(view) == "410 MiB / 1.00 GiB · 5.00 MiB/s · 2m 03s left"
        assert progress_line(view, quiet=True) == "410 MiB / 1.00 GiB · 0 B/s · waiting for bytes…"

    def test_a_stall_shows_no_speed_and_no_time_left(self) -> None:
        *_, last = pull_at_40_percent(GEMMA)
        stalled = PullProgressed(
            GEMMA, last.layer, last.size, last.current, last.total, last.pulled, "stalled", 5 * MIB
        )
        view = fold(fold(None, last), stalled)
        assert view.state == "stalled"
        assert view.speed == 0
        assert view.eta is None
        assert progress_line(view).endswith("0 B/s · time left unknown")

    def test_started_queued_then_resolving_then_layers(self) -> None:
        queued = fold(None, PullStarted(GEMMA, "queued"))
        assert (queued.state, progress_line(queued)) == (
            "queued",
            "waiting for other pulls to finish…",
        )
        resolving = fold(queued, PullStarted(GEMMA, "resolving"))
        assert (resolving.state, progress_line(resolving)) == ("resolving", "reading the manifest…")
        assert fold(resolving, pull_at_40_percent(GEMMA)[-1]).state == "downloading"
        failed = fold(resolving, PullFailed(GEMMA, "model ai/gemma3:latest not found", 404))
        assert fold(failed, PullStarted(GEMMA, "queued")) == PullView(GEMMA)  # pulled again

    def test_finished_failed_and_cancelled(self) -> None:
        started = fold(None, pull_at_40_percent(GEMMA)[-1])
        assert fold(started, PullFinished(GEMMA, "sha256:x", cached=False)).state == "done"
        failed = fold(started, PullFailed("gemma3", "manifest unknown", 404))
        assert (failed.state, failed.message, failed.reference) == (
            "failed",
            "manifest unknown",
            GEMMA,
        )
        assert fold(started, PullFailed(GEMMA, "the pull was cancelled", 499)).state == "cancelled"

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(None, "—"), (0.2, "1s"), (59, "59s"), (61, "1m 01s"), (3600, "1h 00m"), (90000, "1d 1h")],
    )
    def test_time_left(self, seconds: float | None, text: str) -> None:
        assert human_eta(seconds) == text

    def test_speed(self) -> None:
        assert human_rate(0) == "0 B/s"
        assert human_rate(12.5 * MIB) == "12.5 MiB/s"


class TestPullDialog:
    async def test_a_bad_name_is_refused_inline(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        runner, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            await pilot.press("ctrl+o")  # works while the prompt has the focus
            await wait_until(pilot, lambda: isinstance(app.screen, PullDialog))
            await pilot.press(*"Gemma3")
            feedback = app.screen.query_one("#pull-feedback", Static)
            assert feedback.has_class("-error")
            assert "must be lower-case" in str(feedback.render())
            assert app.screen.query_one("#pull-ok", Button).disabled
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, PullDialog)  # Enter does nothing on a bad name
            assert runner.pulled == []

    async def test_a_good_name_is_shown_normalised_and_pulled(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        runner, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            await pilot.press("shift+tab", "p")  # p from the models table
            await wait_until(pilot, lambda: isinstance(app.screen, PullDialog))
            await pilot.press(*"hf.co/Org/Model:Q8_0")
            feedback = str(app.screen.query_one("#pull-feedback", Static).render())
            assert feedback == "Will pull hf.co/org/model:Q8_0 from Hugging Face."
            await pilot.press("enter")
            await wait_until(pilot, lambda: runner.pulled == ["hf.co/org/model:Q8_0"])
            assert not isinstance(app.screen, PullDialog)

    async def test_escape_closes_without_pulling(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        runner, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            await pilot.press("ctrl+o", *"gemma3", "escape")
            await wait_until(pilot, lambda: not isinstance(app.screen, PullDialog))
            assert runner.pulled == []

    async def test_p_in_the_prompt_is_just_a_letter(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        _, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("p", "d", "u")
            assert screen.prompt.input.value == "pdu"
            assert not isinstance(app.screen, PullDialog)


class TestPullFlow:
    async def test_progress_then_the_model_in_the_table(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        runner, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            pull_list = screen.query_one(PullList)
            pull_list.done_linger = 0.2
            assert not pull_list.display or pull_list.has_class("-empty")
            await pilot.press("ctrl+o", *"gemma3", "enter")
            await wait_until(pilot, lambda: rows(app).get(GEMMA) is not None)
            row = rows(app)[GEMMA]
            await wait_until(pilot, lambda: row.view.state == "downloading")
            assert not pull_list.has_class("-empty")
            assert pull_list.border_subtitle == "1 under way"
            assert line_of(row) == "410 MiB / 1.00 GiB · 5.00 MiB/s · 2m 03s left"
            state = str(row.query_one(".pull--state").render())
            assert state == "resumed at 96.0 MiB · downloading"

            runner.release.set()
            await wait_until(pilot, lambda: screen.table.find(GEMMA) is not None)
            await wait_until(pilot, lambda: row.view.state == "done")
            assert screen.table.row_count == 3
            status = str(screen.query_one(StatusLine).text)
            assert status == "Pulled gemma3."
            await wait_until(pilot, lambda: pull_list.has_class("-empty"), within=5)
            assert rows(app) == {}

    async def test_a_failed_pull_says_why(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        runner, app = pulling
        runner.failure = ModelNotFound("manifest unknown: ai/gemma3:latest")
        runner.release.set()
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("ctrl+o", *"gemma3", "enter")
            await wait_until(
                pilot, lambda: GEMMA in rows(app) and rows(app)[GEMMA].view.ended != ""
            )
            row = rows(app)[GEMMA]
            assert row.view.state == "failed"
            assert row.has_class("-failed")
            assert line_of(row) == "manifest unknown: ai/gemma3:latest"
            assert row.query_one(ProgressBar).display  # where it stopped
            status = screen.query_one(StatusLine)
            assert status.error
            assert status.text == "Could not pull gemma3: manifest unknown: ai/gemma3:latest"
            assert screen.table.row_count == 2
            assert not [w for w in app.workers if w.group == "pull" and w.is_running]

    async def test_several_pulls_at_once_and_a_cancel_from_the_palette(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        runner, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("ctrl+o", *"gemma3", "enter")
            await wait_until(pilot, lambda: GEMMA in rows(app))
            await pilot.press("ctrl+o", *"qwen3", "enter")
            await wait_until(pilot, lambda: set(rows(app)) == {GEMMA, "ai/qwen3:latest"})
            assert runner.pulled == [GEMMA, "ai/qwen3:latest"]
            assert screen.pull_list.border_subtitle == "2 under way"

            await pilot.press("ctrl+p")
            await pilot.press(*"cancel pull of qwen3")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_until(pilot, lambda: runner.cancelled == ["ai/qwen3:latest"])

    async def test_a_pull_event_from_elsewhere_gets_a_row(
        self, pulling: tuple[PullingRunner, ModelRunnerApp]
    ) -> None:
        """Pulls started by the API or resumed from the queue show up too."""
        runner, app = pulling
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            for event in pull_at_40_percent("ai/phi4"):
                runner.bus.publish(event)
            await wait_until(pilot, lambda: "ai/phi4:latest" in rows(app))
            await wait_until(pilot, lambda: rows(app)["ai/phi4:latest"].view.state == "downloading")
            assert chat_screen(app).pull_list.active == ["ai/phi4:latest"]
            assert isinstance(app.screen.query_one("#prompt-text"), Input)


class TestQueuedPulls:
    """Rows come from the core's PullStarted: "queued" while a pull waits for a slot, before any
    byte flows, then "resolving"; a pull failing before any layer ends failed, with the reason."""

    async def test_a_second_pull_shows_queued_then_both_fail_visibly(
        self, two_models: Settings
    ) -> None:
        runner = QueueingRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            screen = await models_shown(pilot)
            await pilot.press("ctrl+o", *"gemma3", "enter")
            await wait_until(pilot, lambda: runner.gated.asked == [GEMMA])
            await pilot.press("ctrl+o", *"qwen3", "enter")
            await wait_until(pilot, lambda: len(runner.pulls()) == 2 and QWEN in rows(app))
            await pilot.pause(0.1)  # time for a wrong state to show, were there one
            states = {reference: row.view.state for reference, row in rows(app).items()}
            assert states == {GEMMA: "resolving", QWEN: "queued"}
            queued = rows(app)[QWEN]
            assert str(queued.query_one(".pull--state").render()) == "queued"
            assert line_of(queued) == "waiting for other pulls to finish…"
            assert (queued.view.total, queued.view.pulled) == (0, 0)
            assert line_of(rows(app)[GEMMA]) == "reading the manifest…"
            assert screen.pull_list.border_subtitle == "2 under way"

            runner.gated.gate.set()
            await wait_until(
                pilot, lambda: [row.view.state for row in rows(app).values()] == ["failed"] * 2
            )
            assert line_of(rows(app)[QWEN]) == "model ai/qwen3:latest not found"
            assert rows(app)[QWEN].has_class("-failed")
            assert screen.pull_list.border_subtitle == ""
            # nothing came before they failed: no empty bar left pulsing as if still at work
            assert [row.query_one(ProgressBar).display for row in rows(app).values()] == [False] * 2

    async def test_pulls_resumed_after_a_restart_show_up_queued(self, two_models: Settings) -> None:
        """No one in this app asked for them: the rows come from the core's events alone."""
        queue = PullQueue(two_models.state_dir)
        queue.add(GEMMA)
        queue.add(QWEN)
        runner = QueueingRunner(two_models)
        app = make_app(runner, two_models)
        async with app.run_test(size=SIZE) as pilot:
            await models_shown(pilot)
            await wait_until(
                pilot,
                lambda: (
                    {key: row.view.state for key, row in rows(app).items()}
                    == {GEMMA: "resolving", QWEN: "queued"}
                ),
            )
            assert line_of(rows(app)[QWEN]) == "waiting for other pulls to finish…"
            assert runner.gated.asked == [GEMMA]
