"""Who may start, stop or call an engine: a bearer API key, or a signed-in browser whose
unsafe requests carry the CSRF token (double-submit: header equal to the csrftoken cookie)."""

from __future__ import annotations

import secrets
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

SAFE = {"GET", "HEAD", "OPTIONS"}


def allowed(scope: Any, expected: str) -> bool:
    """Shared by the guard and the raw /v1 mount."""
    headers = {k: v for k, v in scope["headers"]}
    scheme, _sep, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and given and secrets.compare_digest(given.strip(), expected):
        return True
    session = scope.get("session")
    if not isinstance(session, dict) or not session.get("signed_in"):
        return False
    if scope.get("method", "GET") in SAFE:
        return True
    cookies = dict(part.strip().split("=", 1) for part in
                   headers.get(b"cookie", b"").decode("latin-1").split(";") if "=" in part)
    token = headers.get(b"x-csrftoken", b"").decode("latin-1")
    return bool(token) and secrets.compare_digest(token, cookies.get("csrftoken", ""))


def require_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if not allowed(connection.scope, connection.app.state.api_key):
        raise NotAuthorizedException("an API key is required: Authorization: Bearer <key> "
                                     "(ADVISOR_API_KEY or the key file in ADVISOR_HOME), or sign in")
