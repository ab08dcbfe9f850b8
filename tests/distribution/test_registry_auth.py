"""Registry auth against real registries: basic, tokens, Docker config, helpers, login."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from yarl import URL

from modelrunner.core.distribution.auth import (
    AuthenticationRequired,
    RegistryError,
    check_realm,
    parse_challenge,
)
from modelrunner.core.distribution.credentials import CredentialStore, registry_key
from modelrunner.core.distribution.registry import RegistryClient
from modelrunner.core.references import parse_reference
from modelrunner.core.settings import Settings
from tests.distribution.conftest import RunningRegistry
from tests.distribution.seeding import digest_of, seed_model


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[RegistryClient]:
    registry_client = RegistryClient(settings)
    yield registry_client
    await registry_client.close()


def test_challenges_parse() -> None:
    bearer = parse_challenge(
        'Bearer realm="http://t/token",service="reg",scope="repository:a/b:pull,push",'
        'error="insufficient_scope"'
    )
    assert bearer is not None
    assert bearer.scheme == "bearer"
    assert bearer.params["scope"] == "repository:a/b:pull,push"
    assert bearer.params["error"] == "insufficient_scope"
    basic = parse_challenge('Basic realm="lab basic"')
    assert basic is not None
    assert (basic.scheme, basic.params) == ("basic", {"realm": "lab basic"})
    assert parse_challenge("Negotiate abc") is None
    assert parse_challenge(None) is None


def test_registry_keys() -> None:
    assert registry_key("https://index.docker.io/v1/") == "docker.io"
    assert registry_key("registry-1.docker.io") == "docker.io"
    assert registry_key("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    assert registry_key("GHCR.io") == "ghcr.io"


async def test_basic_auth_without_credentials_says_how_to_log_in(
    basic_registry: RunningRegistry, client: RegistryClient
) -> None:
    seed_model(basic_registry, "auth/basic", "v1")
    with pytest.raises(AuthenticationRequired) as caught:
        await client.get_manifest(parse_reference(f"{basic_registry.host}/auth/basic:v1"))
    assert caught.value.status == 401
    assert caught.value.message == (
        f"authentication required for {basic_registry.host} to pull, "
        "or the repository does not exist: "
        f"run `modelrunner login {basic_registry.host}`"
    )


async def test_basic_login_is_checked_then_kept_private(
    basic_registry: RunningRegistry, client: RegistryClient, settings: Settings
) -> None:
    raw, _, _ = seed_model(basic_registry, "auth/login", "v1")
    host = basic_registry.host
    with pytest.raises(AuthenticationRequired, match="refused access to log in for alice"):
        await client.login(host, "alice", "wrong")
    assert not client.credentials.login_file.exists()

    await client.login(host, "alice", "s3cret")
    login_file = settings.config_dir / "credentials.json"
    assert stat.S_IMODE(login_file.stat().st_mode) == 0o600
    stored = json.loads(login_file.read_text())["auths"][host]["auth"]
    assert base64.b64decode(stored) == b"alice:s3cret"

    fresh = RegistryClient(settings)
    try:
        manifest = await fresh.get_manifest(parse_reference(f"{host}/auth/login:v1"))
        assert manifest.raw == raw
    finally:
        await fresh.close()
    assert await client.logout(host) is True
    assert await client.logout(host) is False


async def test_wrong_password_in_docker_config_is_a_clear_401(
    basic_registry: RunningRegistry,
    client: RegistryClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_model(basic_registry, "auth/wrong", "v1")
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(b"alice:nope").decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {basic_registry.host: {"auth": auth}}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    with pytest.raises(AuthenticationRequired) as caught:
        await client.get_manifest(parse_reference(f"{basic_registry.host}/auth/wrong:v1"))
    assert caught.value.status == 401
    assert "refused access to pull for alice" in caught.value.message
    assert str(config / "config.json") in caught.value.message


async def test_docker_config_auths_are_used(
    basic_registry: RunningRegistry,
    client: RegistryClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw, _, _ = seed_model(basic_registry, "auth/dockerconfig", "v1")
    config = tmp_path / "docker"
    config.mkdir()
    entry = {"username": "alice", "password": "s3cret"}
    (config / "config.json").write_text(
        json.dumps({"auths": {f"http://{basic_registry.host}/v2/": entry}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    manifest = await client.get_manifest(
        parse_reference(f"{basic_registry.host}/auth/dockerconfig:v1")
    )
    assert manifest.raw == raw


async def test_credential_helper_on_path_is_asked(
    basic_registry: RunningRegistry,
    client: RegistryClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw, _, _ = seed_model(basic_registry, "auth/helper", "v1")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    helper = bin_dir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 1\n'
        f"cat > {asked}\n"
        'echo \'{"ServerURL":"x","Username":"alice","Secret":"s3cret"}\'\n'
    )
    helper.chmod(0o755)
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {basic_registry.host: "test"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    manifest = await client.get_manifest(parse_reference(f"{basic_registry.host}/auth/helper:v1"))
    assert manifest.raw == raw
    assert asked.read_text() == basic_registry.host


def test_lookup_order(settings: Settings, tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(b"from:hunter2").decode()
    (config / "config.json").write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": auth}}})
    )
    environ = {"DOCKER_CONFIG": str(config)}
    store = CredentialStore(settings, environ)
    found = store.lookup("docker.io")
    assert found is not None
    assert (found.username, found.password) == ("from", "hunter2")
    assert "hunter2" not in repr(found)  # no secrets in logs

    store.save_login("index.docker.io", "from", "login")
    found = store.lookup("docker.io")
    assert found is not None
    assert (found.password, found.source) == ("login", "modelrunner login")

    with_env = CredentialStore(
        settings, {**environ, "DOCKER_USERNAME": "u", "DOCKER_PASSWORD": "p"}
    )
    found = with_env.lookup("docker.io")
    assert found is not None
    assert (found.username, found.source) == ("u", "DOCKER_USERNAME")

    (config / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {"identitytoken": "rt"}}}))
    found = store.lookup("ghcr.io")
    assert found is not None
    assert found.identity_token == "rt"
    assert store.lookup("quay.io") is None


async def test_token_auth_anonymous_pull_and_tokens_per_scope(
    token_registry: RunningRegistry, client: RegistryClient, settings: Settings
) -> None:
    raw, _, weights = seed_model(token_registry, "auth/token", "v1")
    reference = parse_reference(f"{token_registry.host}/auth/token:v1")
    manifest = await client.get_manifest(reference)
    assert manifest.raw == raw
    assert await client.blob_size(reference, digest_of(weights)) == (len(weights), True)
    pulls = [
        r for r in token_registry.token_requests() if r["scope"] == ["repository:auth/token:pull"]
    ]
    # One anonymous token for the scope: the manifest and blob reads above shared it.
    assert [r["user"] for r in pulls] == [None]

    await client.login(token_registry.host, "alice", "s3cret")
    authed = RegistryClient(settings)
    try:
        assert await authed.blob_exists(reference, digest_of(weights), push=True)
    finally:
        await authed.close()
    pushes = [r for r in token_registry.token_requests() if "pull,push" in str(r["scope"])]
    assert pushes[-1]["user"] == "alice"


async def test_token_login_with_a_wrong_password_is_refused(
    token_registry: RunningRegistry, client: RegistryClient
) -> None:
    with pytest.raises(AuthenticationRequired, match="refused access") as caught:
        await client.login(token_registry.host, "alice", "wrong")
    assert caught.value.status == 401
    assert not client.credentials.login_file.exists()


async def test_token_realms_that_leak_or_reach_inward_are_refused() -> None:
    public = URL("https://93.184.216.34")
    with pytest.raises(RegistryError, match="plain-http token realm"):
        await check_realm(public, "http://93.184.216.34/token")
    with pytest.raises(RegistryError, match="local network"):
        await check_realm(public, "https://127.0.0.1/token")
    with pytest.raises(RegistryError, match="local network"):
        await check_realm(public, "https://10.0.0.1/token")
    with pytest.raises(RegistryError, match="unusable token realm"):
        await check_realm(public, "file:///etc/passwd")
    assert await check_realm(public, "https://93.184.216.35/token") == URL(
        "https://93.184.216.35/token"
    )
    # A loopback registry may use a loopback token service (our fixtures do).
    local = URL("http://127.0.0.1:5000")
    assert await check_realm(local, "http://127.0.0.1:5001/token") == URL(
        "http://127.0.0.1:5001/token"
    )
