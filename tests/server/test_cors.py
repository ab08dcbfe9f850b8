"""Which browser pages may call the API: DMR's origin check, its port bug fixed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.server.app import build_app
from modelrunner.server.cors import origin_allowed
from tests.server.conftest import BASE_URL


@pytest.mark.parametrize(
    ("origin", "extra", "allowed"),
    [
        ("http://localhost", (), True),
        ("http://localhost:3000", (), True),  # DMR compares "http://localhost:*" literally
        ("https://127.0.0.1:8443", (), True),
        ("http://0.0.0.0:8080", (), True),
        ("http://[::1]:5173", (), True),
        ("https://evil.example", (), False),
        ("http://localhost.evil.example", (), False),
        ("null", (), False),
        ("file://", (), False),
        ("http://localhost:3000/path", (), False),
        ("http://localhost:notaport", (), False),
        ("https://app.example", ("https://app.example",), True),
        ("https://app.example:444", ("https://app.example",), False),
        ("http://box.lan:8080", ("http://box.lan:*",), True),
        ("https://box.lan:8080", ("http://box.lan:*",), False),
        ("https://anything.example", ("*",), True),
    ],
)
def test_origin_allowed(origin: str, extra: tuple[str, ...], allowed: bool) -> None:
    assert origin_allowed(origin, extra) is allowed


@pytest.fixture
async def guarded(runner: ModelRunner) -> AsyncIterator[httpx.AsyncClient]:
    """The app with DMR_ORIGINS=https://app.example."""
    runner.settings = runner.settings.with_changes(origins=("https://app.example",))
    app = build_app(runner, manage_runner=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
        yield http


async def test_no_origin_passes_untouched(guarded: httpx.AsyncClient) -> None:
    response = await guarded.get("/models")
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://app.example"])
async def test_an_allowed_page_gets_its_origin_back(
    guarded: httpx.AsyncClient, origin: str
) -> None:
    response = await guarded.get("/models", headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert response.headers["vary"] == "Origin"


async def test_another_site_is_refused_and_changes_nothing(
    guarded: httpx.AsyncClient, runner: ModelRunner
) -> None:
    before = await runner.list_models()
    evil = {"Origin": "https://evil.example"}
    for method, path in (("GET", "/models"), ("POST", "/models/create"),
                         ("DELETE", "/models/purge"), ("POST", "/api/chat"),
                         ("POST", "/v1/chat/completions")):  # fmt: skip
        response = await guarded.request(method, path, headers=evil, json={"from": "ai/x"})
        assert (response.status_code, response.text) == (403, "Origin not allowed"), path
    assert await runner.list_models() == before


async def test_a_preflight_from_an_allowed_page(guarded: httpx.AsyncClient) -> None:
    response = await guarded.options(
        "/v1/chat/completions",
        headers={
            "Origin": "http://127.0.0.1:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "http://127.0.0.1:5173"
    assert response.headers["access-control-allow-methods"] == "GET, POST, DELETE"
    assert response.headers["access-control-allow-headers"] == "content-type, authorization"
    assert response.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize("path", ["/", "/version", "/metrics"])
async def test_dmr_leaves_some_paths_unchecked(guarded: httpx.AsyncClient, path: str) -> None:
    response = await guarded.get(path, headers={"Origin": "https://evil.example"})
    assert response.status_code == 200
