"""A Hugging Face pull killed with SIGKILL mid-file resumes with a Range request, not from zero."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from modelrunner.core.distribution.huggingface import HuggingFaceSource
from modelrunner.core.event_bus import EventBus
from modelrunner.core.references import parse_reference
from modelrunner.core.settings import Settings
from modelrunner.core.store.store import ModelStore
from tests.distribution import hf_fixtures
from tests.distribution.hf_fixtures import FakeHub
from tests.gguf_factory import write_tiny_gguf

fake_hub = hf_fixtures.fake_hub

REPO = "acme/big"
CHUNK = 10 * 1024 * 1024
"""huggingface_hub writes in 10 MiB chunks; a resume re-fetches at most one of them."""

PULL = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from modelrunner.core.distribution.huggingface import HuggingFaceSource
    from modelrunner.core.event_bus import EventBus
    from modelrunner.core.references import parse_reference
    from modelrunner.core.settings import Settings
    from modelrunner.core.store.store import ModelStore

    base = Path(sys.argv[1])
    settings = Settings(models_path=base / "models", config_dir=base / "config",
                        cache_dir=base / "cache", state_dir=base / "state")
    source = HuggingFaceSource(settings, ModelStore(settings.models_path), EventBus())
    asyncio.run(source.pull(parse_reference(sys.argv[2])))
    """
)


def _partial_size(stage: Path) -> int:
    return sum(path.stat().st_size for path in stage.rglob("*.incomplete"))


def _pull_and_kill(base: Path, stage: Path) -> None:
    """Pull in a subprocess and SIGKILL it once a 10 MiB chunk of the file is on disk."""
    process = subprocess.Popen(
        [sys.executable, "-c", PULL, str(base), f"hf.co/{REPO}"], env=dict(os.environ)
    )
    try:
        deadline = time.monotonic() + 60
        while _partial_size(stage) < CHUNK:
            assert process.poll() is None, "the pull ended before it could be killed"
            assert time.monotonic() < deadline, "the download never got going"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(10)


async def test_killed_pull_resumes_where_it_stopped(
    fake_hub: FakeHub, settings: Settings, tmp_path: Path
) -> None:
    big = write_tiny_gguf(fake_hub.repo(REPO) / "Big-Q4_K_M.gguf", n_embd=512, n_ff=1024, n_layer=4)
    size = big.stat().st_size
    assert size > 3 * CHUNK
    fake_hub.start(throttle=8 * 1024 * 1024)
    base = settings.models_path.parent
    source = HuggingFaceSource(settings, ModelStore(settings.models_path), EventBus())
    stage = source.staging_root(REPO)

    await asyncio.to_thread(_pull_and_kill, base, stage)
    kept = _partial_size(stage)
    assert CHUNK <= kept < size

    model = await source.pull(parse_reference(f"hf.co/{REPO}"))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    assert f"sha256:{digest}".encode() in source.store.manifest_bytes(model.id)
    ranges = [
        entry["range"]
        for entry in fake_hub.requests()
        if entry["method"] == "GET" and "/cdn/" in entry["path"]
    ]
    assert ranges[0] is None  # the killed attempt started from zero
    assert ranges[-1] == f"bytes={kept}-"  # the resume asked only for what was missing
    assert not stage.exists()
