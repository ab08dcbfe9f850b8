"""The `modelrunner-tui` command: the full-screen app, or with --headless the HTTP API alone.

Textual is imported only on the full-screen path, so `--headless` runs on machines (and in
containers) where nothing but the API is wanted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from modelrunner.core.errors import CoreError
from modelrunner.core.settings import Settings

PROG = "modelrunner-tui"
EXIT_USAGE = 2
"""Exit status for a bad flag or a bad setting, as argparse uses."""


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a TCP port between 1 and 65535, got {text!r}")
    return int(text)


def _version() -> str:
    try:
        return metadata.version("modelrunner")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The command line: flags override config.toml and the environment."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run local models: a full-screen terminal app, or the HTTP API (--headless).",
    )
    parser.add_argument(
        "--headless",
        action="store_true",
        help="serve the DMR/OpenAI-compatible HTTP API without the terminal UI",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--port", type=_port, help="TCP port of the HTTP API (default: MODEL_RUNNER_PORT or 12434)"
    )
    where.add_argument(
        "--socket", type=Path, help="serve the HTTP API on this Unix socket instead of TCP"
    )
    parser.add_argument(
        "--models-path", type=Path, help="model store directory (default: MODELS_PATH)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from config.toml and the environment, with the flags applied on top.

    Raises:
        SettingsError: A configuration value or environment variable is malformed.
    """
    changes: dict[str, Any] = {}
    if args.port is not None:
        changes.update(port=args.port, socket=None)
    if args.socket is not None:
        changes["socket"] = args.socket.expanduser()
    if args.models_path is not None:
        changes["models_path"] = args.models_path.expanduser()
    return Settings.load().with_changes(**changes)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except CoreError as error:
        print(f"{PROG}: {error.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.headless:
        from modelrunner.server.serve import serve

        return serve(settings)
    return run_app(settings)


def run_app(settings: Settings) -> int:
    """Run the full-screen app until the user quits."""
    _log_to_file(settings)
    from modelrunner.core.runner import ModelRunner
    from modelrunner.tui.app import make_app

    try:
        runner = ModelRunner(settings)
    except CoreError as error:
        print(f"{PROG}: {error.message}", file=sys.stderr)
        return 1
    app = make_app(runner, settings)
    app.run()
    return app.return_code or 0


def _log_to_file(settings: Settings) -> None:
    """Send log records to DMR's service log in MODEL_RUNNER_LOG_DIR, never to stderr.

    Anything written to stderr would scribble over the screen. The runners' output goes to the
    engine log beside it (the core writes that), so both files read as a headless server's do.
    """
    from modelrunner.core.log_files import ServiceLogHandler, open_log_dir

    directory = open_log_dir(settings.log_dir)
    handler = logging.NullHandler() if directory is None else ServiceLogHandler(directory)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if settings.debug else logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
