"""`modelrunner package --push` and `updates --pull` against a real server and registry."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest

from modelrunner.core.runner import ModelRunner
from modelrunner.core.store.store import ModelStore
from modelrunner.server.cli.main import main as cli
from tests.distribution.conftest import RunningRegistry
from tests.gguf_factory import write_tiny_gguf
from tests.inference.engine_fakes import make_settings
from tests.processes import ApiProcess

_MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def _registry_digest(registry: RunningRegistry, repository: str, tag: str) -> str:
    """sha256 of the manifest bytes the registry serves for repository:tag."""
    url = f"{registry.url}/v2/{repository}/manifests/{tag}"
    response = httpx.get(url, headers={"Accept": _MANIFEST_TYPES}, timeout=10)
    response.raise_for_status()
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    assert response.headers.get("Docker-Content-Digest", digest) == digest
    return digest


def _push_from_another_store(root: Path, gguf: Path, reference: str) -> str:
    """Package `gguf` as `reference` in a store of its own and push it; returns its ID."""

    async def package_and_push() -> str:
        settings = make_settings(root)
        runner = ModelRunner(settings)
        await runner.start()
        try:
            model = await runner.package_model(gguf, reference)
            await runner.push(reference)
            return model.id
        finally:
            await runner.stop()

    return asyncio.run(package_and_push())


def test_package_push_stores_then_pushes_the_same_manifest(
    registry: RunningRegistry,
    api: ApiProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reference = f"{registry.host}/cli-package/tiny:v1"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", seed=11)

    assert cli(["package", "--gguf", str(gguf), "--push", reference]) == 0

    out = capsys.readouterr().out
    model = ModelStore(api.models_path).get(reference)
    assert f'Model {model.id[7:19]} loaded and tagged "{reference}"' in out
    assert f"Pushing {reference}..." in out
    assert "Uploading 100.0%" in out
    assert out.rstrip().endswith("Model pushed successfully")
    assert _registry_digest(registry, "cli-package/tiny", "v1") == model.id


def test_package_push_to_a_registry_that_is_not_there_fails_clearly_but_keeps_the_model(
    api: ApiProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = "127.0.0.1:1/nowhere/tiny:v1"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")

    assert cli(["package", "--gguf", str(gguf), "--push", reference]) == 1

    err = capsys.readouterr().err
    assert err.startswith(f"modelrunner: cannot push {reference}: ")
    assert f"retry with `modelrunner push {reference}`" in err
    assert err.count("\n") == 1
    assert ModelStore(api.models_path).get(reference).tags == (reference,)


def test_updates_pull_fetches_the_newer_model_under_the_same_tag(
    registry: RunningRegistry,
    api: ApiProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    changing = f"{registry.host}/cli-updates/tiny:v1"
    steady = f"{registry.host}/cli-updates/steady:v1"
    assert (
        cli(["package", "--gguf", str(write_tiny_gguf(tmp_path / "a.gguf")), "--push", changing])
        == 0
    )
    steady_gguf = write_tiny_gguf(tmp_path / "s.gguf", seed=5)
    assert cli(["package", "--gguf", str(steady_gguf), "--push", steady]) == 0
    store = ModelStore(api.models_path)
    old_id, steady_id = store.get(changing).id, store.get(steady).id
    newer = write_tiny_gguf(tmp_path / "b.gguf", seed=7)
    new_id = _push_from_another_store(tmp_path / "other", newer, changing)
    assert new_id != old_id
    capsys.readouterr()

    assert cli(["updates", "--pull"]) == 0

    out = capsys.readouterr().out
    table, _, pulls = out.partition(f"\nPulling {changing}\n")
    assert "update available" in table
    assert "up to date" in table
    assert "Downloading 100.0%" in pulls
    assert "Model pulled successfully" in pulls
    assert f"Pulling {steady}" not in out
    assert out.rstrip().endswith("Updated 1 model(s).")
    assert store.get(changing).id == new_id
    assert store.get(steady).id == steady_id
    assert cli(["updates", "--pull"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("Updated 0 model(s).")


def test_updates_pull_and_json_do_not_mix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(["updates", "--pull", "--json"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err
