"""Pull throughput: a verified 1 GiB pull from a local registry vs `curl -o` and `skopeo copy`.

The registry is Debian's docker-registry on loopback with a one-layer model whose layer is 1 GiB
of random bytes. Each round runs the three clients in turn (order rotated), with the last
run's files deleted and an untimed `sync` before every run, so one run's writeback and deletion
do not land on the next; medians are compared.
curl fetches the blob unverified; skopeo and our pull verify it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from modelrunner.core.distribution.pull import Puller
from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.event_bus import EventBus
from modelrunner.core.settings import Settings
from modelrunner.core.store import go_json, media_types
from modelrunner.core.store.store import ModelStore

SIZE = 1 << 30
MAX_ROUNDS = 5
"""1 GiB per run: more rounds than this take minutes for little gain."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start_registry(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    config = directory / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n    rootdirectory: /unused\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
    )
    env = {"PATH": "/usr/bin:/bin", "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(directory)}
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    return process, f"127.0.0.1:{port}"


async def _push(host: str, blob: Path, digest: str) -> None:
    config = b'{"config":{"format":"gguf"}}'
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    base = f"http://{host}/v2/ai/bench"
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.get(f"http://{host}/v2/"):
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        for data, blob_digest in ((blob, digest), (config, config_digest)):
            async with session.post(f"{base}/blobs/uploads/") as started:
                location = started.headers["Location"]
            url = location if location.startswith("http") else f"http://{host}{location}"
            url += ("&" if "?" in url else "?") + f"digest={blob_digest}"
            if isinstance(data, Path):
                with data.open("rb") as stream:
                    headers = {"Content-Length": str(SIZE)}
                    async with session.put(url, data=stream, headers=headers) as put:
                        put.raise_for_status()
            else:
                async with session.put(url, data=data) as put:
                    put.raise_for_status()
        manifest = go_json.marshal({
            "schemaVersion": 2, "mediaType": media_types.OCI_MANIFEST,
            "config": {"mediaType": media_types.CONFIG_V01, "size": len(config),
                       "digest": config_digest},
            "layers": [{"mediaType": media_types.GGUF, "size": SIZE, "digest": digest}],
        })  # fmt: skip
        headers = {"Content-Type": media_types.OCI_MANIFEST}
        async with session.put(f"{base}/manifests/latest", data=manifest, headers=headers) as put:
            put.raise_for_status()


def _random_blob(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("wb") as stream:
        for _ in range(SIZE >> 20):
            chunk = os.urandom(1 << 20)
            hasher.update(chunk)
            stream.write(chunk)
    return "sha256:" + hasher.hexdigest()


def _cpu_seconds(registry_pid: int) -> tuple[float, float]:
    """CPU seconds so far of this process plus its waited-for children, and of the registry."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    fields = Path(f"/proc/{registry_pid}/stat").read_text().rsplit(")", 1)[1].split()
    registry = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return client, registry


async def _timed(
    run: Callable[[], Awaitable[None]], out: Path, registry_pid: int
) -> tuple[float, float, float]:
    """Time one client: (seconds, its CPU seconds, the registry's CPU seconds).

    The last run's files are deleted and written back before the clock starts.
    """
    await asyncio.to_thread(shutil.rmtree, out, True)
    await asyncio.to_thread(out.mkdir)
    await asyncio.to_thread(os.sync)
    client_before, registry_before = _cpu_seconds(registry_pid)
    started = time.perf_counter()
    await run()
    seconds = time.perf_counter() - started
    client_after, registry_after = _cpu_seconds(registry_pid)
    return seconds, client_after - client_before, registry_after - registry_before


async def main(rounds: int) -> None:
    """Push a 1 GiB blob and time curl, skopeo and our pull on it, interleaved."""
    rounds = max(1, min(rounds, MAX_ROUNDS))
    with tempfile.TemporaryDirectory(prefix="mr-bench-pull-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        (work / "registry").mkdir()
        registry, host = _start_registry(work / "registry")
        try:
            blob = work / "blob.bin"
            digest = await asyncio.to_thread(_random_blob, blob)
            await _push(host, blob, digest)
            blob.unlink()
            await _compare(work, host, digest, rounds, registry.pid)
        finally:
            registry.terminate()
            registry.wait(timeout=10)


async def _compare(work: Path, host: str, digest: str, rounds: int, registry_pid: int) -> None:
    out = work / "out"

    async def curl() -> None:
        target = out / "blob"
        url = f"http://{host}/v2/ai/bench/blobs/{digest}"
        process = await asyncio.create_subprocess_exec("curl", "-sf", "-o", str(target), url)
        assert await process.wait() == 0

    async def skopeo() -> None:
        target = out / "dir"
        process = await asyncio.create_subprocess_exec(
            "skopeo", "copy", "-q", "--src-tls-verify=false",
            f"docker://{host}/ai/bench:latest", f"dir:{target}",
            stdout=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await process.wait() == 0

    async def ours() -> None:
        settings = Settings(
            models_path=out / "models", config_dir=out / "config",
            cache_dir=out / "cache", state_dir=out / "state", seed_default_model=False,
        )  # fmt: skip
        store = ModelStore(settings.models_path)
        puller = Puller(settings, store, EventBus(), lambda: RegistryClient(settings))
        try:
            await puller.pull(f"{host}/ai/bench")
        finally:
            await puller.close()

    clients: dict[str, Callable[[], Awaitable[None]]] = {
        "curl": curl, "skopeo": skopeo, "modelrunner": ours,
    }  # fmt: skip
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in clients}
    names = list(clients)
    for round_index in range(rounds):
        order = names[round_index % 3 :] + names[: round_index % 3]
        for name in order:
            runs[name].append(await _timed(clients[name], out, registry_pid))
    shutil.rmtree(out, ignore_errors=True)
    median = {name: statistics.median(run[0] for run in values) for name, values in runs.items()}
    print(f"pull of a 1 GiB blob from a local registry, median of {rounds} interleaved rounds")
    print("(CPU: seconds of the client and of the registry, which share this machine's cores):")
    for name, seconds in median.items():
        client_cpu = statistics.median(run[1] for run in runs[name])
        registry_cpu = statistics.median(run[2] for run in runs[name])
        print(
            f"  {name:12} {seconds:6.2f} s  {SIZE / seconds / (1 << 20):7.1f} MiB/s"
            f"  CPU {client_cpu:5.2f} s + registry {registry_cpu:5.2f} s"
        )
    print(f"  modelrunner throughput / curl:   {median['curl'] / median['modelrunner']:.2f}x")
    print(f"  modelrunner throughput / skopeo: {median['skopeo'] / median['modelrunner']:.2f}x")
