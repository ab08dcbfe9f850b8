"""Pull and push progress on a terminal: Docker's per-layer bars on a TTY, plain lines otherwise.

The server streams DMR's progress messages (§3.5 of the distribution reference): per layer its
`id`, `size` and `current` bytes, and the model's `total`. On a TTY every layer gets a line keyed
by the first 12 hex digits of its ID, with DMR's statuses padded to 13 characters, and a total
line with speed and ETA; the block is redrawn in place (cursor up, erase line) at most
`REDRAW_INTERVAL` apart. Elsewhere (a pipe, a log) one summary line is written per update, at
most `LINE_INTERVAL` apart, and a last one at the end.

DMR's stream carries bytes only, so the statuses follow from them ("Waiting" at 0, "Downloading"
while short, "Pull complete" once whole). A progress message whose text is one of
`NAMED_STATUSES` sets that status instead, for servers that say more.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from modelrunner.server.cli.output import decimal_size

STATUS_WIDTH = 13
"""DMR pads every layer status to 13 characters."""
REDRAW_INTERVAL = 0.1
"""At most ten redraws a second on a TTY."""
LINE_INTERVAL = 2.0
"""Seconds between summary lines when stdout is not a terminal."""
SPEED_WINDOW = 2.0
"""Seconds of samples the current speed is measured over."""
NAMED_STATUSES = frozenset({"Verifying", "Already exists", "Mounted"})
"""Layer statuses a server may name in a progress message's text."""
_MAX_BAR = 50
_ERASE_LINE = "\r\033[2K"


@dataclass(frozen=True)
class Verbs:
    """What a transfer direction calls its states."""

    active: str
    """A layer moving: "Downloading"."""
    complete: str
    """A whole layer: "Pull complete"."""


VERBS = {
    "pull": Verbs("Downloading", "Pull complete"),
    "push": Verbs("Uploading", "Push complete"),
}


@dataclass
class LayerProgress:
    """One layer as the messages so far describe it."""

    size: int
    current: int = 0
    first_seen: int = 0
    """`current` when the layer was first reported (a resumed part is not speed)."""
    named_status: str | None = None

    @property
    def complete(self) -> bool:
        return self.size > 0 and self.current >= self.size

    def status(self, verbs: Verbs) -> str:
        if self.complete:
            if self.named_status in ("Already exists", "Mounted"):
                return self.named_status
            return verbs.complete
        if self.named_status is not None:
            return self.named_status
        return "Waiting" if self.current == 0 else verbs.active


class TransferProgress:
    """DMR's progress messages folded into per-layer state, speed and ETA (no output)."""

    def __init__(self, mode: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.verbs = VERBS.get(mode, VERBS["pull"])
        self.layers: dict[str, LayerProgress] = {}
        """Keyed by the first 12 hex digits of the layer ID, in order of first report."""
        self.total = 0
        self._clock = clock
        self.started = clock()
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, message: Mapping[str, Any]) -> bool:
        """Fold in one progress message; False when it names no layer (DMR ignores those)."""
        layer: Mapping[str, Any] = message.get("layer") or {}
        key = layer_key(str(layer.get("id") or ""))
        if not key:
            return False
        self.total = max(self.total, int(message.get("total") or 0))
        current, size = int(layer.get("current") or 0), int(layer.get("size") or 0)
        state = self.layers.get(key)
        if state is None:
            state = self.layers[key] = LayerProgress(size, current, first_seen=current)
        state.size, state.current = size or state.size, max(state.current, current)
        text = str(message.get("message") or "")
        state.named_status = text if text in NAMED_STATUSES else None
        self._sample()
        return True

    @property
    def done(self) -> int:
        """Bytes present, summed over the layers reported so far."""
        return sum(layer.current for layer in self.layers.values())

    @property
    def moved(self) -> int:
        """Bytes transferred in this run (resumed parts left out)."""
        return sum(layer.current - layer.first_seen for layer in self.layers.values())

    def _sample(self) -> None:
        now = self._clock()
        self._samples.append((now, self.moved))
        while len(self._samples) > 2 and now - self._samples[1][0] >= SPEED_WINDOW:
            self._samples.popleft()

    def speed(self) -> float:
        """Bytes per second over the last couple of seconds, else since the start."""
        now = self._clock()
        if len(self._samples) >= 2:
            (first_time, first_bytes), (_, last_bytes) = self._samples[0], self._samples[-1]
            if now - first_time >= 0.5:
                return (last_bytes - first_bytes) / (now - first_time)
        elapsed = now - self.started
        return self.moved / elapsed if elapsed > 0 else 0.0

    def average_speed(self) -> float:
        elapsed = self._clock() - self.started
        return self.moved / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the current speed; None while unknown."""
        remaining = self.total - self.done
        if remaining <= 0:
            return 0.0
        speed = self.speed()
        return remaining / speed if speed > 0 else None


def layer_key(layer_id: str) -> str:
    """The first 12 hex digits of "sha256:<hex>", as Docker shows layers."""
    return layer_id.rpartition(":")[2][:12]


def format_eta(seconds: float) -> str:
    """ "45s", "3m05s", "2h07m"."""
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def bar(fraction: float, width: int) -> str:
    """Docker's bar: "[=====>     ]" with `width` cells inside the brackets."""
    filled = max(0, min(width, int(width * fraction)))
    if filled >= width:
        return f"[{'=' * width}]"
    return f"[{'=' * filled}>{' ' * (width - filled - 1)}]"


def _bar_width(width: int) -> int:
    """Cells for a layer's bar: what is left beside the id, status and sizes (0: no bar)."""
    room = width - (12 + 2 + STATUS_WIDTH + 1) - 2 - (9 + 1 + 9) - 1
    return min(_MAX_BAR, room) if room >= 10 else 0


def layer_line(key: str, layer: LayerProgress, verbs: Verbs, width: int) -> str:
    """ "a1b2c3d4e5f6: Downloading   [====>    ]   1.05 MB/4.19 MB"."""
    status = layer.status(verbs)
    line = f"{key}: {status:<{STATUS_WIDTH}}"
    if status in (verbs.active, "Verifying") and layer.size > 0:
        cells = _bar_width(width)
        sizes = f"{decimal_size(layer.current):>9}/{decimal_size(layer.size)}"
        line += f" {bar(layer.current / layer.size, cells)}  {sizes}" if cells else f" {sizes}"
    return line.rstrip()


def summary(progress: TransferProgress, *, final: bool = False) -> str:
    """ " 45.0% 1.05 MB of 2.33 MB  3.10 MB/s  ETA 12s": the whole transfer (whole when final)."""
    done = progress.total if final and progress.total else progress.done
    percent = f"{100 * done / progress.total:5.1f}%" if progress.total else "     "
    speed = progress.average_speed() if final else progress.speed()
    line = f"{percent} {decimal_size(done)} of {decimal_size(progress.total)}"
    line += f"  {decimal_size(speed)}/s"
    eta = None if final else progress.eta()
    if eta is not None and done < progress.total:
        line += f"  ETA {format_eta(eta)}"
    return line


def tty_lines(
    progress: TransferProgress, width: int, height: int, *, final: bool = False
) -> list[str]:
    """Layer lines then the total line, each cut to the width; completed layers give way first
    when there are more than the terminal's height allows."""
    verbs = progress.verbs
    entries = list(progress.layers.items())
    room = max(1, height - 2)
    hidden = 0
    if len(entries) > room:
        unfinished = [(key, layer) for key, layer in entries if not layer.complete]
        hidden = len(entries) - len(unfinished)
        entries = unfinished
        if len(entries) > room - 1:
            hidden += len(entries) - (room - 1)
            entries = entries[: room - 1]
    lines = [layer_line(key, layer, verbs, width) for key, layer in entries]
    if hidden:
        lines.append(f"… and {hidden} more layer{'s' * (hidden != 1)}")
    lines.append("Total: " + summary(progress, final=final).lstrip())
    return [line[: max(1, width - 1)] for line in lines]


class ProgressDisplay:
    """Writes a transfer's progress to `out`: redrawn bars on a TTY, summary lines elsewhere."""

    def __init__(
        self,
        out: TextIO,
        mode: str,
        *,
        tty: bool | None = None,
        width: int | None = None,
        height: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.progress = TransferProgress(mode, clock=clock)
        self._width, self._height = width, height
        self._clock = clock
        self._drawn = 0
        """Lines of the last TTY redraw, to move the cursor back over."""
        self._last_draw = float("-inf")
        self._last_line = ""

    def update(self, message: Mapping[str, Any]) -> None:
        """Fold in one progress message; draw if the last drawing is old enough."""
        if not self.progress.add(message):
            return
        now = self._clock()
        if now - self._last_draw >= (REDRAW_INTERVAL if self.tty else LINE_INTERVAL):
            self._last_draw = now
            self._draw(final=False)

    def finish(self, *, success: bool) -> None:
        """Draw where the transfer ended (whole on success); nothing if no layer moved."""
        if self.progress.layers:
            self._draw(final=success)

    def _draw(self, *, final: bool) -> None:
        if not self.tty:
            line = f"{self.progress.verbs.active} {summary(self.progress, final=final)}"
            if line != self._last_line:  # the final line may say what the last one did
                self.out.write(line + "\n")
                self.out.flush()
            self._last_line = line
            return
        size = shutil.get_terminal_size()
        width = self._width or size.columns
        height = self._height or size.lines
        lines = tty_lines(self.progress, width, height, final=final)
        up = f"\033[{self._drawn}A" if self._drawn else ""
        # Erase what was there before, in case the block got shorter.
        stale = max(0, self._drawn - len(lines))
        self.out.write(up + "".join(f"{_ERASE_LINE}{line}\n" for line in lines))
        if stale:
            self.out.write(f"{_ERASE_LINE}\n" * stale + f"\033[{stale}A")
        self.out.flush()
        self._drawn = len(lines)
