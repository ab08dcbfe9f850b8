"""The models loaded in llama-server processes: state, mode, memory and pid, from the core's
events. A model with a completion and an embedding runner has a row for each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rich.table import Table
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from modelrunner.core.events import RunnerEvicted, RunnerStateChanged, SystemSampled
from modelrunner.core.inference.modes import COMPLETION
from modelrunner.core.inference.pool import RunnerInfo, RunnerKey
from modelrunner.tui.formatting import ellipsize, human_size, short_name

NAME_WIDTH = 26
"""Columns for a runner's model name."""

STATE_LOOKS: dict[str, tuple[str, str, str]] = {
    "starting": ("◌", "loading…", "yellow"),
    "ready": ("●", "ready", "green"),
    "busy": ("●", "busy", "cyan"),
    "idle": ("○", "idle", "green"),
    "stopping": ("◌", "unloading…", "dim"),
    "crashed": ("✕", "crashed", "red"),
    "failed": ("✕", "failed", "red"),
}
"""Glyph, word and Rich style per runner state."""

GONE_STATES = frozenset({"stopped"})
"""States after which a runner is no longer listed."""


@dataclass(frozen=True, slots=True)
class RunnerRow:
    """One loaded (or loading) model."""

    model_id: str
    """The stored model's ID."""
    name: str
    """What people read: "smollm2:135M-Q4_1"."""
    state: str
    """starting, ready, busy, idle, stopping, crashed."""
    detail: str = ""
    """Why it crashed, when it did."""
    pid: int | None = None
    """llama-server's process ID, when the pool reports one."""
    memory_bytes: int = 0
    """Estimated RAM + GPU memory, when the pool reports it (0: unknown)."""
    measured_bytes: int | None = None
    """RAM (the process tree's RSS) + GPU memory as last read; shown instead of the estimate."""
    mode: str = COMPLETION
    """completion, embedding or reranking; shown unless completion."""

    @property
    def key(self) -> RunnerKey:
        return RunnerKey(self.model_id, self.mode)

    @property
    def shown_bytes(self) -> int:
        """The memory to show: measured when read, else the estimate (0: unknown)."""
        return self.measured_bytes if self.measured_bytes else self.memory_bytes


class RunnerList(Static, can_focus=False):
    """Lists the runners the core reports; hidden when nothing is loaded."""

    DEFAULT_CSS = """
    RunnerList {
        height: auto;
        max-height: 10;
        padding: 0 1;
        border: round $panel-lighten-2;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
        background: transparent;
        &.-empty { display: none; }
    }
    """

    runners: reactive[tuple[RunnerRow, ...]] = reactive[tuple[RunnerRow, ...]](
        (), always_update=True
    )
    """The runners on show, in the order they were first reported."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__("", id=id, classes="-empty")

    def on_mount(self) -> None:
        self.border_title = "Running"

    @property
    def by_key(self) -> dict[RunnerKey, RunnerRow]:
        """The rows, by runner (model ID and mode)."""
        return {row.key: row for row in self.runners}

    @property
    def model_ids(self) -> set[str]:
        """The models with at least one runner listed."""
        return {row.model_id for row in self.runners}

    def apply(self, event: RunnerStateChanged | RunnerEvicted) -> None:
        """Fold one core event in: a new state, or a runner gone."""
        rows = self.by_key
        key = RunnerKey(event.model_id, event.mode)
        if isinstance(event, RunnerEvicted) or event.state in GONE_STATES:
            rows.pop(key, None)
        else:
            row = rows.get(key)
            name = short_name(event.reference) if event.reference else event.model_id[7:19]
            if row is None:
                row = RunnerRow(event.model_id, name, event.state, event.detail, mode=event.mode)
            else:
                row = replace(row, state=event.state, detail=event.detail)
            rows[key] = row
        self.runners = tuple(rows.values())

    def add_details(self, infos: Sequence[RunnerInfo]) -> None:
        """Take pid and memory from the pool's snapshot for the runners listed."""
        rows = self.by_key
        for info in infos:
            row = rows.get(info.key)
            if row is not None:
                memory = info.memory_bytes or row.memory_bytes
                rows[info.key] = replace(row, pid=info.pid or row.pid, memory_bytes=memory)
        self.runners = tuple(rows.values())

    def measure(self, sample: SystemSampled) -> None:
        """Take each runner's measured memory (RSS of its processes + GPU) from a reading."""
        rows = self.by_key
        changed = False
        for key, row in rows.items():
            process = sample.host.processes.get(row.pid) if row.pid is not None else None
            ram = process.rss_bytes if process else 0
            total = ram + sample.gpus.runner_memory.get(key.label, 0)
            measured = total or None  # nothing attributed (yet): keep showing the estimate
            if measured != row.measured_bytes:
                rows[key] = replace(row, measured_bytes=measured)
                changed = True
        if changed:
            self.runners = tuple(rows.values())

    def watch_runners(self, runners: tuple[RunnerRow, ...]) -> None:
        self.set_class(not runners, "-empty")
        count = len({row.model_id for row in runners})
        self.border_subtitle = f"{count} model{'s' if count != 1 else ''}" if runners else ""
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        table.add_column(justify="right", no_wrap=True)
        for row in runners:
            glyph, word, style = STATE_LOOKS.get(row.state, ("·", row.state, ""))
            mode = "" if row.mode == COMPLETION else f" {row.mode}"
            name = ellipsize(row.name, NAME_WIDTH - len(mode))
            table.add_row(
                Text.assemble((glyph, style), " ", name, (mode, "dim")),
                Text(word, style=style),
                Text(human_size(row.shown_bytes) if row.shown_bytes else "", style="dim"),
                Text(f"pid {row.pid}" if row.pid else "", style="dim"),
            )
            if row.detail and row.state in ("crashed", "failed"):
                last_line = row.detail.strip().splitlines()[-1]
                table.add_row(Text(f"  {last_line}", style="red"), "", "", "")
        self.update(table)
