"""Settings: defaults, config.toml, DMR's environment variables, and clear errors for bad values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from modelrunner.core.settings import (
    DEFAULT_LLAMA_SERVER_VERSION,
    DEFAULT_PORT,
    Settings,
    SettingsError,
    save_config,
)


def test_defaults_follow_dmr(tmp_path: Path) -> None:
    settings = Settings.load({"MODELRUNNER_CONFIG": str(tmp_path / "none.toml")})
    assert settings.port == DEFAULT_PORT == 12434
    assert settings.host == "127.0.0.1"
    assert settings.socket is None
    assert settings.models_path == Path.home() / ".docker" / "models"
    assert settings.llama_server_version == DEFAULT_LLAMA_SERVER_VERSION
    assert settings.llama_args is None
    assert settings.runner_host == "http://localhost:12434"
    assert settings.default_model == "ai/smollm2:135M-Q4_1"


def test_environment_overrides_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('port = 20000\nmodels_path = "/from/file"\ndebug = true\n')
    settings = Settings.load(
        {
            "MODELRUNNER_CONFIG": str(config),
            "MODEL_RUNNER_PORT": "20001",
            "MODELS_PATH": "/from/env",
            "LLAMA_ARGS": "-ngl 0 --threads '2'",
            "LLAMA_SERVER_PATH": "/opt/llama",
            "LLAMA_SERVER_VERSION": "1.2.3",
            "DISABLE_SERVER_UPDATE": "true",
            "DISABLE_METRICS": "1",
            "MODEL_RUNNER_RUNTIME_MEMORY_CHECK": "false",
            "DO_NOT_TRACK": "1",
            "MODEL_RUNNER_HOST": "127.0.0.1:9999",
            "DMR_ORIGINS": "https://app.example, http://box.lan:*,",
        }
    )
    assert settings.port == 20001
    assert settings.models_path == Path("/from/env")
    assert settings.debug is True
    assert settings.llama_args == ("-ngl", "0", "--threads", "2")
    assert settings.llama_server_path == Path("/opt/llama")
    assert settings.llama_server_version == "1.2.3"
    assert settings.disable_server_update
    assert settings.disable_metrics
    assert settings.do_not_track
    assert settings.runtime_memory_check is False
    assert settings.runner_host == "http://127.0.0.1:9999"
    assert settings.origins == ("https://app.example", "http://box.lan:*")


def test_socket_is_used_only_without_a_port() -> None:
    assert Settings.load({"MODEL_RUNNER_SOCK": "/tmp/mr.sock"}).socket == Path("/tmp/mr.sock")
    both = Settings.load({"MODEL_RUNNER_SOCK": "/tmp/mr.sock", "MODEL_RUNNER_PORT": "1234"})
    assert both.socket is None
    assert both.port == 1234


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("MODEL_RUNNER_PORT", "eighty", "MODEL_RUNNER_PORT: expected a TCP port"),
        ("MODEL_RUNNER_PORT", "70000", "MODEL_RUNNER_PORT: expected a TCP port"),
        ("MODEL_RUNNER_PORT", "-1", "MODEL_RUNNER_PORT: expected a TCP port"),
        ("DISABLE_METRICS", "maybe", "DISABLE_METRICS: expected a boolean"),
        ("DEBUG", "2", "DEBUG: expected a boolean"),
        ("LLAMA_ARGS", "--threads 'unclosed", "LLAMA_ARGS: cannot split"),
    ],
)
def test_a_bad_variable_is_named_with_what_it_expected(
    variable: str, value: str, says: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.load({variable: value})
    assert says in caught.value.message
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("port = 'x'", "port: expected a TCP port"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("port = [", "not valid TOML"),
        ("debug = 'perhaps'", "debug: expected a boolean"),
        ("llama_args = 3", "llama_args: expected a string or a list"),
    ],
)
def test_a_bad_config_file_is_named(tmp_path: Path, content: str, says: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    with pytest.raises(SettingsError) as caught:
        Settings.load({"MODELRUNNER_CONFIG": str(config)})
    assert str(config) in caught.value.message
    assert says in caught.value.message


def test_save_config_round_trips_and_keeps_other_keys(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("debug = true\n")
    settings = Settings.load({"MODELRUNNER_CONFIG": str(config)})
    save_config(settings, port=23456, llama_args=["-ngl", "0"])
    reloaded = Settings.load({"MODELRUNNER_CONFIG": str(config)})
    assert reloaded.port == 23456
    assert reloaded.debug is True
    assert reloaded.llama_args == ("-ngl", "0")
    with pytest.raises(SettingsError, match="unknown setting"):
        save_config(settings, nonsense=1)


def test_chat_defaults_suit_small_models_and_can_be_replaced(tmp_path: Path) -> None:
    defaults = Settings.load({"MODELRUNNER_CONFIG": str(tmp_path / "none.toml")})
    assert defaults.system_prompt == "You are a helpful assistant."
    assert defaults.chat_options == {"temperature": 0.0, "max_tokens": 2048}
    config = tmp_path / "config.toml"
    config.write_text('system_prompt = ""\n[chat_options]\ntemperature = 0.7\n')
    custom = Settings.load({"MODELRUNNER_CONFIG": str(config)})
    assert custom.system_prompt == ""
    assert custom.chat_options == {"temperature": 0.7}
    config.write_text("chat_options = 3\n")
    with pytest.raises(SettingsError, match="chat_options: expected a table"):
        Settings.load({"MODELRUNNER_CONFIG": str(config)})


def test_log_dir_is_dmrs_tmpdir_default_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR afresh
    none = str(tmp_path / "none.toml")
    assert Settings.load({"MODELRUNNER_CONFIG": none}).log_dir == (
        tmp_path / "tmp" / "model-runner-logs"
    )
    config = tmp_path / "config.toml"
    config.write_text(f'log_dir = "{tmp_path / "from-file"}"\n')
    assert Settings.load({"MODELRUNNER_CONFIG": str(config)}).log_dir == tmp_path / "from-file"
    env = {"MODELRUNNER_CONFIG": str(config), "MODEL_RUNNER_LOG_DIR": str(tmp_path / "env")}
    assert Settings.load(env).log_dir == tmp_path / "env"
