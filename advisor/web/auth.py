"""The API key guard: anything that starts a process, stops one or calls an engine needs it."""

from __future__ import annotations

import secrets
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler


def require_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    expected: str = connection.app.state.api_key
    header = connection.headers.get("authorization", "")
    scheme, _sep, given = header.partition(" ")
    if scheme.lower() == "bearer" and given and secrets.compare_digest(given.strip(), expected):
        return
    raise NotAuthorizedException("an API key is required: Authorization: Bearer <key> "
                                 "(ADVISOR_API_KEY or the key file in ADVISOR_HOME)")
