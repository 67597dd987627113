"""`/v1/…`: the OpenAI-compatible API of the ready engines, behind the advisor's key.

aiohttp rather than httpx for this one hop: on the same 1-token completion httpx's async
client added about 3 ms over calling the engine directly, aiohttp 1.3 ms
(bench/supervisor.py --engine fake).

Requests are routed by their `model` (each engine serves its catalog id and its repo id)
and passed through untouched, streaming included; the engine's own key is added on the
way. It is a raw ASGI mount rather than a routed handler: it is on the path of every
token, and routing, dependency injection and body parsing would cost more than the hop.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from litestar import asgi
from litestar.types import HTTPScope, Receive

from advisor.supervisor import Supervisor
from advisor.web.auth import allowed

_HOP = {b"host", b"content-length", b"authorization", b"connection", b"transfer-encoding",
        b"keep-alive", b"accept-encoding", b"cookie"}
_session: aiohttp.ClientSession | None = None


async def close() -> None:
    """Close the pool of connections to the engines (at the service's shutdown)."""
    if _session is not None and not _session.closed:
        await _session.close()


def _client() -> aiohttp.ClientSession:
    global _session
    if _session is None or _session.closed:
        _session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600),
            connector=aiohttp.TCPConnector(limit=64), auto_decompress=False)
    return _session


async def _reply(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None,
                 raw: bytes | None = None) -> None:
    data = raw if raw is not None else json.dumps(body).encode()
    base = headers if headers is not None else [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status,
                "headers": [*base, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


@asgi("/v1", is_mount=True, copy_scope=False, include_in_schema=False)
async def v1(scope: HTTPScope, receive: Receive, send: Any) -> None:
    """The OpenAI API of the ready engines (GET /v1/models lists what they serve)."""
    app = scope["app"]
    supervisor: Supervisor = app.state.supervisor
    if not allowed(scope, app.state.api_key):
        await _reply(send, 401, _error("an API key is required: Authorization: Bearer <key>"))
        return
    # the request's own path: the mount's scope["path"] may carry a trailing slash the
    # engine would answer with a redirect to itself
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1").split("?", 1)[0].removeprefix("/v1") or "/"
    if scope["method"] == "GET" and path.rstrip("/") == "/models":
        data = [{"id": name, "object": "model", "owned_by": "slm-advisor", "deployment": d.id}
                for d, _key in supervisor.ready() for name in d.served_names]
        await _reply(send, 200, {"object": "list", "data": data})
        return
    body = b""
    while True:
        message: Any = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    query = scope.get("query_string", b"").decode("latin-1")
    name: Any = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("model")
    if body:
        try:
            name = json.loads(body).get("model", name)
        except (ValueError, AttributeError):
            await _reply(send, 400, _error("the body is not a JSON object"))
            return
    if not name:
        await _reply(send, 400, _error("model: name the model to call (GET /v1/models lists them)"))
        return
    hit = supervisor.route(str(name))
    if hit is None:
        await _reply(send, 404, _error(f"model: no ready engine serves {name!r} "
                                       "(GET /v1/models lists them)"))
        return
    deployment, key = hit
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k not in _HOP}
    headers["authorization"] = f"Bearer {key}"
    url = f"http://127.0.0.1:{deployment.port}/v1{path}" + (f"?{query}" if query else "")
    try:
        reply = await _client().request(scope["method"], url, headers=headers, data=body or None,
                                        allow_redirects=False)
    except (aiohttp.ClientError, OSError) as exc:
        await _reply(send, 502, _error(f"the engine of deployment {deployment.id} did not answer "
                                       f"({type(exc).__name__})"))
        return
    passed = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
              if k.lower().encode() not in _HOP]
    try:
        if "text/event-stream" not in reply.headers.get("content-type", ""):
            # a whole answer: one write with its length
            await _reply(send, reply.status, None, passed, await reply.read())
            return
        await send({"type": "http.response.start", "status": reply.status, "headers": passed})
        async for chunk in reply.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        reply.release()
