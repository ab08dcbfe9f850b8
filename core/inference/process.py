"""SupervisedProcess: a child in its own session that dies with us; stopped by SIGTERM then KILL."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO


class ProcessState(enum.Enum):
    """Where a supervised process is in its life."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    STOPPING = "stopping"
    FAILED = "failed"
    """It exited without being asked to, or never became ready."""


class ProcessExited(Exception):
    """The process exited while we were waiting for it to become ready."""

    def __init__(self, returncode: int, tail: list[str]) -> None:
        super().__init__(f"exited with status {returncode}")
        self.returncode = returncode
        self.tail = tail


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """Return a preexec_fn that asks Linux to SIGKILL the child when its parent goes away.

    Linux sends the signal when the *thread* that forked exits: asyncio forks on the event
    loop's thread, so the guarantee holds as long as that loop's thread lives.
    """
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork: no dlopen in the child

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would ever kill us.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


OUTPUT_FILE_MAX_BYTES = 4 * 1024 * 1024
"""A mirror file past this is renamed to `<name>.1` (one generation kept), so a model's output
file stays bounded however many times it is loaded."""


class OutputLog:
    """The last lines a process wrote, optionally mirrored to a bounded file."""

    def __init__(
        self,
        max_lines: int = 200,
        path: Path | None = None,
        on_line: Callable[[str], None] | None = None,
        max_file_bytes: int = OUTPUT_FILE_MAX_BYTES,
    ) -> None:
        self.lines: deque[str] = deque(maxlen=max_lines)
        """The newest lines, oldest first, without line endings."""
        self.path = path
        self.on_line = on_line
        """Called with each line as it arrives (e.g. to follow a model's loading)."""
        self.max_file_bytes = max_file_bytes
        self._file: IO[str] | None = None
        self._file_bytes = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        self._file = self.path.open("a", encoding="utf-8")
        self._file_bytes = self._file.tell()
        if self._file_bytes > self.max_file_bytes:
            self._file.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._file = self.path.open("a", encoding="utf-8")
            self._file_bytes = 0

    def append(self, line: str) -> None:
        self.lines.append(line)
        if self.on_line is not None:
            self.on_line(line)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
            self._file_bytes += len(line.encode("utf-8", "replace")) + 1
            if self._file_bytes > self.max_file_bytes:
                self._file.close()
                self._open()

    def tail(self, count: int = 20) -> list[str]:
        """The last `count` lines."""
        return list(self.lines)[-count:]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SupervisedProcess:
    """One child process: started in a new session, killed with its parent, stopped gracefully."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log: OutputLog | None = None,
        on_state: Callable[[ProcessState], None] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log = log if log is not None else OutputLog()
        """stdout and stderr, interleaved, line by line."""
        self.state = ProcessState.STOPPED
        self.returncode: int | None = None
        self.started_at: float | None = None
        """Wall-clock time of the last start, in Unix seconds."""
        self._on_state = on_state
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._exited = asyncio.Event()

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        if self._process is None or self._exited.is_set():
            return None
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and not self._exited.is_set()

    def _set_state(self, state: ProcessState) -> None:
        if state is self.state:
            return
        self.state = state
        if self._on_state is not None:
            self._on_state(state)

    async def start(self) -> None:
        """Spawn the child; its state becomes STARTING until mark_ready() or it exits."""
        if self.alive:
            raise RuntimeError("process is already running")
        self._exited = asyncio.Event()
        self.returncode = None
        preexec = _die_with_parent(os.getpid()) if sys.platform == "linux" else None
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
            preexec_fn=preexec,
            limit=1 << 20,
        )
        self.started_at = time.time()
        self._set_state(ProcessState.STARTING)
        self._watcher = asyncio.create_task(self._watch(self._process))

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """Reap the child when it exits (so no zombie is left) and record its status."""
        reader = asyncio.create_task(self._read_output(process))
        try:
            self.returncode = await process.wait()
            # A grandchild could hold the pipe open: don't wait on it for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), 1.0)
        finally:
            reader.cancel()
            self._exited.set()
            if self.state is not ProcessState.STOPPING:
                self._set_state(ProcessState.FAILED)

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        """Copy output into the log line by line until EOF; a line longer than the stream's
        limit is passed on in pieces (and reading goes on: a child with a full pipe hangs)."""
        stdout = process.stdout
        assert stdout is not None
        while True:
            try:
                raw = await stdout.readuntil(b"\n")
            except asyncio.LimitOverrunError as overrun:
                raw = await stdout.read(overrun.consumed)
            except asyncio.IncompleteReadError as end:
                raw = end.partial
                if not raw:
                    return
            self.log.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def mark_ready(self) -> None:
        if self.alive and self.state is ProcessState.STARTING:
            self._set_state(ProcessState.READY)

    async def wait_ready(
        self,
        probe: Callable[[], Awaitable[bool]],
        ready_timeout: float,
        *,
        first_delay: float = 0.005,
        max_delay: float = 0.1,
        fast_for: float = 2.0,
    ) -> None:
        """Poll `probe` until it returns True, then mark the process READY.

        The first `fast_for` seconds poll every `first_delay` (a small model is ready in a few
        hundred milliseconds, and each probe is a cheap local request); after that the delay
        grows to `max_delay`.

        Raises:
            ProcessExited: The process exited first (carries the tail of its output).
            TimeoutError: `probe` did not succeed within `ready_timeout` seconds.
        """
        started = time.monotonic()
        deadline = started + ready_timeout
        delay = first_delay
        while True:
            if self._exited.is_set():
                raise ProcessExited(self.returncode or 0, self.log.tail())
            if await probe():
                self.mark_ready()
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"not ready after {ready_timeout:g} s")
            # Wake early if the process exits while we wait.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exited.wait(), min(delay, remaining))
            if time.monotonic() - started > fast_for:
                delay = min(delay * 2, max_delay)

    async def wait(self) -> int:
        """Wait for the process to exit and return its exit status."""
        await self._exited.wait()
        if self._watcher is not None:
            await self._watcher
        assert self.returncode is not None
        return self.returncode

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._process is None or self._exited.is_set():
            return
        # start_new_session made the child a group leader: its pgid is its pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, sig)

    async def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the process group, wait `grace` seconds, then SIGKILL it; return its status."""
        if self._process is None:
            return None
        if self.alive:
            self._set_state(ProcessState.STOPPING)
            self._signal_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(self._exited.wait(), grace)
            except TimeoutError:
                self._signal_group(signal.SIGKILL)
        returncode = await self.wait()
        self._set_state(ProcessState.STOPPED)
        self.log.close()
        return returncode
