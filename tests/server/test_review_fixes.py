"""Behaviours a review found broken: unloading under a request, silent disconnects, bad numbers,
the model name in answers, digest references, keep_alive that lingered."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import StoredModel
from tests.server.conftest import TINY

pytestmark = pytest.mark.llama

MESSAGES = [{"role": "user", "content": "hi"}]


async def _until(condition: object, within: float = 15) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


async def test_engines_unload_leaves_a_busy_runner_alone(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    """DMR's unload stops only runners nobody is using (a held lease is a request in flight)."""
    lease = await runner.pool.checkout(TINY)
    try:
        busy = await client.post("/engines/unload", json={"models": [TINY]})
        assert busy.json() == {"unloaded_runners": 0}
        assert [info.in_use for info in runner.running()] == [True]
    finally:
        lease.release()
    idle = await client.post("/engines/unload", json={"models": [TINY]})
    assert idle.json() == {"unloaded_runners": 1}
    assert runner.running() == []


async def test_removing_a_model_under_a_stream_ends_the_stream(
    live_url: str, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    """The stream ends (broken off, or finished if the model was quicker) instead of hanging."""
    body = {"model": TINY, "messages": MESSAGES, "stream": True, "max_tokens": 4000}
    async with (
        httpx.AsyncClient(base_url=live_url, timeout=30) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as streaming,
    ):
        chunks = streaming.aiter_bytes()
        await anext(chunks)
        removed = await http.delete(f"/models/{TINY}")
        assert removed.status_code == 200

        async def drain() -> None:
            with contextlib.suppress(httpx.RemoteProtocolError):
                async for _chunk in chunks:
                    pass

        await asyncio.wait_for(drain(), timeout=20)
    assert runner.running() == []


async def test_a_client_leaving_before_the_answer_cancels_the_request(
    live_url: str,
    runner: ModelRunner,
    tiny_model: StoredModel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A non-streamed answer (or a queue, or a load) sends nothing for a long time; a client
    that hangs up meanwhile must cancel the work rather than leave it running for nobody."""
    cancelled = asyncio.Event()

    async def thinking(*_args: object, **_kwargs: object) -> None:
        try:
            await asyncio.Event().wait()  # like a long answer: nothing arrives
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(runner, "forward", thinking)
    body = {"model": TINY, "messages": MESSAGES}
    async with httpx.AsyncClient(base_url=live_url, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body)
    await asyncio.wait_for(cancelled.wait(), timeout=5)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b'"keep_alive": NaN', "not valid JSON"),
        (b'"keep_alive": Infinity', "not valid JSON"),
        (b'"keep_alive": 1e300', "out of range"),
    ],
)
async def test_keep_alive_must_be_a_real_duration(
    client: httpx.AsyncClient, tiny_model: StoredModel, raw: bytes, says: str
) -> None:
    body = b'{"model": "' + TINY.encode() + b'", "messages": [], ' + raw + b"}"
    response = await client.post("/v1/chat/completions", content=body)
    assert response.status_code == 400
    assert says in response.json()["error"]["message"]


async def test_answers_name_the_model_not_its_file(
    client: httpx.AsyncClient, tiny_model: StoredModel
) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["model"] == TINY


async def test_keep_alive_applies_to_its_own_request_only(
    client: httpx.AsyncClient, runner: ModelRunner, tiny_model: StoredModel
) -> None:
    forever = {"model": TINY, "messages": MESSAGES, "max_tokens": 2, "keep_alive": -1}
    assert (await client.post("/v1/chat/completions", json=forever)).status_code == 200
    assert runner.running()[0].keep_alive == -1
    plain = {"model": TINY, "messages": MESSAGES, "max_tokens": 2}
    assert (await client.post("/v1/chat/completions", json=plain)).status_code == 200
    assert runner.running()[0].keep_alive is None  # back to the default idle timeout


def test_a_digest_reference_keeps_the_tag_it_names() -> None:
    from modelrunner.core.references import parse_reference

    digest = "sha256:" + "ab" * 32
    tagged = parse_reference(f"localhost:5000/team/m:v1@{digest}")
    assert tagged.normalized == f"localhost:5000/team/m:v1@{digest}"
    assert tagged.stored == "localhost:5000/team/m:v1"
    bare = parse_reference(f"localhost:5000/team/m@{digest}")
    assert bare.normalized == f"localhost:5000/team/m@{digest}"
    assert not bare.tag_given
    assert json.dumps(bare.normalized)  # plain string
