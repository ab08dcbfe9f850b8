"""The store lock: two processes packaging and tagging at once lose nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from modelrunner.core.store.store import ModelStore
from tests.gguf_factory import write_tiny_gguf

MODELS_PER_WORKER = 6

_WORKER = """
import sys
from pathlib import Path
from modelrunner.core.store.store import ModelStore

root, source_dir, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
store = ModelStore(root)
for path in sorted(source_dir.glob("*.gguf")):
    model = store.package_gguf(path, f"ai/{name}-{path.stem}:v1")
    store.tag(model.id, f"ai/{name}-{path.stem}:v2")
    store.tag(model.id, "ai/shared:latest")
print("done")
"""


def test_two_processes_writing_at_once_keep_every_model_and_tag(tmp_path: Path) -> None:
    root = tmp_path / "models"
    sources = {}
    for worker in ("alpha", "beta"):
        directory = tmp_path / worker
        directory.mkdir()
        for number in range(MODELS_PER_WORKER):
            write_tiny_gguf(
                directory / f"m{number}.gguf",
                n_layer=1,
                seed=number + (100 if worker == "beta" else 0),
            )
        sources[worker] = directory
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(root), str(directory), worker],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for worker, directory in sources.items()
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == "done"

    models = ModelStore(root).list()
    assert len(models) == 2 * MODELS_PER_WORKER
    tags = [tag for model in models for tag in model.tags]
    expected = {
        f"docker.io/ai/{worker}-m{number}:{version}"
        for worker in sources
        for number in range(MODELS_PER_WORKER)
        for version in ("v1", "v2")
    }
    assert set(tags) - {"docker.io/ai/shared:latest"} == expected
    assert tags.count("docker.io/ai/shared:latest") == 1
    assert len(tags) == len(expected) + 1
