"""The headless path never loads Textual; core/ never loads the web framework."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(statement: str, modules: tuple[str, ...]) -> list[str]:
    probe = f"{statement}\nimport sys\nprint(','.join(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return [name for name in result.stdout.strip().split(",") if name]


@pytest.mark.parametrize(
    "statement",
    [
        "import modelrunner.core.runner",
        "import modelrunner.server.app",
        "import modelrunner.server.serve",
        "import modelrunner.server.cli.main",
        "import modelrunner.tui.cli",
    ],
)
def test_headless_imports_do_not_load_textual(statement: str) -> None:
    assert _loaded_after(statement, ("textual",)) == []


def test_core_does_not_load_the_web_framework() -> None:
    statement = "import modelrunner.core.runner, modelrunner.core.settings"
    assert _loaded_after(statement, ("starlette", "uvicorn", "textual", "fastapi")) == []


def test_headless_start_imports_no_textual(tmp_path: object) -> None:
    """Run the real `--headless` entry far enough to parse arguments, then check sys.modules."""
    probe = (
        "import sys\n"
        "from modelrunner.tui import cli\n"
        "try:\n"
        "    cli.main(['--headless', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('textual' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
