"""DMR's model routes: /models, /models/{name…}, tag, delete, load (plain-text errors)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.server import distribution_routes
from modelrunner.server.errors import ApiError

if TYPE_CHECKING:
    from modelrunner.core.runner import ModelRunner

_TRUE = {"1", "t", "true", "yes", "on"}
_FALSE = {"0", "f", "false", "no", "off", ""}
_ARCHIVE_TYPES = {"application/x-tar", "application/octet-stream", "application/tar", ""}


def _runner(request: Request) -> ModelRunner:
    runner: ModelRunner = request.app.state.runner
    return runner


def query_bool(request: Request, name: str) -> bool:
    """A boolean query parameter, spelt like Go's strconv.ParseBool accepts (400 otherwise)."""
    raw = request.query_params.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiError(400, f"invalid value {raw!r} for {name!r}: use true or false")


async def list_models(request: Request) -> Response:
    """GET /models: every stored model, DMR's shape."""
    models = await _runner(request).list_models()
    return JSONResponse([model.to_api() for model in models])


async def get_model(request: Request) -> Response:
    """GET /models/{name…}: one model; a bare name like "smollm2" finds "ai/smollm2:latest"."""
    model = await _runner(request).find_model(request.path_params["name"])
    return JSONResponse(model.to_api())


async def delete_model(request: Request) -> Response:
    """DELETE /models/{name…}?force=bool: untag, and delete when no tag is left."""
    force = query_bool(request, "force")
    actions = await _runner(request).remove_model(request.path_params["name"], force=force)
    return JSONResponse(actions)


async def purge_models(request: Request) -> Response:
    """DELETE /models/purge: every model deleted, runners stopped first; 200 with no body (DMR)."""
    await _runner(request).purge()
    return Response(status_code=200)


async def model_action(request: Request) -> Response:
    """POST /models/{name…}/{action}: `tag` and `push`; the rest of DMR's actions slot in here."""
    name, _, action = request.path_params["name"].rpartition("/")
    if not name:
        raise ApiError(404, f"unknown action {action!r}: POST /models/<name>/tag?repo=&tag=")
    if action == "tag":
        return await tag_model(request, name)
    if action == "push":
        return await distribution_routes.push_model(request, name)
    raise ApiError(404, f"unknown action {action!r}")


async def tag_model(request: Request, source: str) -> Response:
    """POST /models/{name…}/tag?repo=<repo>&tag=<tag>: 201 with the new reference."""
    repo = request.query_params.get("repo", "").strip()
    if not repo:
        raise ApiError(400, "missing repo: POST /models/<name>/tag?repo=<repository>&tag=<tag>")
    tag = request.query_params.get("tag", "").strip() or "latest"
    if "@" in repo or ":" in repo.rpartition("/")[2]:
        raise ApiError(400, f"invalid repo {repo!r}: give the repository alone, the tag in tag=")
    if "@" in tag or ":" in tag:
        raise ApiError(400, f"invalid tag {tag!r}: give the tag alone, e.g. tag=v1")
    target = f"{repo}:{tag}"
    await _runner(request).tag_model(source, target)
    body = {"message": f'Model tagged successfully with "{target}"', "target": target}
    return JSONResponse(body, status_code=201)


async def load_model(request: Request) -> Response:
    """POST /models/load: store the model in a DMR export tarball (it is not tagged)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in _ARCHIVE_TYPES:
        raise ApiError(415, f"expected a tar archive (application/x-tar), got {content_type!r}")
    model_id = await _runner(request).load_archive(request.stream())
    return JSONResponse({"id": model_id, "message": "Model loaded successfully"})


def routes() -> list[BaseRoute]:
    """The /models routes, most specific first."""
    return [
        Route("/models", list_models, methods=["GET"]),
        Route("/models/load", load_model, methods=["POST"]),
        Route("/models/create", distribution_routes.create_model, methods=["POST"]),
        Route("/models/purge", purge_models, methods=["DELETE"]),  # DMR: not a model's name
        Route("/models/{name:path}", get_model, methods=["GET"]),
        Route("/models/{name:path}", delete_model, methods=["DELETE"]),
        Route("/models/{name:path}", model_action, methods=["POST"]),
    ]
