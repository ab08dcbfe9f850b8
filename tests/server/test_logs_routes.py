"""GET /logs: DMR's errors and text, following with no gap, and a real server's two log files."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelrunner.core.log_files import ENGINE_LOG, SERVICE_LOG, LogFile
from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import ModelStore
from tests.gguf_factory import write_tiny_gguf
from tests.processes import ApiProcess

STAMPED = re.compile(rb"^\[(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9})Z\] ")


def log_dir(runner: ModelRunner) -> Path:
    directory = runner.settings.log_dir
    assert directory is not None
    return directory


async def test_bad_booleans_are_400_in_dmr_words(
    client: httpx.AsyncClient, runner: ModelRunner
) -> None:
    LogFile(log_dir(runner) / SERVICE_LOG).write_line("hello")
    response = await client.get("/logs", params={"follow": "maybe"})
    assert response.status_code == 400
    assert response.text == 'invalid follow parameter: "maybe" is not a valid boolean\n'
    response = await client.get("/logs", params={"no-engines": "yes"})
    assert response.status_code == 400
    assert response.text == 'invalid no-engines parameter: "yes" is not a valid boolean\n'


async def test_no_service_log_is_404(client: httpx.AsyncClient, runner: ModelRunner) -> None:
    LogFile(log_dir(runner) / ENGINE_LOG).write_line("an engine line alone is not enough")
    response = await client.get("/logs")
    assert response.status_code == 404
    assert response.text == "service log not found\n"


async def test_merged_text_and_no_engines(client: httpx.AsyncClient, runner: ModelRunner) -> None:
    service, engine = LogFile(log_dir(runner) / SERVICE_LOG), LogFile(log_dir(runner) / ENGINE_LOG)
    service.write_line("service one")
    engine.write_line("engine one")
    service.write_line("service two")
    engine.write_line("engine two")
    response = await client.get("/logs", params={"follow": "false"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.content.splitlines()
    assert all(STAMPED.match(line) for line in lines)
    assert [line.split(b"] ", 1)[1] for line in lines] == [
        b"service one",
        b"engine one",
        b"service two",
        b"engine two",
    ]
    response = await client.get("/logs", params={"no-engines": "1"})
    assert [line.split(b"] ", 1)[1] for line in response.content.splitlines()] == [
        b"service one",
        b"service two",
    ]


def open_log_descriptors(pid: int, directory: Path) -> int:
    """How many descriptors process `pid` holds on files in `directory`."""
    count = 0
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            count += os.readlink(entry).startswith(str(directory))
        except OSError:
            continue
    return count


async def wait_for(condition: object, what: str, within: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


async def read_until(chunks: AsyncIterator[bytes], needle: bytes, within: float = 10.0) -> bytes:
    """What the stream sends until `needle` has come."""
    received = b""
    while needle not in received:
        received += await asyncio.wait_for(anext(chunks), within)
    return received


async def test_follow_sends_new_lines_and_lets_go_of_the_files_when_the_client_leaves(
    live_url: str, runner: ModelRunner
) -> None:
    directory = log_dir(runner)
    service = LogFile(directory / SERVICE_LOG)
    service.write_line("before the client came")
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=10) as http,
        http.stream("GET", "/logs", params={"follow": "true"}) as response,
    ):
        assert response.status_code == 200
        chunks = response.aiter_raw()
        assert b"before the client came" in await read_until(chunks, b"\n")
        LogFile(directory / ENGINE_LOG).write_line("an engine line while following")
        service.write_line("a service line while following")
        received = await read_until(chunks, b"a service line while following")
        texts = [line.split(b"] ", 1)[1] for line in received.splitlines()]
        assert texts == [b"an engine line while following", b"a service line while following"]
        assert open_log_descriptors(os.getpid(), directory) == 2
    await wait_for(
        lambda: open_log_descriptors(os.getpid(), directory) == 0,
        "the follower closed its files after the client left",
    )


# A real server process: its own records in the service log, a real llama-server in the engine log


@pytest.fixture
def tiny_stored(tmp_path: Path) -> str:
    """ai/tiny:latest in the store the `api` fixture serves."""
    ModelStore(tmp_path / "models").package_gguf(write_tiny_gguf(tmp_path / "tiny.gguf"), "ai/tiny")
    return "ai/tiny:latest"


def process_log_dir() -> Path:
    return Path(os.environ["MODEL_RUNNER_LOG_DIR"])  # set for every test by hermetic_environment


@pytest.mark.llama
def test_a_real_server_logs_itself_and_its_llama_server(
    llama_server: Path, tiny_stored: str, api: ApiProcess
) -> None:
    directory = process_log_dir()
    with httpx.Client(base_url=api.host, timeout=120) as http:
        body = {"model": tiny_stored, "prompt": "abc", "max_tokens": 3, "temperature": 0}
        assert http.post("/v1/completions", json=body).status_code == 200
        engine_lines = (directory / ENGINE_LOG).read_bytes().splitlines()
        assert len(engine_lines) > 10
        assert all(STAMPED.match(line) for line in engine_lines)
        assert any(b"llama" in line for line in engine_lines)

        merged = http.get("/logs").content.splitlines()
        service_only = http.get("/logs", params={"no-engines": "true"}).content.splitlines()

    assert all(STAMPED.match(line) for line in merged)
    stamps = [STAMPED.match(line).group(1) for line in merged]  # type: ignore[union-attr]
    assert stamps == sorted(stamps)  # merged by time
    assert set(engine_lines) <= set(merged)
    assert any(b"INFO    modelrunner.server.serve: modelrunner API on" in line for line in merged)
    assert any(b'"POST /v1/completions HTTP/1.1" 200' in line for line in merged)
    assert not set(engine_lines) & set(service_only)
    assert any(b"modelrunner API on" in line for line in service_only)
    assert api.log.read_bytes().count(b"modelrunner API on") == 1  # and still on stderr


def test_a_real_server_follow_picks_up_its_own_records(api: ApiProcess) -> None:
    with (
        httpx.Client(base_url=api.host, timeout=10) as http,
        http.stream("GET", "/logs", params={"follow": "true", "no-engines": "true"}) as response,
    ):
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        assert b"modelrunner API on" in first
        assert http.get("/models/ai/not-there").status_code == 404
        received = b""
        while b"GET /models/ai/not-there" not in received:
            received += next(chunks)
        assert all(STAMPED.match(line) for line in received.splitlines())


def test_a_real_server_shuts_down_at_once_and_ends_its_followers_cleanly(api: ApiProcess) -> None:
    with (
        httpx.Client(base_url=api.host, timeout=10) as http,
        http.stream("GET", "/logs", params={"follow": "true", "no-engines": "true"}) as response,
    ):
        chunks = response.iter_raw()
        assert b"modelrunner API on" in next(chunks)
        started = time.monotonic()
        api.process.terminate()
        rest = b"".join(chunks)  # the chunked body ends properly: no RemoteProtocolError
        assert api.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 2  # not uvicorn's 5 s graceful-shutdown timeout
    assert all(STAMPED.match(line) for line in rest.splitlines())
    log = api.log.read_text()
    assert "Shutting down" in log
    assert "timeout graceful shutdown exceeded" not in log
