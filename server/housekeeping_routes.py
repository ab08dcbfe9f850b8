"""Housekeeping routes: GET /engines/df, POST /models/prune, POST /models/fsck, GET /models/updates.

`/engines/df` answers DMR's two keys exactly (`models_disk_usage`, `default_backend_disk_usage`),
counting each file once, then our breakdown. Errors are plain text, as DMR's. These routes must
come before `/models/{name:path}` in the route table, which would otherwise take them for names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.server.errors import ApiError

if TYPE_CHECKING:
    from modelrunner.core.store.fsck import FsckReport
    from modelrunner.core.store.housekeeping import DiskUsage, PruneReport
    from modelrunner.core.store.updates import UpdateStatus

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class HousekeepingFacade(Protocol):
    """The ModelRunner methods these routes call."""

    async def disk_usage(self) -> DiskUsage: ...
    async def prune(self, *, dry_run: bool, older_than: float | None = None) -> PruneReport: ...
    async def fsck(self, *, repair: bool = False) -> FsckReport: ...
    async def check_updates(self) -> list[UpdateStatus]: ...


def _runner(request: Request) -> HousekeepingFacade:
    runner: HousekeepingFacade = request.app.state.runner
    return runner


def query_flag(request: Request, name: str, default: bool) -> bool:
    """A boolean query parameter: true/false, 1/0, yes/no; a bare `?name` means true.

    Raises:
        ApiError: 400 for anything else.
    """
    if name not in request.query_params:
        return default
    value = request.query_params[name].strip().lower()
    if value in _TRUE or (value == "" and f"{name}=" not in request.url.query):
        return True
    if value in _FALSE:
        return False
    raise ApiError(400, f"invalid {name} value {value!r}: use true or false")


async def disk_usage(request: Request) -> Response:
    """GET /engines/df."""
    usage = await _runner(request).disk_usage()
    return JSONResponse(usage.to_api())


async def prune(request: Request) -> Response:
    """POST /models/prune?dry_run=bool&all_partials=bool&older_than=seconds."""
    dry_run = query_flag(request, "dry_run", False)
    older_than: float | None = 0.0 if query_flag(request, "all_partials", False) else None
    raw_age = request.query_params.get("older_than")
    if raw_age is not None and older_than is None:
        try:
            older_than = float(raw_age)
        except ValueError:
            raise ApiError(400, f"invalid older_than {raw_age!r}: give seconds") from None
        if not older_than >= 0:
            raise ApiError(400, f"invalid older_than {raw_age!r}: give seconds")
    report = await _runner(request).prune(dry_run=dry_run, older_than=older_than)
    return JSONResponse(report.to_api())


async def fsck(request: Request) -> Response:
    """POST /models/fsck?repair=bool."""
    report = await _runner(request).fsck(repair=query_flag(request, "repair", False))
    return JSONResponse(report.to_api())


async def updates(request: Request) -> Response:
    """GET /models/updates: one object per registry tag."""
    statuses = await _runner(request).check_updates()
    return JSONResponse([status.to_api() for status in statuses])


def routes() -> list[BaseRoute]:
    """The housekeeping routes (register before the /models/{name:path} routes)."""
    return [
        Route("/engines/df", disk_usage, methods=["GET"]),
        Route("/models/prune", prune, methods=["POST"]),
        Route("/models/fsck", fsck, methods=["POST"]),
        Route("/models/updates", updates, methods=["GET"]),
    ]
