"""DMR's two log files under MODEL_RUNNER_LOG_DIR, written one bracket-stamped line at a time.

`inference.log` holds the service's own log records, `inference-llama.cpp-server.log` every
llama-server's output. Each line starts with `[2006-01-02T15:04:05.000000000Z] ` (UTC, nine
fractional digits), as DMR's BracketWriter writes it, so GET /logs can merge the two by time.

A file is bounded: once a write takes it past `MAX_BYTES` it is renamed to `<name>.1` (replacing
the previous one) and the next line starts a new file. Each write opens the file with O_APPEND,
writes one whole line, and closes it: two processes sharing the directory (a TUI and a headless
server) interleave whole lines, and one sees the other's rotation at its next line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

SERVICE_LOG = "inference.log"
"""The service's log records (DMR's name)."""
ENGINE_LOG = "inference-llama.cpp-server.log"
"""Every llama-server's output (DMR's name: one file for all runners)."""
MAX_BYTES = 10 * 1024 * 1024
"""A log file is rotated once it grows past this (to `<name>.1`, one generation kept)."""
SERVICE_FORMAT = "%(levelname)-7s %(name)s: %(message)s"
"""A service record after its bracket stamp (the stamp already says when)."""


def bracket_stamp(ns: int | None = None) -> str:
    """`[2006-01-02T15:04:05.000000000Z] ` for `ns` nanoseconds since the epoch (default: now)."""
    if ns is None:
        ns = time.time_ns()
    seconds, fraction = divmod(ns, 1_000_000_000)
    return f"[{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{fraction:09d}Z] "


class LogFile:
    """One append-only log file whose lines are bracket-stamped; rotated past `max_bytes`.

    Writing never raises: a log that cannot be written (disk full, directory removed) must not
    break what is being logged. The file is created on the first line.
    """

    def __init__(self, path: Path, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.failures = 0
        """Lines that could not be written."""

    def write_line(self, text: str) -> None:
        """Append `text` stamped with the time now; each line of a multi-line text is stamped."""
        stamp = bracket_stamp()
        lines = text.removesuffix("\n").split("\n")
        data = "".join(f"{stamp}{line.rstrip(chr(13))}\n" for line in lines).encode(
            "utf-8", "replace"
        )
        with self._lock:
            try:
                self._append(data)
            except OSError:
                self.failures += 1

    def _append(self, data: bytes) -> None:
        try:
            descriptor = _open_for_append(self.path)
        except FileNotFoundError:  # the directory went away (a tmp cleaner): make it again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = _open_for_append(self.path)
        try:
            os.write(descriptor, data)
            written = os.fstat(descriptor)
            if written.st_size > self.max_bytes:
                self._rotate(written)
        finally:
            os.close(descriptor)

    def _rotate(self, written: os.stat_result) -> None:
        """Rename the file to `<name>.1`, unless another writer has rotated it already."""
        with contextlib.suppress(FileNotFoundError):
            current = os.stat(self.path)
            if (current.st_dev, current.st_ino) == (written.st_dev, written.st_ino):
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))


def _open_for_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class ServiceLogHandler(logging.Handler):
    """A logging handler writing each record, bracket-stamped, to `<directory>/inference.log`.

    Nothing goes to stderr when it fails (the TUI owns the terminal): the record is counted in
    `log_file.failures` and dropped.
    """

    def __init__(self, directory: str | Path, *, max_bytes: int = MAX_BYTES) -> None:
        super().__init__()
        self.log_file = LogFile(Path(directory) / SERVICE_LOG, max_bytes=max_bytes)
        self.setFormatter(logging.Formatter(SERVICE_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a record whose arguments do not format
            self.log_file.failures += 1
            return
        self.log_file.write_line(text)


def open_log_dir(directory: Path | None) -> Path | None:
    """Create the log directory and the service log; None (no log files) when that fails.

    DMR does the same at start: without its directory the service logs to stderr only.
    """
    if directory is None:
        return None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = _open_for_append(directory / SERVICE_LOG)
    except OSError:
        return None
    os.close(descriptor)
    return directory
