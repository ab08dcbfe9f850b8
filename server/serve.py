"""Run the HTTP API with uvicorn on 127.0.0.1:<port> or a Unix socket, until SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from modelrunner.core.errors import CoreError
from modelrunner.core.log_files import SERVICE_LOG, open_log_dir
from modelrunner.core.settings import Settings

logger = logging.getLogger("modelrunner.server.serve")  # not "__main__" under python -m

_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def logging_config(debug: bool, log_dir: Path | None = None) -> dict[str, Any]:
    """Everything, access log included, to stderr: stdout stays free for whoever runs us.

    With a `log_dir` the same records also go, bracket-stamped, to DMR's service log there
    (`inference.log`, which GET /logs serves).
    """
    level = "DEBUG" if debug else "INFO"
    handlers: dict[str, Any] = {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    }
    if log_dir is not None:
        handlers["service_log"] = {
            "()": "modelrunner.core.log_files.ServiceLogHandler",
            "directory": str(log_dir),
        }
    names = list(handlers)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": _LOG_FORMAT}},
        "handlers": handlers,
        "loggers": {
            "uvicorn": {"handlers": names, "level": level, "propagate": False},
            "uvicorn.access": {"handlers": names, "level": level, "propagate": False},
            "modelrunner": {"handlers": names, "level": level, "propagate": False},
        },
    }


class ApiServer(uvicorn.Server):
    """uvicorn's server, but a SIGINT/SIGTERM shutdown ends in a return, not a re-raised signal,
    and `on_shutdown` runs first (to end the endless streams that would hold the shutdown up)."""

    def __init__(
        self, config: uvicorn.Config, *, on_shutdown: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def bind_unix_socket(path: Path) -> socket.socket:
    """A listening Unix socket at `path`, readable by this user only; a stale file is removed.

    Raises:
        CoreError: Another server is answering on `path`, or it cannot be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: a leftover from a crash
        else:
            raise CoreError(f"{path} is in use by another server")
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise CoreError(f"cannot listen on {path}: {error.strerror or error}") from error
    return listener


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_server(settings: Settings) -> tuple[ApiServer, list[socket.socket] | None]:
    """The uvicorn server for `settings`, and the Unix socket it serves on (None for TCP)."""
    from modelrunner.core.runner import ModelRunner
    from modelrunner.server.app import build_app

    runner = ModelRunner(settings)
    app = build_app(runner)
    log_dir = open_log_dir(settings.log_dir)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=logging_config(settings.debug, log_dir),
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    server = ApiServer(config, on_shutdown=runner.end_streams)
    if settings.socket is not None:
        return server, [bind_unix_socket(settings.socket)]
    return server, None


def serve(settings: Settings) -> int:
    """Serve the API until SIGINT or SIGTERM; every llama-server is stopped before returning.

    Returns:
        0 after a clean shutdown, 1 when the server could not start.
    """
    try:
        server, sockets = build_server(settings)
    except CoreError as error:
        print(f"modelrunner: {error.message}", file=sys.stderr)
        return 1
    where = str(settings.socket) if sockets else f"http://{settings.host}:{settings.port}"
    if not sockets and not _is_loopback(settings.host):
        logger.warning("serving on %s: the API has no authentication", settings.host)
    logger.info("modelrunner API on %s (models in %s)", where, settings.models_path)
    if settings.log_dir is not None:
        if (settings.log_dir / SERVICE_LOG).is_file():
            logger.info("logs in %s (GET /logs)", settings.log_dir)
        else:
            logger.warning("cannot write logs to %s: GET /logs has none", settings.log_dir)
    try:
        server.run(sockets=sockets)
    except SystemExit as stop:  # uvicorn exits when it cannot bind or start the app
        if stop.code in (0, None):
            return 0
        print(f"modelrunner: could not serve on {where} (see the log above)", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            print(f"modelrunner: {where} is already in use", file=sys.stderr)
            return 1
        raise
    finally:
        if sockets and settings.socket is not None:
            for listener in sockets:
                listener.close()
            with contextlib.suppress(OSError):
                settings.socket.unlink()
    return 0 if server.started else 1


def main() -> int:
    """`python -m modelrunner.server.serve`: serve with the settings from config and environment."""
    try:
        settings = Settings.load()
    except CoreError as error:
        print(f"modelrunner: {error.message}", file=sys.stderr)
        return 2
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
