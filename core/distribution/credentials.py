"""Registry credentials: environment, our login store, Docker's config.json, credential helpers."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelrunner.core.errors import InvalidInput
from modelrunner.core.settings import Settings

_log = logging.getLogger(__name__)

LOGIN_FILE = "credentials.json"
"""Our own login store, in settings.config_dir (mode 0600, Docker's `auths` shape)."""

DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
"""The key Docker's config and credential helpers use for Docker Hub."""

_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HELPER_TIMEOUT = 30.0
_IDENTITY_TOKEN_USER = "<token>"
"""What a credential helper answers as Username when Secret is an identity token."""


@dataclass(frozen=True)
class Credentials:
    """A username and password (or identity token) for one registry."""

    username: str
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)
    """An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token endpoint."""
    source: str = ""
    """Where they came from, for messages: "DOCKER_USERNAME", "modelrunner login", a file path…"""


def registry_key(registry: str) -> str:
    """A registry host as credentials are keyed: scheme, /v1 and /v2 stripped, Hub aliases merged.

    "https://index.docker.io/v1/" -> "docker.io"; "http://127.0.0.1:5000/v2/" -> "127.0.0.1:5000".
    """
    key = registry.strip()
    for prefix in ("https://", "http://"):
        if key.lower().startswith(prefix):
            key = key[len(prefix) :]
    key = key.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    key = key.rstrip("/").lower()
    return "docker.io" if key in _DOCKER_HUB_HOSTS else key


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Docker's config.json: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    env = os.environ if environ is None else environ
    if directory := env.get("DOCKER_CONFIG", "").strip():
        return Path(directory).expanduser() / "config.json"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / "config.json"


class CredentialStore:
    """Finds credentials for a registry; reads files and runs helpers, so call it off the loop.

    Order: DOCKER_USERNAME/DOCKER_PASSWORD (then DOCKER_HUB_USER/DOCKER_HUB_PASSWORD) for any
    registry, as DMR; our login store; Docker's config.json (credHelpers, credsStore, auths).
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None = None) -> None:
        self._login_file = settings.config_dir / LOGIN_FILE
        self._environ = environ

    @property
    def login_file(self) -> Path:
        """Where `modelrunner login` keeps credentials."""
        return self._login_file

    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def lookup(self, registry: str) -> Credentials | None:
        """Credentials for a registry host, or None for anonymous access (blocking)."""
        key = registry_key(registry)
        env = self._env()
        for user_var, password_var in (
            ("DOCKER_USERNAME", "DOCKER_PASSWORD"),
            ("DOCKER_HUB_USER", "DOCKER_HUB_PASSWORD"),
        ):
            if env.get(user_var) and env.get(password_var):
                return Credentials(env[user_var], env[password_var], source=user_var)
        stored = _read_auths(self._login_file).get(key)
        if stored is not None:
            found = _from_auth_entry(stored, "modelrunner login")
            if found is not None:
                return found
        return _from_docker_config(docker_config_path(env), key)

    def save_login(self, registry: str, username: str, password: str) -> None:
        """Keep credentials for `registry` in our login store (mode 0600).

        Validate them against the registry first (RegistryClient.login does both).
        """
        if not username or ":" in username:
            raise InvalidInput("a username must be non-empty and cannot contain ':'")
        document = _read_document(self._login_file)
        auths = document.setdefault("auths", {})
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        auths[registry_key(registry)] = {"auth": token}
        _write_private(self._login_file, document)

    def remove_login(self, registry: str) -> bool:
        """Forget stored credentials for `registry`; False when there were none."""
        document = _read_document(self._login_file)
        auths = document.get("auths")
        if not isinstance(auths, dict) or registry_key(registry) not in auths:
            return False
        del auths[registry_key(registry)]
        _write_private(self._login_file, document)
        return True


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        _log.warning("ignoring unreadable credentials file %s: %s", path, error)
        return {}
    return document if isinstance(document, dict) else {}


def _read_auths(path: Path) -> dict[str, dict[str, Any]]:
    auths = _read_document(path).get("auths")
    if not isinstance(auths, dict):
        return {}
    return {registry_key(k): v for k, v in auths.items() if isinstance(v, dict)}


def _write_private(path: Path, document: dict[str, Any]) -> None:
    """Write a file only its owner can read, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp_name = tempfile.mkstemp(prefix=f"{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(document, stream, indent=2)
            stream.write("\n")
        os.chmod(temp_name, 0o600)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise


def _from_auth_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    """Docker's `auths` entry: base64 "user:pass" in `auth`, username/password, or identitytoken."""
    username = str(entry.get("username") or "")
    password = str(entry.get("password") or "")
    if encoded := entry.get("auth"):
        try:
            decoded = base64.b64decode(str(encoded), validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            _log.warning("ignoring a malformed `auth` entry in %s", source)
            decoded = ""
        if ":" in decoded:
            username, _, password = decoded.partition(":")
    if token := entry.get("identitytoken"):
        return Credentials(username or _IDENTITY_TOKEN_USER, "", str(token), source=source)
    if username and password:
        return Credentials(username, password, source=source)
    return None


def _from_docker_config(path: Path, key: str) -> Credentials | None:
    document = _read_document(path)
    if not document:
        return None
    helpers = document.get("credHelpers")
    if isinstance(helpers, dict):
        for server, helper in helpers.items():
            if registry_key(server) == key and isinstance(helper, str):
                return _from_helper(helper, key)
    auths = _read_auths(path)
    store = document.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, key)
        if found is not None:
            return found
    if key in auths:
        return _from_auth_entry(auths[key], str(path))
    return None


def _from_helper(helper: str, key: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` (the server address on stdin, JSON on stdout)."""
    if not _HELPER_NAME_RE.match(helper):
        _log.warning("ignoring credential helper with an unsafe name %r", helper)
        return None
    program = f"docker-credential-{helper}"
    server = DOCKER_HUB_SERVER if key == "docker.io" else key
    try:
        completed = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=_HELPER_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        _log.warning("credential helper %s is configured but not on PATH", program)
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        _log.warning("credential helper %s failed: %s", program, error)
        return None
    if completed.returncode != 0:
        # "credentials not found in native keychain" is the normal answer for an unknown server.
        return None
    try:
        answer = json.loads(completed.stdout)
        username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        _log.warning("credential helper %s answered something that is not JSON", program)
        return None
    if not secret:
        return None
    if username == _IDENTITY_TOKEN_USER:
        return Credentials(username, "", secret, source=program)
    return Credentials(username, secret, source=program)
