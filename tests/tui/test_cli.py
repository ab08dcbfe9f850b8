"""The `modelrunner-tui` command line: flags onto Settings, --headless to serve(), clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelrunner.core.settings import Settings
from modelrunner.tui import cli


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_RUNNER_PORT", "13434")
    monkeypatch.setenv("MODELS_PATH", str(tmp_path / "from-env"))
    args = cli.build_parser().parse_args(["--port", "14000", "--models-path", str(tmp_path / "m")])
    settings = cli.settings_from(args)
    assert settings.port == 14000
    assert settings.socket is None
    assert settings.models_path == tmp_path / "m"


def test_socket_flag(tmp_path: Path) -> None:
    settings = cli.settings_from(cli.build_parser().parse_args(["--socket", str(tmp_path / "s")]))
    assert settings.socket == tmp_path / "s"


def test_port_and_socket_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--port", "1", "--socket", "/tmp/x.sock"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_a_bad_port_flag_is_refused(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--port", port])
    assert exited.value.code == 2
    assert "expected a TCP port between 1 and 65535" in capsys.readouterr().err


def test_a_bad_environment_value_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_RUNNER_PORT", "twelve")
    assert cli.main(["--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("modelrunner-tui: MODEL_RUNNER_PORT:")


def test_headless_hands_the_settings_to_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[Settings] = []

    def fake_serve(settings: Settings) -> int:
        served.append(settings)
        return 0

    monkeypatch.setattr("modelrunner.server.serve.serve", fake_serve)
    assert cli.main(["--headless", "--port", "14001"]) == 0
    assert [settings.port for settings in served] == [14001]


def test_without_headless_the_app_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Settings] = []

    def fake_run_app(settings: Settings) -> int:
        ran.append(settings)
        return 0

    monkeypatch.setattr(cli, "run_app", fake_run_app)
    assert cli.main([]) == 0
    assert len(ran) == 1


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("modelrunner-tui ")


def test_the_app_logs_to_the_service_log_and_never_to_stderr(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging

    from modelrunner.core.log_files import SERVICE_LOG

    settings = Settings.load().with_changes(log_dir=tmp_path / "logs")
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        cli._log_to_file(settings)
        logging.getLogger("modelrunner.tui.app").warning("a pull failed: %s", "refused")
    finally:
        for handler in root.handlers[len(before) :]:
            root.removeHandler(handler)
        root.setLevel(level)
    assert capfd.readouterr().err == ""
    (line,) = (tmp_path / "logs" / SERVICE_LOG).read_text().splitlines()
    assert line.endswith("] WARNING modelrunner.tui.app: a pull failed: refused")
    assert re.match(r"^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z\] ", line)
