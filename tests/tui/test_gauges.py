"""The CPU, RAM and GPU gauges: each in a tiny host app on fixed readings, then the dashboard."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widget import Widget

from modelrunner.core.events import RunnerStateChanged, SystemSampled
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore
from modelrunner.core.system.gpu import GpuInfo, GpuProcess, GpuSample
from modelrunner.core.system.host import HostSample, ProcessSample
from modelrunner.tui.app import make_app
from modelrunner.tui.widgets.gauges import CpuGauge, GpuGauge, MemoryGauge, SystemGauges
from modelrunner.tui.widgets.runner_list import RunnerList
from tests.tui.conftest import (
    DEFAULT_TAG,
    GIB,
    NO_GPU,
    CannedRunner,
    canned_readings,
    models_shown,
    readings_shown,
    wait_until,
)

SIZE = (120, 36)

SnapCompare = Any
"""pytest-textual-snapshot's fixture (its type is not exported)."""

RUNNER_PID = 4242
"""A runner's llama-server in the fixed readings."""


def host(cpu: float = 42.0, *, used: int = 12 * GIB, runner_rss: int = 0) -> HostSample:
    """An 8-core, 32 GiB machine; a runner holding `runner_rss` bytes at 200 % CPU if given."""
    processes = {}
    if runner_rss:
        processes[RUNNER_PID] = ProcessSample(RUNNER_PID, runner_rss, 200.0, (RUNNER_PID,))
    return HostSample(cpu, 8, 32 * GIB, 32 * GIB - used, processes)


def two_gpus(runner: str = "sha256:" + "c" * 64) -> GpuSample:
    """Two GPUs; a runner holds 4 GiB on the first."""
    first = GpuInfo(
        0, "NVIDIA GeForce RTX 4090", 24 * GIB, 10 * GIB, 14 * GIB, 57,
        (GpuProcess(RUNNER_PID, 4 * GIB, runner), GpuProcess(999, 6 * GIB)),
    )  # fmt: skip
    second = GpuInfo(1, "NVIDIA RTX A2000", 12 * GIB, 3 * GIB, 9 * GIB, None)
    return GpuSample((first, second), runner_memory={runner: 4 * GIB})


class GaugeHost(App[None]):
    """One widget on an otherwise empty screen."""

    def __init__(self, widget: Widget) -> None:
        super().__init__()
        self.widget = widget

    def compose(self) -> ComposeResult:
        yield self.widget


def rendered(app: App[Any]) -> str:
    """The screen's text as it is drawn, one line per row, trailing blanks trimmed."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text.rstrip() for strip in strips).strip("\n")


class TestCpuGauge:
    async def test_percent_cores_runners_and_history(self) -> None:
        gauge = CpuGauge()
        async with GaugeHost(gauge).run_test(size=(60, 4)) as pilot:
            for cpu in (0.0, 50.0, 100.0, 42.0):
                gauge.sample = host(cpu, runner_rss=GIB)
            await pilot.pause()
            text = rendered(pilot.app)
            assert text.startswith("CPU")
            assert "42%" in text
            assert "8 cores · runners 25%" in text  # 200 % of one core = 25 % of 8
            assert text.splitlines()[0].endswith("▁▅█▄")  # on a fixed 0-100 scale
            assert list(gauge.history) == [0.0, 50.0, 100.0, 42.0]

    async def test_the_bar_warms_then_heats(self) -> None:
        gauge = CpuGauge()
        async with GaugeHost(gauge).run_test(size=(60, 4)) as pilot:
            gauge.sample = host(80.0)
            await pilot.pause()
            assert gauge.has_class("-warm")
            gauge.sample = host(95.0)
            await pilot.pause()
            assert gauge.has_class("-hot")
            assert not gauge.has_class("-warm")


class TestMemoryGauge:
    async def test_used_of_total_and_what_the_runners_hold(self) -> None:
        gauge = MemoryGauge()
        async with GaugeHost(gauge).run_test(size=(60, 4)) as pilot:
            gauge.sample = host(used=12 * GIB, runner_rss=3 * GIB // 2)
            await pilot.pause()
            text = rendered(pilot.app)
            assert text.startswith("RAM")
            assert "38%" in text
            assert "12.0 / 32.0 GiB used · runners 1.5 GiB" in text

    async def test_without_runners_it_says_only_the_machine(self) -> None:
        gauge = MemoryGauge()
        async with GaugeHost(gauge).run_test(size=(60, 4)) as pilot:
            gauge.sample = host(used=8 * GIB)
            await pilot.pause()
            text = rendered(pilot.app)
            assert "25%" in text
            assert "8.0 / 32.0 GiB used" in text
            assert "runners" not in text


class TestGpuGauge:
    async def test_two_gpus_render_two_rows(self) -> None:
        gauge = GpuGauge()
        async with GaugeHost(gauge).run_test(size=(80, 6)) as pilot:
            gauge.sample = two_gpus()
            await wait_until(pilot, lambda: len(gauge.rows) == 2)
            await pilot.pause()
            lines = rendered(pilot.app).splitlines()
            assert lines[0].startswith("GPU0")
            assert "42%" in lines[0]
            assert "10.0 / 24.0 GiB · util 57% · runners 4.0 GiB · GeForce RTX 4090" in lines[1]
            assert lines[2].startswith("GPU1")
            assert "25%" in lines[2]
            assert "3.0 / 12.0 GiB · RTX A2000" in lines[3]  # no utilisation reading, no runner
            assert "No NVIDIA GPU" not in "\n".join(lines)

    async def test_no_gpu_shows_the_reason(self) -> None:
        gauge = GpuGauge()
        async with GaugeHost(gauge).run_test(size=(80, 3)) as pilot:
            gauge.sample = NO_GPU
            await pilot.pause()
            assert rendered(pilot.app) == "GPU  No NVIDIA GPU (NVML library not found)"
            assert gauge.rows == []

    async def test_a_gpu_that_goes_away_takes_its_row(self) -> None:
        gauge = GpuGauge()
        async with GaugeHost(gauge).run_test(size=(80, 6)) as pilot:
            gauge.sample = two_gpus()
            await wait_until(pilot, lambda: len(gauge.rows) == 2)
            gauge.sample = GpuSample((two_gpus().gpus[0],))
            await wait_until(pilot, lambda: len(gauge.rows) == 1)
            gauge.sample = NO_GPU
            await pilot.pause()
            assert rendered(pilot.app).startswith("GPU  No NVIDIA GPU")


class TestSystemGauges:
    async def test_hidden_until_the_first_reading(self) -> None:
        gauges = SystemGauges()
        async with GaugeHost(gauges).run_test(size=(60, 10)) as pilot:
            assert not gauges.display or gauges.has_class("-waiting")
            gauges.show(SystemSampled(host(), NO_GPU))
            await pilot.pause()
            assert not gauges.has_class("-waiting")
            assert gauges.samples_shown == 1
            text = rendered(pilot.app)
            for label in ("System", "CPU", "RAM", "GPU  No NVIDIA GPU"):
                assert label in text

    async def test_runner_list_shows_measured_memory(self) -> None:
        runners = RunnerList()
        model_id = "sha256:" + "c" * 64
        async with GaugeHost(runners).run_test(size=(60, 6)) as pilot:
            runners.apply(RunnerStateChanged(model_id, DEFAULT_TAG, "ready"))
            runners.measure(SystemSampled(host(), two_gpus(model_id)))
            await pilot.pause()
            assert runners.runners[0].measured_bytes == 4 * GIB
            assert "4.00 GiB" in rendered(pilot.app)


class TestInTheApp:
    async def test_the_screen_worker_feeds_the_gauges(self, two_models: Settings) -> None:
        runner = CannedRunner(two_models)
        runner.readings_script = canned_readings(5)
        async with make_app(runner, two_models).run_test(size=SIZE) as pilot:
            gauges = await readings_shown(pilot)
            assert gauges.query_one(CpuGauge).history.maxlen == 60
            assert len(gauges.query_one(MemoryGauge).history) == 5
            workers = [worker for worker in pilot.app.workers if worker.group == "system"]
            assert len(workers) == 1
            assert workers[0].is_running

    def test_dashboard_snapshot(self, snap_compare: SnapCompare, two_models: Settings) -> None:
        """A loaded model on two GPUs: fixed readings only, the same image on every machine."""
        model_id = ModelStore(two_models.models_path).get(DEFAULT_TAG).id
        runner = CannedRunner(two_models)
        runner.readings_script = canned_readings(
            40,
            gpus=two_gpus(model_id),
            processes={RUNNER_PID: ProcessSample(RUNNER_PID, 700 << 20, 180.0)},
        )
        runner.readings_held.clear()  # until the runner is listed, so its memory is measured
        app = make_app(runner, two_models)

        async def run_before(pilot: Pilot[Any]) -> None:
            screen = await models_shown(pilot)
            runner.bus.publish(RunnerStateChanged(model_id, DEFAULT_TAG, "ready"))
            await wait_until(pilot, lambda: bool(screen.runner_list.runners))
            runner.readings_held.set()
            await readings_shown(pilot)
            await wait_until(pilot, lambda: len(screen.query_one(GpuGauge).rows) == 2)
            await pilot.pause(0.1)

        assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
