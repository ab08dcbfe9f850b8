"""`modelrunner df`, `prune`, `fsck` and `updates` against a real API server process."""

from __future__ import annotations

import json
import os
import time

import pytest

from modelrunner.core.store.package import index_files, parse_manifest
from modelrunner.core.store.store import ModelStore, StoredModel
from modelrunner.server.cli.housekeeping import decimal_size
from modelrunner.server.cli.main import main
from tests.processes import ApiProcess


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_decimal_sizes_like_dmr() -> None:
    assert decimal_size(0) == "0.00 B"
    assert decimal_size(999) == "999.00 B"
    assert decimal_size(1500) == "1.50 kB"
    assert decimal_size(2_340_000_000) == "2.34 GB"


def test_df_prints_dmrs_table_then_the_breakdown(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "df")

    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "SIZE"]
    assert lines[1].startswith("Models")
    assert lines[1].split()[-1] in ("kB", "MB")
    assert "tiny" in out
    assert "Unreferenced blobs: 0.00 B" in out
    code, out, _ = run_cli(capsys, "df", "--json")
    assert set(json.loads(out)) >= {"models_disk_usage", "default_backend_disk_usage"}


def test_prune_previews_then_frees_and_fsck_repairs(
    api: ApiProcess, tiny_model: StoredModel, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ModelStore(api.models_path)
    loose = store.layout.blobs_dir / "sha256" / ("d" * 64)
    loose.write_bytes(os.urandom(2500))
    old = time.time() - 3600
    os.utime(loose, (old, old))

    code, out, _ = run_cli(capsys, "prune", "--dry-run")

    assert code == 0
    assert "blobs/sha256/" + "d" * 64 in out
    assert out.splitlines()[-1] == "Would free 2.50 kB"
    assert loose.exists()
    code, out, _ = run_cli(capsys, "prune", "--all-partials")
    assert out.splitlines()[-1] == "Freed 2.50 kB"
    assert not loose.exists()
    code, out, _ = run_cli(capsys, "prune")
    assert out.splitlines() == ["Nothing to prune.", "Freed 0.00 B"]

    code, out, _ = run_cli(capsys, "fsck")
    assert code == 0
    assert out.startswith("No problems: checked 2 blobs")
    config = index_files(parse_manifest(store.manifest_bytes(tiny_model.id)))[-1]
    store.blob_path(config).write_bytes(b"{}")
    code, out, _ = run_cli(capsys, "fsck")
    assert code == 1
    assert out.startswith(f"corrupt_blob: {config}: content hashes to ")
    code, out, _ = run_cli(capsys, "fsck", "--repair")
    assert code == 0
    assert "(repaired: removed the blob" in out
    assert not store.blob_path(config).exists()


def test_updates_without_registry_models(
    api: ApiProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "updates")

    assert code == 0
    assert out == "No registry models.\n"
