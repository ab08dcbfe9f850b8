"""LlamaServer: llama-server's argv for one model (DMR defaults, LLAMA_ARGS) and its readiness."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from modelrunner.core.errors import InvalidInput, RunnerFailed
from modelrunner.core.inference.process import (
    OutputLog,
    ProcessExited,
    ProcessState,
    SupervisedProcess,
)

DEFAULT_BASE_ARGS = ("-ngl", "999", "--metrics")
"""DMR's base arguments on Linux; LLAMA_ARGS replaces them."""

FORBIDDEN_FLAGS = ("--model", "-m", "--host", "--port", "--embeddings", "--mmproj")
"""Flags LLAMA_ARGS may not carry: we set them per model (also refused in `--flag=value` form)."""

_CTX_FLAGS = ("-c", "--ctx-size")
_RUNTIME_DIR = re.compile(r"^mr-(\d+)-")
"""Runtime dirs are named after the pid of the process that owns the runner."""


class BundleLike(Protocol):
    """What LlamaServer needs from a stored model's bundle (core.store.bundle.Bundle has these)."""

    @property
    def gguf(self) -> Path: ...
    @property
    def mmproj(self) -> Path | None: ...
    @property
    def chat_template(self) -> Path | None: ...
    @property
    def config(self) -> Mapping[str, Any]: ...


def check_llama_args(args: Sequence[str]) -> tuple[str, ...]:
    """Return LLAMA_ARGS as a tuple, or raise InvalidInput if it sets what we set per model."""
    for arg in args:
        flag = arg.split("=", 1)[0] if arg.startswith("--") else arg
        if flag in FORBIDDEN_FLAGS:
            raise InvalidInput(
                f"LLAMA_ARGS may not contain {arg!r}: modelrunner sets "
                f"{', '.join(FORBIDDEN_FLAGS)} itself for each model"
            )
    return tuple(args)


def sweep_stale_runtime_dirs(parent: Path | None = None) -> list[Path]:
    """Remove socket dirs left by modelrunner processes that were killed; return them.

    A runner dies with its owner (parent-death signal), so a dir whose owner pid is gone
    holds only a dead socket.
    """
    removed: list[Path] = []
    for candidate in Path(parent or tempfile.gettempdir()).glob("mr-*-*"):
        match = _RUNTIME_DIR.match(candidate.name)
        if match is None or not candidate.is_dir() or candidate.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        except PermissionError:
            pass  # alive, someone else's
    return removed


def _sets_ctx_size(args: Sequence[str]) -> bool:
    return any(arg.split("=", 1)[0] in _CTX_FLAGS for arg in args)


def build_argv(
    binary: Path,
    bundle: BundleLike,
    socket_path: Path,
    llama_args: Sequence[str] | None = None,
) -> list[str]:
    """llama-server's command line for `bundle`, in DMR's order (reference §4.1.1).

    Differences from DMR, on purpose: `--port 0` makes the Unix socket explicit, `-m`/`--model=`
    are refused in LLAMA_ARGS too, and a context size in LLAMA_ARGS wins over the packaged one.
    """
    base = DEFAULT_BASE_ARGS if llama_args is None else check_llama_args(llama_args)
    argv = [str(binary), *base, "--model", str(bundle.gguf)]
    argv += ["--host", str(socket_path), "--port", "0"]
    if bundle.chat_template is not None:
        argv += ["--chat-template-file", str(bundle.chat_template)]
    context_size = bundle.config.get("context_size")
    if (
        isinstance(context_size, int)
        and not isinstance(context_size, bool)
        and (context_size > 0 or context_size == -1)
        and not _sets_ctx_size(base)
    ):
        argv += ["--ctx-size", str(context_size)]
    # DMR's rule: a model with a projector gets --mmproj and no --jinja.
    if bundle.mmproj is not None:
        argv += ["--mmproj", str(bundle.mmproj)]
    else:
        argv.append("--jinja")
    return argv


async def probe_health(socket_path: Path, within: float = 2.0) -> bool:
    """True if GET /health on the Unix socket answers 200 (llama-server says 503 while loading)."""
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
            try:
                writer.write(
                    b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    parts = status_line.split()
    return len(parts) >= 2 and parts[1] == b"200"


class LlamaServer:
    """One llama-server process serving one model over a private Unix socket."""

    def __init__(
        self,
        binary: Path,
        bundle: BundleLike,
        *,
        model_id: str,
        reference: str,
        llama_args: Sequence[str] | None = None,
        log_file: Path | None = None,
        on_state: Callable[[LlamaServer, ProcessState], None] | None = None,
    ) -> None:
        self.model_id = model_id
        self.reference = reference
        """The reference of the request that loaded it."""
        self.binary = binary
        self.bundle = bundle
        self.llama_args = None if llama_args is None else check_llama_args(llama_args)
        self.has_metrics = llama_args is None or "--metrics" in llama_args
        """Whether /metrics is served (LLAMA_ARGS may have dropped --metrics)."""
        # AF_UNIX paths are limited to ~107 bytes: keep the socket in a short private directory.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix=f"mr-{os.getpid()}-"))
        self.socket_path = self.runtime_dir / "llama.sock"
        self.argv = build_argv(binary, bundle, self.socket_path, self.llama_args)
        self.last_used = time.time()
        self._on_state = on_state
        self.process = SupervisedProcess(
            self.argv, log=OutputLog(200, log_file), on_state=self._state_changed
        )

    def _state_changed(self, state: ProcessState) -> None:
        if self._on_state is not None:
            self._on_state(self, state)

    @property
    def state(self) -> ProcessState:
        return self.process.state

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def started_at(self) -> float | None:
        return self.process.started_at

    @property
    def ready(self) -> bool:
        return self.process.state is ProcessState.READY and self.process.alive

    def tail(self, count: int = 20) -> list[str]:
        """The last lines llama-server wrote."""
        return self.process.log.tail(count)

    async def start(self, ready_timeout: float = 600.0) -> None:
        """Start llama-server and return once /health answers 200.

        Raises:
            RunnerFailed: It exited before becoming ready (with the tail of its output),
                could not be started at all, or was not ready within `ready_timeout` seconds.
        """
        self.socket_path.unlink(missing_ok=True)
        try:
            await self.process.start()
        except OSError as error:
            self._remove_runtime_dir()
            raise RunnerFailed(f"cannot start {self.binary}: {error}") from error
        try:
            await self.process.wait_ready(lambda: probe_health(self.socket_path), ready_timeout)
        except ProcessExited as exited:
            await self.stop()
            tail = "\n".join(exited.tail[-20:])
            raise RunnerFailed(
                f"llama-server for {self.reference} exited with status {exited.returncode} "
                f"before it was ready:\n{tail}"
            ) from exited
        except TimeoutError as error:
            tail = "\n".join(self.tail(20))
            await self.stop()
            raise RunnerFailed(
                f"llama-server for {self.reference} not ready after {ready_timeout:g} s:\n{tail}"
            ) from error
        except BaseException:
            await self.stop()
            raise

    async def stop(self, grace: float = 5.0) -> int | None:
        """Stop llama-server (SIGTERM, then SIGKILL after `grace` seconds) and remove its socket."""
        try:
            return await self.process.stop(grace)
        finally:
            self._remove_runtime_dir()

    def _remove_runtime_dir(self) -> None:
        shutil.rmtree(self.runtime_dir, ignore_errors=True)
