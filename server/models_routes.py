"""DMR's model routes: /models, /models/{name…}, tag, push, repackage, export, delete, load
(plain-text errors)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from modelrunner.core.store.package import MAX_CONTEXT_SIZE
from modelrunner.server import distribution_routes
from modelrunner.server.errors import ApiError
from modelrunner.server.request_bodies import parse_json_object, read_body
from modelrunner.server.streaming import ListeningStreamingResponse

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
    """GET /models/{name…}: one model; a bare name like "smollm2" finds "ai/smollm2:latest".

    GET /models/{name…}/export is DMR's export instead: as DMR, a last path segment `export`
    is the action (so a model named `ai/export` is inspected as `ai/export:latest`); a bare
    `/models/export` names a model.
    """
    reference = request.path_params["name"]
    name, _, action = reference.rpartition("/")
    if action == "export" and name:
        return await export_model(request, name)
    model = await _runner(request).find_model(reference)
    return JSONResponse(model.to_api())


async def export_model(request: Request, name: str) -> Response:
    """GET /models/{name…}/export: DMR's export tarball, streamed (404 for no such model)."""
    chunks = await _runner(request).export_model(name)
    headers = {"Content-Disposition": f"attachment; filename={json.dumps(name + '.tar')}"}
    return ListeningStreamingResponse(chunks, media_type="application/x-tar", headers=headers)


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
    """POST /models/{name…}/{action}: DMR's `tag`, `push` and `repackage`."""
    name, _, action = request.path_params["name"].rpartition("/")
    if not name:
        raise ApiError(404, f"unknown action {action!r}: POST /models/<name>/tag?repo=&tag=")
    if action == "tag":
        return await tag_model(request, name)
    if action == "push":
        return await distribution_routes.push_model(request, name)
    if action == "repackage":
        return await repackage_model(request, name)
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


async def repackage_model(request: Request, source: str) -> Response:
    """POST /models/{name…}/repackage {"target": "<ref>", "context_size": N}: a new model whose
    config sets the context size, its layers shared with the source; 201 as DMR."""
    body = parse_json_object(await read_body(request))
    target = body.get("target")
    if target is not None and not isinstance(target, str):
        raise ApiError(400, "invalid request body: target must be a string")
    if not target:
        raise ApiError(400, "target is required")
    context_size = body.get("context_size")
    if context_size is not None and (
        isinstance(context_size, bool)
        or not isinstance(context_size, int)
        or not 0 < context_size <= MAX_CONTEXT_SIZE
    ):
        raise ApiError(
            400,
            f"invalid request body: context_size must be a whole number of tokens between 1 "
            f"and {MAX_CONTEXT_SIZE}, got {json.dumps(context_size)}",
        )
    await _runner(request).repackage_model(source, target, context_size=context_size)
    body = {
        "message": f'Model repackaged successfully as "{target}"',
        "source": source,
        "target": target,
    }
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
