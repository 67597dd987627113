"""`/v1/…`: the OpenAI-compatible API of the ready engines, behind the advisor's key.

aiohttp rather than httpx for this one hop: on the same 1-token completion httpx's async
client added about 3 ms over calling the engine directly, aiohttp 1.3 ms
(bench/supervisor.py --engine fake).

Requests are routed by their `model` (each engine serves its catalog id and its repo id),
over a launch's replicas to the one with the fewest requests outstanding (advisor.routes),
and passed through untouched, streaming included; the engine's own key is added on the
way. It is a raw ASGI mount rather than a routed handler: it is on the path of every
token, and routing, dependency injection and body parsing would cost more than the hop.

Only `/v1/…` reaches an engine: a path that could resolve elsewhere (`..`, encoded dots
or slashes) is refused, since the engine answers `/metrics`, `/tokenize`, … without a key.
Bodies are capped (MAX_BODY). A client that leaves closes the engine's connection too,
which is how vLLM learns to abort the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from typing import Any

import aiohttp
from litestar import asgi
from litestar.types import HTTPScope, Receive
from yarl import URL

from advisor.specs import Deployment
from advisor.supervisor import Supervisor
from advisor.web.auth import allowed, bearer_wait

MAX_BODY = 16 << 20  # bytes of a request body; a prompt of the longest context is far less
_HOP = {b"host", b"content-length", b"authorization", b"connection", b"transfer-encoding",
        b"keep-alive", b"accept-encoding", b"cookie"}
# of the engine's reply: uvicorn writes its own date, server and framing
_DROP = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
# `.` or `..` as a segment, an empty segment, a backslash, or a dot, slash or backslash
# percent-encoded: anything a server on the way may resolve to a path outside /v1
_OUTSIDE = re.compile(r"/\.\.?(?:/|$)|//|\\|%(?:2e|2f|5c)", re.IGNORECASE)
# one pool per engine socket: an aiohttp connector dials one Unix socket
_sessions: dict[str, aiohttp.ClientSession] = {}


async def close() -> None:
    """Close the pools of connections to the engines (at the service's shutdown)."""
    for session in list(_sessions.values()):
        if not session.closed:
            await session.close()
    _sessions.clear()


async def _client(sock: str) -> aiohttp.ClientSession:
    session = _sessions.get(sock)
    if session is None or session.closed:
        for gone in [s for s in _sessions if not os.path.exists(s)]:
            await _sessions.pop(gone).close()  # pools of engines that have ended
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=600),
            connector=aiohttp.UnixConnector(path=sock, limit=64), auto_decompress=False)
        _sessions[sock] = session
    return session


async def _upstream(deployment: Deployment, path_qs: str) -> tuple[aiohttp.ClientSession, URL]:
    """How an engine is reached: the connection pool and the URL of `path_qs` on it. The
    one place that knows it is the engine's Unix socket (advisor.supervisor: nothing else
    can reach it). The URL is taken as written (encoded=True): yarl would otherwise decode
    `%2e` and resolve `..`."""
    return await _client(deployment.socket), URL(f"http://engine{path_qs}", encoded=True)


async def _reply(send: Any, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None,
                 raw: bytes | None = None) -> None:
    data = raw if raw is not None else json.dumps(body).encode()
    base = headers if headers is not None else [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status,
                "headers": [*base, (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}


class _Gone(Exception):
    """The client left before its body was read."""


async def _body(scope: HTTPScope, receive: Receive) -> bytes | None:
    """The request's body, or None past MAX_BODY (told early by content-length). Chunks are
    joined once: `+=` on bytes copies the whole so far on every chunk."""
    for k, v in scope["headers"]:
        if k == b"content-length" and v.isdigit() and int(v) > MAX_BODY:
            return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":  # not a shorter body to pass on
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _until_disconnect(receive: Receive) -> None:
    """Returns once the client has gone. With the body read, uvicorn's receive() waits until
    the connection drops (or our reply is complete) and then says http.disconnect."""
    while True:
        message: Any = await receive()
        if message["type"] == "http.disconnect":
            return


async def _forward(send: Any, session: aiohttp.ClientSession, method: str, url: URL,
                   headers: dict[str, str], body: bytes, deployment_id: str) -> None:
    """Pass one request to the engine and its reply back, streaming as it comes."""
    try:
        reply = await session.request(method, url, headers=headers, data=body or None,
                                      allow_redirects=False)
    except (aiohttp.ClientError, OSError) as exc:
        await _reply(send, 502, _error(f"the engine of deployment {deployment_id} did not answer "
                                       f"({type(exc).__name__})"))
        return
    passed = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()
              if k.lower() not in _DROP]
    try:
        if "text/event-stream" not in reply.headers.get("content-type", ""):
            # a whole answer: one write with its length
            await _reply(send, reply.status, None, passed, await reply.read())
        else:
            await send({"type": "http.response.start", "status": reply.status, "headers": passed})
            async for chunk in reply.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
    except BaseException:
        # cut short (the client left, or the engine broke off): never back to the pool
        reply.close()
        raise
    reply.release()


@asgi("/v1", is_mount=True, copy_scope=False, include_in_schema=False)
async def v1(scope: HTTPScope, receive: Receive, send: Any) -> None:
    """The OpenAI API of the ready engines (GET /v1/models lists what they serve)."""
    app = scope["app"]
    supervisor: Supervisor = app.state.supervisor
    wait = bearer_wait(scope)
    if not allowed(scope, app.state.api_key):
        if wait:  # locked out for wrong keys: refused as the guarded routes refuse it
            await _reply(send, 429, _error(f"Too many failed attempts with a wrong key: try "
                                           f"again in {wait} s"),
                         [(b"content-type", b"application/json"),
                          (b"retry-after", str(wait).encode())])
            return
        await _reply(send, 401, _error("an API key is required: Authorization: Bearer <key>"))
        return
    # the request's own path, as sent: the mount's scope["path"] is decoded (`%2f` is a
    # slash there) and may carry a trailing slash the engine would redirect to itself
    raw = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]
    path = raw.removeprefix("/v1") or "/"
    if not path.startswith("/") or _OUTSIDE.search(path):
        await _reply(send, 400, _error(f"path: {raw!r} is not an API path under /v1 ('.' and '..' "
                                       "segments, empty segments, backslashes and encoded dots "
                                       "or slashes are refused)"))
        return
    if scope["method"] == "GET" and path.rstrip("/") == "/models":
        data = [{"id": name, "object": "model", "owned_by": "slm-advisor", "deployment": d.id}
                for d, _key in supervisor.ready() for name in d.served_names]
        await _reply(send, 200, {"object": "list", "data": data})
        return
    try:
        body = await _body(scope, receive)
    except _Gone:
        return
    if body is None:
        await _reply(send, 413, _error(f"the body is larger than {MAX_BODY >> 20} MiB"))
        return
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
    hit = supervisor.take(str(name))  # outstanding on that engine until its answer ends
    if hit is None:
        await _reply(send, 404, _error(f"model: no ready engine serves {name!r} "
                                       "(GET /v1/models lists them)"))
        return
    deployment, key = hit
    try:
        await _pass_on(scope, receive, send, deployment, key, path, query, body)
    finally:
        supervisor.done(deployment.id)


async def _pass_on(scope: HTTPScope, receive: Receive, send: Any, deployment: Deployment,
                   key: str, path: str, query: str, body: bytes) -> None:
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k not in _HOP}
    headers["authorization"] = f"Bearer {key}"
    session, url = await _upstream(deployment, f"/v1{path}" + (f"?{query}" if query else ""))
    # the engine's work is watched against the client: vLLM aborts a request when its
    # connection closes, and uvicorn's send() to a client that left is silently dropped
    work = asyncio.ensure_future(_forward(send, session, scope["method"], url, headers, body,
                                          deployment.id))
    gone = asyncio.ensure_future(_until_disconnect(receive))
    try:
        await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if not work.cancelled():
        work.result()  # its errors are ours
