"""The pull/push progress display, fed scripted DMR messages: TTY bars and plain lines."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from modelrunner.server.cli.client import CliError
from modelrunner.server.cli.main import build_parser
from modelrunner.server.cli.progress_bars import (
    STATUS_WIDTH,
    ProgressDisplay,
    bar,
    format_eta,
    tty_lines,
)
from modelrunner.server.cli.transfer import follow

WEIGHTS = "sha256:" + "a1" * 32
LICENSE = "sha256:" + "c3" * 32
TOTAL = 4_000_000 + 1_000


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress(layer: str, current: int, size: int, mode: str = "pull") -> dict[str, Any]:
    verb = "Downloaded" if mode == "pull" else "Uploaded"
    return {
        "type": "progress",
        "message": f"{verb}: {current / (1 << 20):.2f} MB",
        "total": TOTAL,
        "layer": {"id": layer, "size": size, "current": current},
        "mode": mode,
    }


def success(mode: str = "pull") -> dict[str, Any]:
    text = "Model pulled successfully" if mode == "pull" else "Model pushed successfully"
    layer = {"size": 0, "current": 0}
    return {"type": "success", "message": text, "total": 0, "layer": layer, "mode": mode}


def screen(written: str) -> list[str]:
    """What a terminal shows after `written`: cursor-up, erase-line and \\r applied."""
    rows: list[str] = []
    row = 0
    for token in re.split(r"(\x1b\[\d*[AK]|\x1b\[2K|\r|\n)", written):
        if not token or token == "\r":
            continue
        if token == "\n":
            row += 1
        elif token.endswith("A"):
            row -= int(token[2:-1] or 1)
        elif token.startswith("\x1b["):
            if row < len(rows):
                rows[row] = ""
        else:
            rows.extend([""] * (row + 1 - len(rows)))
            rows[row] += token
    return rows


def scripted_pull(display: ProgressDisplay, clock: Clock) -> None:
    """Two layers: the license done at once, the weights in three steps, 0.2 s apart."""
    for seconds, message in [
        (0.0, progress(WEIGHTS, 0, 4_000_000)),
        (0.05, progress(LICENSE, 1_000, 1_000)),
        (0.2, progress(WEIGHTS, 1_000_000, 4_000_000)),
        (0.4, progress(WEIGHTS, 2_000_000, 4_000_000)),
        (0.45, progress(WEIGHTS, 4_000_000, 4_000_000)),
    ]:
        clock.now = 100.0 + seconds
        display.update(message)


def test_a_tty_gets_docker_layer_lines_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "pull", tty=True, width=120, height=40, clock=clock)
    scripted_pull(display, clock)
    clock.now = 100.4
    written_mid = out.getvalue()
    display.finish(success=True)

    middle = screen(written_mid)
    assert middle[0].startswith(f"a1a1a1a1a1a1: {'Downloading':<{STATUS_WIDTH}} [")
    assert middle[0].endswith("]    2.00 MB/4.00 MB")
    assert middle[1] == "c3c3c3c3c3c3: Pull complete"
    assert middle[2].startswith("Total: 50.0% 2.00 MB of 4.00 MB  ")
    assert "ETA " in middle[2]
    final = screen(out.getvalue())
    assert final == [
        "a1a1a1a1a1a1: Pull complete",
        "c3c3c3c3c3c3: Pull complete",
        final[2],
    ]
    assert final[2].startswith("Total: 100.0% 4.00 MB of 4.00 MB  ")
    assert "ETA" not in final[2]
    # 0.0 and 0.2 and 0.4 were drawn (the 0.05 and 0.45 updates came too soon), then the end.
    assert out.getvalue().count("Total:") == 4
    assert "\x1b[3A" in out.getvalue()


def test_the_first_lines_say_waiting_and_a_narrow_terminal_drops_the_bar() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "pull", tty=True, width=55, height=40, clock=clock)
    display.update(progress(WEIGHTS, 0, 4_000_000))
    assert screen(out.getvalue())[0] == "a1a1a1a1a1a1: Waiting"
    clock.now += 1
    display.update(progress(WEIGHTS, 1_000_000, 4_000_000))
    line = screen(out.getvalue())[0]
    assert line == f"a1a1a1a1a1a1: {'Downloading':<13} {'1.00 MB':>9}/4.00 MB"
    assert all(len(row) < 55 for row in screen(out.getvalue()))


def test_push_statuses_and_the_ones_a_server_may_name() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "push", tty=True, width=120, height=40, clock=clock)
    display.update(progress(WEIGHTS, 500_000, 4_000_000, "push"))
    clock.now += 1
    exists = {**progress(LICENSE, 1_000, 1_000, "push"), "message": "Already exists"}
    display.update(exists)
    rows = screen(out.getvalue())
    assert rows[0].startswith(f"a1a1a1a1a1a1: {'Uploading':<13} [")
    assert rows[1] == "c3c3c3c3c3c3: Already exists"
    display.update(progress(WEIGHTS, 4_000_000, 4_000_000, "push"))
    display.finish(success=True)
    assert screen(out.getvalue())[0] == "a1a1a1a1a1a1: Push complete"


def test_a_pipe_gets_throttled_summary_lines_and_a_final_one() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "pull", tty=False, clock=clock)
    scripted_pull(display, clock)
    clock.now = 103.0
    display.update(progress(WEIGHTS, 4_000_000, 4_000_000))  # 3 s later: due again
    display.finish(success=True)

    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert lines[0] == "Downloading   0.0% 0.00 B of 4.00 MB  0.00 B/s"
    assert lines[1].startswith("Downloading 100.0% 4.00 MB of 4.00 MB  ")
    assert lines[-1].startswith("Downloading 100.0% 4.00 MB of 4.00 MB  ")
    assert len(lines) == 3


def test_follow_prints_the_success_message_after_the_bars() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "pull", tty=True, width=100, height=40, clock=clock)
    messages = [progress(WEIGHTS, 0, 4_000_000), progress(WEIGHTS, 4_000_000, 4_000_000)]
    assert follow(iter([*messages, success()]), "pull", as_json=False, display=display) == 0
    rows = screen(out.getvalue())
    assert rows[0] == "a1a1a1a1a1a1: Pull complete"
    assert rows[-1] == "Model pulled successfully"


def test_follow_json_is_dmrs_ndjson_untouched(capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    messages = [progress(WEIGHTS, 0, 4_000_000), success()]
    follow(iter(messages), "pull", as_json=True, out=out)
    assert out.getvalue().splitlines() == [
        '{"type": "progress", "message": "Downloaded: 0.00 MB", "total": 4001000, '
        '"layer": {"id": "' + WEIGHTS + '", "size": 4000000, "current": 0}, "mode": "pull"}',
        '{"type": "success", "message": "Model pulled successfully", "total": 0, '
        '"layer": {"size": 0, "current": 0}, "mode": "pull"}',
    ]


def test_an_error_message_ends_the_display_and_fails() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "pull", tty=False, clock=clock)
    error = {**success(), "type": "error", "message": "Error: the registry went away"}
    messages = iter([progress(WEIGHTS, 100, 4_000_000), error])
    with pytest.raises(CliError, match=r"^the registry went away$"):
        follow(messages, "pull", as_json=False, display=display)
    assert out.getvalue().splitlines()[-1].startswith("Downloading   0.0% 100.00 B of 4.00 MB")


def test_many_layers_on_a_short_terminal_fold_the_finished_ones() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, "pull", tty=True, width=100, height=6, clock=clock)
    for index in range(8):
        layer = f"sha256:{index:02d}" + "0" * 62
        display.progress.add(progress(layer, 10 if index < 6 else 0, 10))
    lines = tty_lines(display.progress, 100, 6)
    assert lines == [
        "060000000000: Waiting",
        "070000000000: Waiting",
        "… and 6 more layers",
        lines[-1],
    ]
    assert lines[-1].startswith("Total: ")


def test_bars_and_etas() -> None:
    assert bar(0.0, 10) == "[>         ]"
    assert bar(0.5, 10) == "[=====>    ]"
    assert bar(1.0, 10) == "[==========]"
    assert [format_eta(s) for s in (4.6, 65, 7260)] == ["5s", "1m05s", "2h01m"]


def test_package_push_and_updates_pull_are_in_the_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["package", "--help"])
    package_help = " ".join(capsys.readouterr().out.split())
    assert "--push" in package_help
    assert "through the server" in package_help
    with pytest.raises(SystemExit):
        parser.parse_args(["updates", "--help"])
    assert "--pull" in capsys.readouterr().out
    args = parser.parse_args(["package", "--gguf", "m.gguf", "--push", "reg.example/a/b:v1"])
    assert args.push is True
    assert args.target == "reg.example/a/b:v1"
