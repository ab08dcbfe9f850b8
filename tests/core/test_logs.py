"""DMR's log files: bracket stamps, bounded files, the merge by time, and following them."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from modelrunner.core.log_files import (
    ENGINE_LOG,
    SERVICE_LOG,
    LogFile,
    ServiceLogHandler,
    bracket_stamp,
    open_log_dir,
)
from modelrunner.core.log_stream import LogNotFound, LogsUnavailable, merge_lines, stream_logs

STAMPED = re.compile(r"^\[(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.(\d{9})Z\] (.*)$")


def stamp(second: int, nanos: int = 0) -> bytes:
    """A bracket stamp at 2026-01-02T03:04:<second>.<nanos>Z."""
    return f"[2026-01-02T03:04:{second:02d}.{nanos:09d}Z] ".encode()


def test_bracket_stamp_is_utc_with_nine_fractional_digits() -> None:
    ns = 1_767_323_045_123_456_789  # 2026-01-02T03:04:05.123456789Z
    assert bracket_stamp(ns) == "[2026-01-02T03:04:05.123456789Z] "
    assert bracket_stamp(1_767_323_045_000_000_001) == "[2026-01-02T03:04:05.000000001Z] "
    match = STAMPED.match(bracket_stamp() + "x")
    assert match is not None
    written = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    assert abs(written.timestamp() - time.time()) < 5


def test_log_file_stamps_every_line_and_keeps_empty_ones(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "nested" / "engine.log")
    log.write_line("first")
    log.write_line("two\n\nlines\r")
    lines = (tmp_path / "nested" / "engine.log").read_text().splitlines()
    matches = [STAMPED.match(line) for line in lines]
    assert [match.group(3) for match in matches if match] == ["first", "two", "", "lines"]
    assert lines[1][:32] == lines[3][:32]  # one write, one stamp


def test_log_file_rotates_past_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "inference.log"
    log = LogFile(path, max_bytes=1000)
    for number in range(40):
        log.write_line(f"line {number:03d} " + "x" * 40)
    rotated = path.with_name("inference.log.1")
    assert rotated.stat().st_size <= 1000 + 100
    assert path.stat().st_size <= 1000 + 100
    kept = rotated.read_text().splitlines() + path.read_text().splitlines()
    assert kept[-1].split("] ", 1)[1].startswith("line 039 ")
    numbers = [int(line.split("] line ", 1)[1][:3]) for line in kept]
    assert numbers == sorted(numbers)  # the newest lines, in order, none twice


def test_log_file_never_raises(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = LogFile(blocker / "inference.log")
    log.write_line("lost")
    assert log.failures == 1


def test_service_handler_writes_records_with_level_and_logger(tmp_path: Path) -> None:
    handler = ServiceLogHandler(tmp_path)
    logger = logging.getLogger("modelrunner.test_logs")
    logger.addHandler(handler)
    try:
        logger.warning("disk %s is %d%% full", "sda", 93)
    finally:
        logger.removeHandler(handler)
    (line,) = (tmp_path / SERVICE_LOG).read_text().splitlines()
    match = STAMPED.match(line)
    assert match is not None
    assert match.group(3) == "WARNING modelrunner.test_logs: disk sda is 93% full"


def test_open_log_dir_creates_the_service_log_or_says_none(tmp_path: Path) -> None:
    assert open_log_dir(tmp_path / "logs") == tmp_path / "logs"
    assert (tmp_path / "logs" / SERVICE_LOG).is_file()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert open_log_dir(blocker / "logs") is None
    assert open_log_dir(None) is None


def test_merge_orders_by_stamp_service_first_on_a_tie() -> None:
    service = [stamp(1) + b"s1", stamp(3) + b"s3", stamp(5, 1) + b"s5"]
    engine = [stamp(2) + b"e2", stamp(3) + b"e3", stamp(5) + b"e5", stamp(6) + b"e6"]
    merged = [line.split(b"] ")[1] for line in merge_lines(service, engine)]
    assert merged == [b"s1", b"e2", b"s3", b"e3", b"e5", b"s5", b"e6"]


def test_merge_passes_unstamped_lines_on_as_read_and_drops_empty_ones() -> None:
    service = [stamp(1) + b"s1", b"Traceback (most recent call last):", stamp(4) + b"s4"]
    engine = [b"banner", stamp(2) + b"e2", b"", stamp(3) + b"e3"]
    merged = list(merge_lines(service, engine))
    assert merged == [
        b"banner",  # read while looking for the engine's first stamped line
        stamp(1) + b"s1",
        b"Traceback (most recent call last):",  # read while looking for the service's next one
        stamp(2) + b"e2",
        stamp(3) + b"e3",
        stamp(4) + b"s4",
    ]


def test_merge_compares_fractions_of_any_length() -> None:
    service = [b"[2026-01-02T03:04:05.5Z] s"]
    engine = [b"[2026-01-02T03:04:05.400000000Z] e"]
    assert [line[-1:] for line in merge_lines(service, engine)] == [b"e", b"s"]


def write(path: Path, *lines: bytes) -> None:
    with path.open("ab") as stream:
        stream.write(b"".join(line + b"\n" for line in lines))


async def collect(stream: AsyncGenerator[bytes, None]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_stream_merges_both_files(tmp_path: Path) -> None:
    write(tmp_path / SERVICE_LOG, stamp(1) + b"s1", stamp(3) + b"s3")
    write(tmp_path / ENGINE_LOG, stamp(2) + b"e2")
    everything = await collect(stream_logs(tmp_path, follow=False, engines=True))
    assert everything == stamp(1) + b"s1\n" + stamp(2) + b"e2\n" + stamp(3) + b"s3\n"
    service_only = await collect(stream_logs(tmp_path, follow=False, engines=False))
    assert service_only == stamp(1) + b"s1\n" + stamp(3) + b"s3\n"


async def test_stream_without_engine_log_or_service_log(tmp_path: Path) -> None:
    write(tmp_path / SERVICE_LOG, stamp(1) + b"only")
    assert await collect(stream_logs(tmp_path, follow=False, engines=True)) == stamp(1) + b"only\n"
    with pytest.raises(LogNotFound, match="service log not found"):
        stream_logs(tmp_path / "elsewhere", follow=False, engines=True)
    with pytest.raises(LogsUnavailable):
        stream_logs(None, follow=False, engines=True)


async def next_chunk(stream: AsyncGenerator[bytes, None]) -> bytes:
    return await asyncio.wait_for(anext(stream), 5)


async def test_follow_goes_on_from_where_the_read_ended(tmp_path: Path) -> None:
    service, engine = tmp_path / SERVICE_LOG, tmp_path / ENGINE_LOG
    write(service, stamp(1) + b"old")
    write(engine, stamp(2) + b"half", stamp(3) + b"partial line")
    with engine.open("ab") as stream:  # a line without its newline yet
        stream.write(stamp(4) + b"unfinished")
    followed = stream_logs(tmp_path, follow=True, engines=True, poll=0.01)
    try:
        first = await next_chunk(followed)
        assert first == stamp(1) + b"old\n" + stamp(2) + b"half\n" + stamp(3) + b"partial line\n"
        with engine.open("ab") as stream:
            stream.write(b" now done\n")
        write(service, stamp(5) + b"new service line")
        received = b""
        while received.count(b"\n") < 2:
            received += await next_chunk(followed)
        assert received == stamp(4) + b"unfinished now done\n" + stamp(5) + b"new service line\n"
    finally:
        await followed.aclose()


async def test_follow_reads_a_rotated_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    service = tmp_path / SERVICE_LOG
    write(service, stamp(1) + b"before")
    followed = stream_logs(tmp_path, follow=True, engines=False, poll=0.01)
    try:
        assert await next_chunk(followed) == stamp(1) + b"before\n"
        write(service, stamp(2) + b"last of the old file")
        service.rename(tmp_path / (SERVICE_LOG + ".1"))
        write(service, stamp(3) + b"first of the new file")
        received = b""
        while received.count(b"\n") < 2:
            received += await next_chunk(followed)
        assert (
            received == stamp(2) + b"last of the old file\n" + stamp(3) + b"first of the new file\n"
        )
    finally:
        await followed.aclose()


async def test_follow_picks_up_an_engine_log_created_later(tmp_path: Path) -> None:
    write(tmp_path / SERVICE_LOG, stamp(1) + b"service")
    followed = stream_logs(tmp_path, follow=True, engines=True, poll=0.01)
    try:
        assert await next_chunk(followed) == stamp(1) + b"service\n"
        LogFile(tmp_path / ENGINE_LOG).write_line("llama-server says hi")
        line = await next_chunk(followed)
        match = STAMPED.match(line.decode())
        assert match is not None
        assert match.group(3) == "llama-server says hi"
    finally:
        await followed.aclose()


async def test_follow_keeps_a_line_written_just_before_the_rotation_it_then_sees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer appends and rotates between the follower's read and its look at the path.
    service = tmp_path / SERVICE_LOG
    write(service, stamp(1) + b"before")
    followed = stream_logs(tmp_path, follow=True, engines=False, poll=0.01)
    real_stat = os.stat
    raced = False

    def racing_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        nonlocal raced
        if Path(path) == service and not raced:
            raced = True
            write(service, stamp(2) + b"last of the old file")
            service.rename(tmp_path / (SERVICE_LOG + ".1"))
            write(service, stamp(3) + b"first of the new file")
        return real_stat(path, *args, **kwargs)

    try:
        assert await next_chunk(followed) == stamp(1) + b"before\n"
        monkeypatch.setattr(os, "stat", racing_stat)
        received = b""
        while b"first of the new file" not in received:
            received += await next_chunk(followed)
        assert (
            received == stamp(2) + b"last of the old file\n" + stamp(3) + b"first of the new file\n"
        )
    finally:
        await followed.aclose()
