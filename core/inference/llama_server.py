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
from modelrunner.core.inference.configure import RunnerConfig
from modelrunner.core.inference.modes import COMPLETION, EMBEDDING, RERANKING
from modelrunner.core.inference.process import (
    OutputLog,
    ProcessExited,
    ProcessState,
    SupervisedProcess,
)
from modelrunner.core.inference.sandbox import SandboxPaths, sandbox_tool, sandboxed_argv
from modelrunner.core.log_files import LogFile

DEFAULT_BASE_ARGS = ("-ngl", "999", "--metrics")
"""DMR's base arguments on Linux; LLAMA_ARGS replaces them."""

FORBIDDEN_FLAGS = ("--model", "-m", "--host", "--port", "--embeddings", "--mmproj")
"""Flags LLAMA_ARGS may not carry: we set them per model (also refused in `--flag=value` form)."""

_CTX_FLAGS = ("-c", "--ctx-size")
_RUNTIME_DIR = re.compile(r"^mr-(\d+)-")
"""Runtime dirs are named after the pid of the process that owns the runner."""


LOG_LINES_READ = 40
"""How much of llama-server's output is searched for why it failed."""

_LOG_LINE = re.compile(r"^\d+\.\d+\.\d+\.\d+ ([A-Z]) (?:\w+ +)?(.*)$")
"""llama.cpp's log format: "0.00.007.800 E llama_model_load: error loading model: …"."""


def failure_reason(lines: Sequence[str], most: int = 2) -> str:
    """Why llama-server failed, from its output: its distinct error lines ("E …" with the
    timestamps dropped, or "error while handling argument …"), else its last lines. The whole
    output stays in the runner's log."""
    errors: list[str] = []
    for line in lines[-LOG_LINES_READ:]:
        match = _LOG_LINE.match(line.strip())
        if match is not None and match.group(1) == "E":
            error = match.group(2)
        elif line.lower().startswith("error"):  # its argument parser: no log format yet
            error = line.strip()
        else:
            continue
        if error not in errors:
            errors.append(error)
    if errors:
        return "; ".join(errors[:most])
    last = [line.strip() for line in lines if line.strip()][-most:]
    return " / ".join(last) if last else "it wrote nothing"


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


def _needs_pooling(bundle: BundleLike, *flag_sets: Sequence[str]) -> bool:
    """Whether an embedding runner must be given a pooling type: the GGUF's metadata is known
    and names none (a chat model), and no flag sets one. llama-server would otherwise answer
    every /v1/embeddings with 400 "Pooling type 'none' is not OAI compatible"."""
    metadata = bundle.config.get("gguf")
    if not isinstance(metadata, Mapping) or any(k.endswith(".pooling_type") for k in metadata):
        return False
    return not any(arg.split("=", 1)[0] == "--pooling" for flags in flag_sets for arg in flags)


def _valid_context_size(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and (value > 0 or value == -1):
        return value
    return None


def build_argv(
    binary: Path,
    bundle: BundleLike,
    socket_path: Path,
    llama_args: Sequence[str] | None = None,
    *,
    mode: str = COMPLETION,
    config: RunnerConfig | None = None,
    draft: BundleLike | None = None,
) -> list[str]:
    """llama-server's command line for `bundle`, in DMR's order (reference §4.1.1).

    Differences from DMR, on purpose: `--port 0` makes the Unix socket explicit, `-m`/`--model=`
    are refused in LLAMA_ARGS too, a context size in LLAMA_ARGS wins over the packaged one
    (a configured one still wins over both), and an embedding runner of a model whose GGUF
    names no pooling type gets `--pooling mean` (unless a flag sets one), so chat models embed.

    Args:
        mode: "completion", "embedding" or "reranking".
        config: A `_configure`d config: context size, reasoning budget, runtime flags, draft.
        draft: The bundle of config.speculative's draft model.
    """
    base = DEFAULT_BASE_ARGS if llama_args is None else check_llama_args(llama_args)
    config = config or RunnerConfig()
    argv = [str(binary), *base, "--model", str(bundle.gguf)]
    argv += ["--host", str(socket_path), "--port", "0"]
    if mode == COMPLETION and bundle.chat_template is not None:
        argv += ["--chat-template-file", str(bundle.chat_template)]
    if mode == EMBEDDING:
        argv.append("--embeddings")
        if _needs_pooling(bundle, base, config.runtime_flags):
            argv += ["--pooling", "mean"]
    elif mode == RERANKING:
        argv += ["--embeddings", "--reranking"]
    elif mode != COMPLETION:
        raise InvalidInput(f"llama.cpp does not support mode {mode!r}")
    if config.reasoning_budget is not None:
        argv += ["--reasoning-budget", str(config.reasoning_budget)]
    context_size = _valid_context_size(config.context_size)
    if context_size is None and not _sets_ctx_size(base):
        context_size = _valid_context_size(bundle.config.get("context_size"))
    if context_size is not None:
        argv += ["--ctx-size", str(context_size)]
    argv += config.runtime_flags
    # DMR's rule: a model with a projector gets --mmproj and no --jinja.
    if bundle.mmproj is not None:
        argv += ["--mmproj", str(bundle.mmproj)]
    else:
        argv.append("--jinja")
    if config.speculative is not None and draft is not None:
        argv += ["--model-draft", str(draft.gguf)]
        if config.speculative.num_tokens is not None:
            argv += ["--spec-draft-n-max", str(config.speculative.num_tokens)]
        if config.speculative.min_acceptance_rate is not None:
            argv += ["--spec-draft-p-min", f"{config.speculative.min_acceptance_rate:.2f}"]
    return argv


_LOAD_STAGES = (
    ("load_model: loading model", "loading the model"),
    ("threadpool init", "initialising"),
    ("load_model: initializing", "initialising"),
    ("warming up", "warming up"),
    ("model loaded", "model loaded"),
    ("listening on", "listening"),
)


def load_stage(line: str) -> str | None:
    """The loading stage a line of llama-server's output announces, if any."""
    for marker, stage in _LOAD_STAGES:
        if marker in line:
            return stage
    return None


def sandbox_paths(binary: Path, runtime_dir: Path, *bundles: BundleLike | None) -> SandboxPaths:
    """What llama-server reads and writes: its binary, the models' directories, its socket dir."""
    files = [
        path
        for bundle in bundles
        if bundle is not None
        for path in (bundle.gguf, bundle.mmproj, bundle.chat_template)
        if path is not None
    ]
    # A symlinked file needs its link's directory and its target's.
    model_dirs = tuple(dict.fromkeys(d for p in files for d in (p.parent, p.resolve().parent)))
    return SandboxPaths(binary=binary, read_only=model_dirs, writable=(runtime_dir,))


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
        mode: str = COMPLETION,
        config: RunnerConfig | None = None,
        draft: BundleLike | None = None,
        sandbox: bool | None = None,
        on_load_stage: Callable[[str], None] | None = None,
        alias: str | None = None,
        engine_log: LogFile | None = None,
    ) -> None:
        """A stopped runner; `start()` launches it.

        Args:
            mode, config, draft: As for build_argv (a `_configure`d config and its draft model).
            sandbox: Run llama-server in the sandbox: True requires it, False never, None
                follows MODELRUNNER_SANDBOX and otherwise sandboxes wherever bubblewrap works.
            engine_log: DMR's engine log, shared by every runner: each output line goes there
                too, bracket-stamped.

        Raises:
            InvalidInput: LLAMA_ARGS sets what we set per model, or the mode is unsupported.
            RunnerFailed: A sandbox is required and none works here.
        """
        self.model_id = model_id
        self.reference = reference
        """The reference of the request that loaded it."""
        self.binary = binary
        self.bundle = bundle
        self.llama_args = None if llama_args is None else check_llama_args(llama_args)
        self.mode = mode
        self.config = config
        # AF_UNIX paths are limited to ~107 bytes: keep the socket in a short private directory.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix=f"mr-{os.getpid()}-"))
        self.socket_path = self.runtime_dir / "llama.sock"
        try:
            self.argv = build_argv(
                binary, bundle, self.socket_path, self.llama_args,
                mode=mode, config=config, draft=draft,
            )  # fmt: skip
            if alias:  # answers name the model, not its file path
                self.argv[1:1] = ["--alias", alias]
            tool = sandbox_tool(sandbox)
        except BaseException:
            self._remove_runtime_dir()
            raise
        self.has_metrics = "--metrics" in self.argv and "--no-metrics" not in self.argv
        """Whether /metrics is served (LLAMA_ARGS may have dropped --metrics)."""
        self.sandboxed = tool is not None
        """Whether llama-server runs in the sandbox (bubblewrap or sandbox-exec)."""
        self.command = (
            self.argv
            if tool is None
            else sandboxed_argv(
                tool, self.argv, sandbox_paths(binary, self.runtime_dir, bundle, draft)
            )
        )
        """What is executed: `argv`, wrapped by the sandbox when there is one."""
        self.last_used = time.time()
        self._on_state = on_state
        self._on_load_stage = on_load_stage
        self._engine_log = engine_log
        self.load_stage = ""
        """The last loading stage llama-server announced ("loading the model", "listening")."""
        self.process = SupervisedProcess(
            self.command,
            log=OutputLog(200, log_file, on_line=self._line),
            on_state=self._state_changed,
        )

    def _line(self, line: str) -> None:
        if self._engine_log is not None:
            self._engine_log.write_line(line)
        if self._on_load_stage is not None and self.process.state is ProcessState.STARTING:
            stage = load_stage(line)
            if stage is not None and stage != self.load_stage:
                self.load_stage = stage
                self._on_load_stage(stage)

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
        if self.sandboxed and not os.access(self.binary, os.X_OK):
            # bwrap would only say it cannot bind the path; say what a bare start would.
            self._remove_runtime_dir()
            raise RunnerFailed(f"cannot start {self.binary}: not an executable file")
        try:
            await self.process.start()
        except OSError as error:
            self._remove_runtime_dir()
            raise RunnerFailed(f"cannot start {self.binary}: {error}") from error
        try:
            await self.process.wait_ready(lambda: probe_health(self.socket_path), ready_timeout)
        except ProcessExited as exited:
            await self.stop()
            raise RunnerFailed(
                f"llama-server for {self.reference} exited with status {exited.returncode} "
                f"before it was ready: {failure_reason(exited.tail)}"
            ) from exited
        except TimeoutError as error:
            reason = failure_reason(self.tail(LOG_LINES_READ))
            await self.stop()
            raise RunnerFailed(
                f"llama-server for {self.reference} not ready after {ready_timeout:g} s: {reason}"
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
