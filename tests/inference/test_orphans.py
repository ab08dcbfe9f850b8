"""No llama-server outlives its parent, even when the parent is killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inference.engine_fakes import FakeBundle, process_gone, wait_until

PARENT = """
import asyncio, dataclasses, sys
from pathlib import Path
from modelrunner.core.inference.llama_server import LlamaServer

@dataclasses.dataclass
class Bundle:
    gguf: Path
    mmproj: None = None
    chat_template: None = None
    config: dict = dataclasses.field(default_factory=dict)

async def main() -> None:
    args = sys.argv[3:] or None
    server = LlamaServer(Path(sys.argv[1]), Bundle(Path(sys.argv[2])), model_id="x",
                         reference="x", llama_args=args)
    await server.start(ready_timeout=120)
    print(server.pid, server.runtime_dir, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def kill_parent_and_check_child(binary: Path, gguf: Path, *llama_args: str) -> None:
    parent = subprocess.Popen(  # noqa: ASYNC220 - a plain child we SIGKILL ourselves
        [sys.executable, "-c", PARENT, str(binary), str(gguf), *llama_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(parent.stdout.readline), 120)
        pid_text, runtime_dir = line.split()
        child = int(pid_text)
        assert not process_gone(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        await wait_until(lambda: process_gone(child), within=10)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    # The parent had no chance to clean up its socket dir (a later RunnerPool sweeps such dirs).
    shutil.rmtree(runtime_dir, ignore_errors=True)


async def test_a_fake_server_dies_with_its_killed_parent(
    fake_llama_server: Path, bundle: FakeBundle
) -> None:
    await kill_parent_and_check_child(fake_llama_server, bundle.gguf, "-ngl", "0")


@pytest.mark.llama
async def test_a_real_llama_server_dies_with_its_killed_parent(
    llama_server: Path, tiny_gguf: Path
) -> None:
    await kill_parent_and_check_child(llama_server, tiny_gguf)
