"""The headless server as a user meets it: the first run imports SmolLM2, which answers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.e2e.conftest import HeadlessServer, start_headless

pytestmark = [pytest.mark.e2e, pytest.mark.llama, pytest.mark.default_model]

DEFAULT = "ai/smollm2:135M-Q4_1"


def _wait_for_default_model(server: HeadlessServer, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = httpx.get(f"{server.url}/models", timeout=5).json()
        if models:
            assert isinstance(models, list)
            first: dict[str, object] = models[0]
            return first
        time.sleep(0.1)
    raise AssertionError(f"the default model was not imported:\n{server.stderr()[-3000:]}")


def _llama_servers_under(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "llama-server" in child.name()]


def test_first_run_imports_the_default_model(headless: HeadlessServer) -> None:
    model = _wait_for_default_model(headless)
    assert model["tags"] == ["docker.io/ai/smollm2:135M-Q4_1"]
    config = model["config"]
    assert isinstance(config, dict)
    assert config["format"] == "gguf"
    assert config["architecture"] == "llama"
    assert config["quantization"] == "MOSTLY_Q4_1"
    inspected = httpx.get(f"{headless.url}/models/smollm2:135M-Q4_1", timeout=5)
    assert inspected.status_code == 200
    assert inspected.json()["id"] == model["id"]


def test_streamed_answer_through_the_openai_sdk(headless: HeadlessServer) -> None:
    _wait_for_default_model(headless)
    client = openai.OpenAI(base_url=f"{headless.url}/v1", api_key="unused")
    stream = client.chat.completions.create(
        model=DEFAULT,
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
        ],
        stream=True,
        max_tokens=40,
        temperature=0,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    answer = "".join(pieces)
    assert len([p for p in pieces if p]) > 1, "the answer should arrive in several chunks"
    assert "Paris" in answer
    listed = [m.id for m in client.models.list().data]
    assert DEFAULT in listed


def test_the_same_model_is_loaded_once_and_reused(headless: HeadlessServer) -> None:
    _wait_for_default_model(headless)
    client = openai.OpenAI(base_url=f"{headless.url}/engines/llama.cpp/v1", api_key="unused")
    for spelling in (DEFAULT, "smollm2:135M-Q4_1", "docker.io/ai/smollm2:135M-Q4_1"):
        reply = client.chat.completions.create(
            model=spelling, messages=[{"role": "user", "content": "Hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content is not None
    assert len(_llama_servers_under(headless.process.pid)) == 1


def test_no_llama_server_outlives_a_killed_server(tmp_path: Path) -> None:
    server = start_headless(tmp_path)
    try:
        _wait_for_default_model(server)
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
        client.chat.completions.create(
            model=DEFAULT, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        children = _llama_servers_under(server.process.pid)
        assert len(children) == 1
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
        gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], "llama-server survived its parent"
        assert len(gone) == 1
    finally:
        if server.process.poll() is None:
            server.process.kill()


def test_sigterm_stops_llama_server_too(tmp_path: Path) -> None:
    server = start_headless(tmp_path)
    try:
        _wait_for_default_model(server)
        httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": DEFAULT,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 2,
            },
            timeout=60,
        ).raise_for_status()
        children = _llama_servers_under(server.process.pid)
        assert len(children) == 1
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        if server.process.poll() is None:
            server.process.kill()


def test_headless_start_imports_no_textual(headless: HeadlessServer) -> None:
    """`python -X importtime` logs every import of the running server; Textual is not one."""
    _wait_for_default_model(headless)
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in headless.stderr().splitlines()
        if line.startswith("import time:")
    ]
    assert "uvicorn" in imported
    assert not [name for name in imported if name.split(".")[0] == "textual"]


def test_chat_and_embeddings_run_side_by_side_without_configure(headless: HeadlessServer) -> None:
    """One model, two modes: each request's path picks its llama-server; ps names it one way."""
    _wait_for_default_model(headless)
    client = openai.OpenAI(base_url=f"{headless.url}/v1", api_key="unused")
    embedded = client.embeddings.create(model="smollm2:135M-Q4_1", input=["Paris", "Berlin"])
    assert [len(item.embedding) for item in embedded.data] == [576, 576]  # SmolLM2's width
    client.chat.completions.create(
        model=DEFAULT, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
    )
    assert len(_llama_servers_under(headless.process.pid)) == 2
    ps = httpx.get(f"{headless.url}/engines/ps", timeout=5).json()
    assert sorted((entry["model_name"], entry["mode"]) for entry in ps) == [
        (DEFAULT, "completion"), (DEFAULT, "embedding")]  # fmt: skip
    unloaded = httpx.post(
        f"{headless.url}/engines/unload", json={"models": ["smollm2:135M-Q4_1"]}, timeout=30
    )
    assert unloaded.json() == {"unloaded_runners": 2}
