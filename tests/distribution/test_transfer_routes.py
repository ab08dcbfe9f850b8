"""Pull and push through the HTTP API and the CLI against a real registry, with DMR's progress."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.settings import Settings
from modelrunner.server.app import build_app
from modelrunner.server.cli.main import main as cli
from tests.distribution.conftest import RunningRegistry
from tests.gguf_factory import write_tiny_gguf
from tests.processes import ApiProcess


def _settings(root: Path) -> Settings:
    return Settings(
        models_path=root / "models",
        config_dir=root / "config",
        cache_dir=root / "cache",
        state_dir=root / "state",
        seed_default_model=False,
    )


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[ModelRunner]:
    runner = ModelRunner(_settings(tmp_path / "source"))
    await runner.start()
    yield runner
    await runner.stop()


@pytest.fixture
async def destination(tmp_path: Path) -> AsyncIterator[ModelRunner]:
    runner = ModelRunner(_settings(tmp_path / "destination"))
    await runner.start()
    yield runner
    await runner.stop()


def _client(runner: ModelRunner) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=build_app(runner, manage_runner=False))
    return httpx.AsyncClient(transport=transport, base_url="http://modelrunner.test")


def _lines(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


async def test_push_then_pull_through_the_api_keeps_the_model_id(
    registry: RunningRegistry, source: ModelRunner, destination: ModelRunner, tmp_path: Path
) -> None:
    reference = f"{registry.host}/api/tiny:v1"
    model = await source.package_model(write_tiny_gguf(tmp_path / "tiny.gguf"), reference)
    async with _client(source) as http:
        pushed = await http.post(f"/models/{reference}/push")
    assert pushed.status_code == 200
    assert pushed.headers["content-type"].startswith("text/plain")
    assert "&#34;" in pushed.text  # DMR HTML-escapes its text/plain progress stream
    assert '"message":"Model pushed successfully"' in pushed.text.replace("&#34;", '"')

    async with _client(destination) as http:
        pulled = await http.post(
            "/models/create", json={"from": reference}, headers={"Accept": "application/json"}
        )
    messages = _lines(pulled)
    assert {m["mode"] for m in messages} == {"pull"}
    assert messages[-1]["type"] == "success"
    assert messages[-1]["message"] == "Model pulled successfully"
    progress = [m for m in messages if m["type"] == "progress"]
    assert progress
    assert all(m["total"] == progress[0]["total"] for m in progress)
    stored = await destination.get_model(reference)
    assert stored.id == model.id

    async with _client(destination) as http:
        again = await http.post(
            "/models/create", json={"from": reference}, headers={"Accept": "application/json"}
        )
    assert str(_lines(again)[-1]["message"]).startswith("Using cached model:")


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"from": "Bad Name"}, 400, "invalid model reference"),
        ({}, 400, 'missing "from"'),
        ({"from": "REGISTRY/nobody/here:v1"}, 404, "not found"),
        ({"from": "127.0.0.1:1/x/y:z"}, 502, "cannot reach registry"),
    ],
)
async def test_a_pull_that_fails_before_any_progress_is_a_plain_http_error(
    registry: RunningRegistry,
    destination: ModelRunner,
    body: dict[str, str],
    status: int,
    says: str,
) -> None:
    if "from" in body:
        body = {"from": body["from"].replace("REGISTRY", registry.host)}
    async with _client(destination) as http:
        response = await http.post("/models/create", json=body)
    assert response.status_code == status
    assert says in response.text
    assert await destination.list_models() == []


async def test_bad_json_and_pushing_a_missing_model(destination: ModelRunner) -> None:
    async with _client(destination) as http:
        bad = await http.post("/models/create", content=b"{nope")
        missing = await http.post("/models/127.0.0.1:5000/no/such:v1/push")
    assert bad.status_code == 400
    assert "not valid JSON" in bad.text
    assert missing.status_code == 404


def test_cli_push_pull_and_json_progress(
    registry: RunningRegistry,
    api: ApiProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference = f"{registry.host}/cli/tiny:v1"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert cli(["package", "--gguf", str(gguf), reference]) == 0
    assert cli(["push", reference]) == 0
    assert "Model pushed successfully" in capsys.readouterr().out
    assert cli(["rm", reference]) == 0
    assert cli(["pull", reference]) == 0
    out = capsys.readouterr().out
    assert "Downloading 100.0%" in out
    assert out.rstrip().endswith("Model pulled successfully")
    assert cli(["pull", "--json", reference]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["message"].startswith("Using cached model:")
    assert cli(["pull", f"{registry.host}/cli/ghost:v1"]) == 1
    assert "not found" in capsys.readouterr().err


def test_cli_login_checks_then_saves_and_logout_forgets(
    basic_registry: RunningRegistry,
    api: ApiProcess,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = basic_registry.host
    monkeypatch.setattr("sys.stdin", io.StringIO("wrong\n"))
    assert cli(["login", host, "-u", str(basic_registry.username), "--password-stdin"]) == 1
    refused = capsys.readouterr().err
    assert host in refused
    assert "alice" in refused or "authentication" in refused
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{basic_registry.password}\n"))
    assert cli(["login", host, "-u", str(basic_registry.username), "--password-stdin"]) == 0
    assert "Login Succeeded" in capsys.readouterr().out
    assert cli(["logout", host]) == 0
    assert cli(["logout", host]) == 1
    assert "not logged in" in capsys.readouterr().err


async def test_a_pull_restores_a_blob_that_went_missing(
    registry: RunningRegistry, source: ModelRunner, destination: ModelRunner, tmp_path: Path
) -> None:
    """After `fsck --repair` removed a corrupt blob, pulling the model again fetches just it."""
    reference = f"{registry.host}/repair/tiny:v1"
    await source.package_model(write_tiny_gguf(tmp_path / "tiny.gguf"), reference)
    await source.push(reference)
    model = await destination.pull(reference)
    [weights] = [p for p in destination.store.layout.root.glob("blobs/sha256/*") if
                 p.stat().st_size > 100_000]  # fmt: skip
    weights.unlink()
    again = await destination.pull(reference)
    assert again.id == model.id
    assert weights.is_file()
    bundle = destination.store.bundle(reference)
    assert bundle.gguf.stat().st_size == weights.stat().st_size
