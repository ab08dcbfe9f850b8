"""CPU, memory and GPU gauges: the reading now as a bar and a percentage, a minute of history."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Label, ProgressBar, Sparkline, Static

from modelrunner.core.events import SystemSampled
from modelrunner.core.system.gpu import GpuInfo, GpuSample
from modelrunner.core.system.host import HostSample
from modelrunner.tui.formatting import ellipsize

HISTORY = 60
"""Readings a gauge keeps (a minute at the facade's default interval)."""

GIB = 1 << 30

WARM_PERCENT = 75.0
"""From here the bar turns to the warning colour."""
HOT_PERCENT = 90.0
"""From here the bar turns to the error colour."""


def gib(size_bytes: int) -> str:
    """Bytes as GiB with one decimal, no unit: "12.3"."""
    return f"{size_bytes / GIB:.1f}"


class History(Sparkline):
    """A Sparkline on a fixed 0-100 scale: one column per reading, the newest on the right.

    Textual's Sparkline stretches between the data's own minimum and maximum, which makes the
    noise of a steady reading look like swings; a gauge's history must read like its bar.
    """

    BARS = "▁▂▃▄▅▆▇█"

    def render(self) -> RenderResult:
        width = self.size.width
        readings: Sequence[float] = list(self.data or ())[-width:] if width else []
        _, base = self.background_colors
        low = base + self.get_component_styles("sparkline--min-color").color
        high = base + self.get_component_styles("sparkline--max-color").color
        text = Text(" " * (width - len(readings)))
        for reading in readings:
            ratio = min(max(reading / 100.0, 0.0), 1.0)
            bar = self.BARS[min(int(ratio * len(self.BARS)), len(self.BARS) - 1)]
            text.append(bar, Style(color=low.blend(high, ratio).rich_color))
        return text


class Gauge(Widget):
    """One reading: a label, a bar with its percentage, the history, and a detail line below."""

    DEFAULT_CSS = """
    Gauge {
        height: auto;
        & > .gauge--row { height: 1; }
        & > .gauge--row > .gauge--label { width: 5; text-style: bold; }
        & > .gauge--row > ProgressBar { width: auto; }
        & > .gauge--row > ProgressBar Bar { width: 16; }
        & > .gauge--row > ProgressBar Bar > .bar--complete { color: $error; }
        & > .gauge--row > History { width: 1fr; margin-left: 1; }
        & > .gauge--detail {
            color: $text-muted;
            padding-left: 5;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        &.-warm > .gauge--row > ProgressBar Bar > .bar--bar { color: $warning; }
        &.-hot > .gauge--row > ProgressBar Bar > .bar--bar { color: $error; }
    }
    """

    percent: reactive[float] = reactive(0.0, init=False)
    """The latest reading, 0-100."""

    detail: reactive[str] = reactive("", init=False)
    """What the reading means in units (GiB, cores, runners' share), under the bar."""

    def __init__(self, label: str, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.label = label
        """The name before the bar: "CPU", "RAM", "GPU0"."""
        self.history: deque[float] = deque(maxlen=HISTORY)
        """The last readings, oldest first."""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="gauge--row"):
            yield Label(self.label, classes="gauge--label")
            yield ProgressBar(total=100, show_eta=False)
            yield History()
        yield Static("", classes="gauge--detail", markup=False)

    def on_mount(self) -> None:
        self._show()

    def record(self, percent: float, detail: str) -> None:
        """Show a new reading and add it to the history."""
        self.history.append(percent)
        self.set_reactive(Gauge.percent, percent)
        self.set_reactive(Gauge.detail, detail)
        if self.is_mounted:
            self._show()

    def _show(self) -> None:
        self.set_class(WARM_PERCENT <= self.percent < HOT_PERCENT, "-warm")
        self.set_class(self.percent >= HOT_PERCENT, "-hot")
        try:
            bar = self.query_one(ProgressBar)
        except NoMatches:  # removed (its GPU went away) before it finished mounting
            return
        bar.update(progress=self.percent)
        self.query_one(History).data = list(self.history)
        self.query_one(".gauge--detail", Static).update(self.detail)


class CpuGauge(Gauge):
    """The machine's CPU busy share, and how much of it the runners take."""

    sample: reactive[HostSample | None] = reactive[HostSample | None](
        None, init=False, always_update=True
    )
    """The latest host reading."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__("CPU", id=id)

    def watch_sample(self, sample: HostSample | None) -> None:
        if sample is None:
            return
        cores = f"{sample.cpu_count} core{'s' if sample.cpu_count != 1 else ''}"
        detail = cores
        if sample.processes:
            runners = sum(p.cpu_percent for p in sample.processes.values()) / sample.cpu_count
            detail += f" · runners {runners:.0f}%"
        self.record(sample.cpu_percent, detail)


class MemoryGauge(Gauge):
    """RAM in use, used/total in GiB, and what the runners' processes hold."""

    sample: reactive[HostSample | None] = reactive[HostSample | None](
        None, init=False, always_update=True
    )
    """The latest host reading."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__("RAM", id=id)

    def watch_sample(self, sample: HostSample | None) -> None:
        if sample is None or sample.ram_total <= 0:
            return
        detail = f"{gib(sample.ram_used)} / {gib(sample.ram_total)} GiB used"
        if sample.processes:
            runners = sum(p.rss_bytes for p in sample.processes.values())
            detail += f" · runners {gib(runners)} GiB"
        self.record(100.0 * sample.ram_used / sample.ram_total, detail)


def gpu_detail(gpu: GpuInfo) -> str:
    """Memory, utilisation, runners' share and name of one GPU, most telling first."""
    parts = [f"{gib(gpu.memory_used)} / {gib(gpu.memory_total)} GiB"]
    if gpu.utilization_percent is not None:
        parts.append(f"util {gpu.utilization_percent}%")
    runners = sum(p.used_bytes or 0 for p in gpu.processes if p.runner is not None)
    if runners:
        parts.append(f"runners {gib(runners)} GiB")
    parts.append(ellipsize(gpu.name.removeprefix("NVIDIA "), 24))
    return " · ".join(parts)


class GpuGauge(Widget):
    """One gauge of memory in use per GPU; without a GPU, the reason in dim text."""

    DEFAULT_CSS = """
    GpuGauge {
        height: auto;
        & > .gpu--none { height: 1; }
        & > .gpu--none > .gauge--label { width: 5; text-style: bold; }
        & > .gpu--none > .gpu--reason {
            width: 1fr;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        &.-none > Gauge { display: none; }
        &.-some > .gpu--none { display: none; }
    }
    """

    sample: reactive[GpuSample | None] = reactive[GpuSample | None](
        None, init=False, always_update=True
    )
    """The latest GPU reading."""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="gpu--none"):
            yield Label("GPU", classes="gauge--label")
            yield Static("", classes="gpu--reason", markup=False)

    def watch_sample(self, sample: GpuSample | None) -> None:
        if sample is None:
            return
        self.set_class(not sample.gpus, "-none")
        self.set_class(bool(sample.gpus), "-some")
        if not sample.gpus:
            self.query_one(".gpu--reason", Static).update(sample.reason or "No GPU readings")
            return
        rows = {row.index: row for row in self.query(GpuRow)}
        for gpu in sample.gpus:
            row = rows.pop(gpu.index, None)
            if row is None:
                row = GpuRow(gpu.index)
                self.mount(row)  # in the DOM at once; it shows its reading once mounted
            used = 100.0 * gpu.memory_used / gpu.memory_total if gpu.memory_total else 0.0
            row.record(used, gpu_detail(gpu))
        for gone in rows.values():
            gone.remove()

    @property
    def rows(self) -> list[GpuRow]:
        """One gauge per GPU, in index order."""
        return list(self.query(GpuRow))


class GpuRow(Gauge):
    """One GPU's memory gauge."""

    def __init__(self, index: int) -> None:
        super().__init__(f"GPU{index}")
        self.index = index
        """The GPU's NVML index."""


class SystemGauges(Widget):
    """The "System" pane: CPU, RAM and GPU gauges; hidden until the first reading arrives."""

    DEFAULT_CSS = """
    SystemGauges {
        height: auto;
        padding: 0 1;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        background: transparent;
        &.-waiting { display: none; }
    }
    """

    samples_shown: reactive[int] = reactive(0, init=False)
    """How many readings arrived (tests wait on it)."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id, classes="-waiting")

    def compose(self) -> ComposeResult:
        yield CpuGauge()
        yield MemoryGauge()
        yield GpuGauge()

    def on_mount(self) -> None:
        self.border_title = "System"

    def show(self, sample: SystemSampled) -> None:
        """Hand one reading to every gauge."""
        self.remove_class("-waiting")
        self.query_one(CpuGauge).sample = sample.host
        self.query_one(MemoryGauge).sample = sample.host
        self.query_one(GpuGauge).sample = sample.gpus
        self.samples_shown += 1
