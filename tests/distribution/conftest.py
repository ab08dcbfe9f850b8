"""Registry fixtures: Debian's docker-registry on loopback: plain, basic auth, token auth."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.processes import free_port, stop, wait_until_ready

USERNAME = "alice"
PASSWORD = "s3cret"
"""The one user every auth-enabled registry fixture knows."""

_TOKEN_SERVER = Path(__file__).with_name("token_server.py")
_START_TIMEOUT = 15.0


@dataclass
class RunningRegistry:
    """A docker-registry process serving on 127.0.0.1 until the fixture ends."""

    host: str
    """"127.0.0.1:PORT", the registry part of a model reference."""
    storage: Path
    log_path: Path
    auth: str
    """"none", "basic" or "token"."""
    username: str | None = None
    password: str | None = None
    token_url: str | None = None
    """The token server's base URL (token auth only)."""

    @property
    def url(self) -> str:
        """ "http://127.0.0.1:PORT"."""
        return f"http://{self.host}"

    @property
    def creds(self) -> str:
        """ "user:password" for skopeo's --creds."""
        return f"{self.username}:{self.password}"

    def log(self) -> str:
        """Everything the registry has logged so far (access log included)."""
        return self.log_path.read_text(errors="replace")

    def token_requests(self) -> list[dict[str, Any]]:
        """The token requests seen so far: [{"user": "alice" | None, "scope": [...]}]."""
        assert self.token_url is not None
        with urllib.request.urlopen(f"{self.token_url}/requests", timeout=5) as response:
            requests: list[dict[str, Any]] = json.load(response)["requests"]
        return requests


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # 401 is an answer
    except OSError:
        return False


def _config(auth_block: str) -> str:
    return (
        "version: 0.1\n"
        "log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n"
        "storage:\n  filesystem:\n    rootdirectory: /unused\n  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        "http:\n  addr: 127.0.0.1:0\n  secret: tests-not-secret\n" + auth_block
    )


@contextlib.contextmanager
def _registry(directory: Path, auth: str, auth_block: str = "") -> Iterator[RunningRegistry]:
    config = directory / "config.yml"
    config.write_text(_config(auth_block))
    storage = directory / "data"
    log_path = directory / "registry.log"
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(storage),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}/v2/"
        wait_until_ready(process, lambda: _answers(url), log_path, what=url, timeout=_START_TIMEOUT)
        yield RunningRegistry(f"127.0.0.1:{port}", storage, log_path, auth)
    finally:
        stop(process)


def _require(program: str) -> None:
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (a Debian package, see lab-infra.md)")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A plain registry without auth."""
    _require("docker-registry")
    with _registry(tmp_path_factory.mktemp("registry-plain"), "none") as running:
        yield running


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry with htpasswd basic auth for USERNAME/PASSWORD."""
    _require("docker-registry")
    _require("htpasswd")
    directory = tmp_path_factory.mktemp("registry-basic")
    entry = subprocess.run(
        ["htpasswd", "-Bbn", USERNAME, PASSWORD], capture_output=True, check=True, text=True
    ).stdout
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(entry.strip() + "\n")
    block = f"auth:\n  htpasswd:\n    realm: tests-basic\n    path: {htpasswd}\n"
    with _registry(directory, "basic", block) as running:
        running.username, running.password = USERNAME, PASSWORD
        yield running


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A registry with token auth: anonymous pull is granted, push needs USERNAME/PASSWORD."""
    _require("docker-registry")
    directory = tmp_path_factory.mktemp("registry-token")
    port = free_port()
    token_log = (directory / "token.log").open("wb")
    server = subprocess.Popen(
        [
            *(sys.executable, str(_TOKEN_SERVER), "--dir", str(directory), "--port", str(port)),
            *("--user", f"{USERNAME}:{PASSWORD}", "--anonymous-pull"),
        ],
        stdout=token_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    token_log.close()
    try:
        token_url = f"http://127.0.0.1:{port}"
        wait_until_ready(
            server, lambda: _answers(f"{token_url}/requests"), directory / "token.log",
            what="the token server", timeout=_START_TIMEOUT,
        )  # fmt: skip
        block = (
            "auth:\n  token:\n"
            f"    realm: {token_url}/token\n    service: lab-registry\n"
            f"    issuer: lab-token-issuer\n    rootcertbundle: {directory / 'cert.pem'}\n"
        )
        with _registry(directory, "token", block) as running:
            running.username, running.password = USERNAME, PASSWORD
            running.token_url = token_url
            yield running
    finally:
        stop(server)


@pytest.fixture(scope="session")
def skopeo() -> str:
    """The skopeo binary, an independent OCI client (skips the test when missing)."""
    _require("skopeo")
    return "skopeo"
