"""`/v1/…`: the OpenAI-compatible API of the ready engines, behind the advisor's key.

Requests are routed by their `model` (each engine serves its catalog id and its repo id)
and streamed through untouched; the engine's own key is added on the way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from litestar import Request, Response, get, route
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from advisor.supervisor import Supervisor
from advisor.web.auth import require_key

_HOP = {"host", "content-length", "authorization", "connection", "transfer-encoding", "keep-alive",
        "accept-encoding"}
_client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0), limits=httpx.Limits(
    max_keepalive_connections=32))


def _error(status: int, message: str) -> Response[dict[str, Any]]:
    return Response({"error": {"message": message, "type": "invalid_request_error"}},
                    status_code=status)


@get("/v1/models", guards=[require_key], tags=["openai"])
async def models(supervisor: NamedDependency[Supervisor]) -> dict[str, Any]:
    """Every model name the ready engines serve."""
    data = [{"id": name, "object": "model", "owned_by": "slm-advisor", "deployment": d.id}
            for d, _key in supervisor.ready() for name in d.served_names]
    return {"object": "list", "data": data}


@route("/v1/{path:path}", http_method=["POST", "GET"], guards=[require_key], tags=["openai"])
async def passthrough(request: Request[Any, Any, Any], path: FromPath[str],
                      supervisor: NamedDependency[Supervisor]) -> Response[Any]:
    """Any other OpenAI call, to the engine that serves the request's `model`."""
    body = await request.body()
    name = request.query_params.get("model")
    if body:
        try:
            name = json.loads(body).get("model", name)
        except (ValueError, AttributeError):
            return _error(400, "the body is not a JSON object")
    if not name:
        return _error(400, "model: name the model to call (GET /v1/models lists them)")
    hit = supervisor.route(str(name))
    if hit is None:
        return _error(404, f"model: no ready engine serves {name!r} (GET /v1/models lists them)")
    deployment, key = hit
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers["authorization"] = f"Bearer {key}"
    upstream = _client.build_request(request.method, f"http://127.0.0.1:{deployment.port}/v1{path}",
                                     params=request.query_params, headers=headers, content=body)
    try:
        reply = await _client.send(upstream, stream=True)
    except httpx.HTTPError as exc:
        return _error(502, f"the engine of deployment {deployment.id} did not answer ({exc})")

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in reply.aiter_raw():
                yield chunk
        finally:
            await reply.aclose()

    passed = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP}
    return Stream(relay(), status_code=reply.status_code, headers=passed,
                  media_type=reply.headers.get("content-type"))
