"""Who may start, stop or call an engine: a bearer API key, or a signed-in browser.

A browser is signed in when its server-side session says so and its csrftoken cookie still
carries the token bound to that session at sign-in; its unsafe requests must send that same
token (X-CSRFToken, or the form field that the CSRF middleware below checks against the
cookie). A token the server signed for another visitor, or a cookie and header an attacker
set to equal values, is not the session's token. Keys and tokens are compared as bytes
(compare_digest refuses non-ASCII str), and wrong keys feed the throttle in app.state.
"""

from __future__ import annotations

import secrets
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import csrf

from advisor.web.throttle import Throttle

SAFE = {"GET", "HEAD", "OPTIONS"}


def _headers(scope: Any) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope["headers"]}


def _cookie(scope: Any, name: bytes) -> bytes:
    for part in _headers(scope).get(b"cookie", b"").split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value
    return b""


def _bearer(scope: Any) -> bytes:
    scheme, _sep, given = _headers(scope).get(b"authorization", b"").partition(b" ")
    return given.strip() if scheme.lower() == b"bearer" else b""


def client_of(scope: Any) -> str:
    """The caller's address as uvicorn reports it (behind a trusted proxy, the proxy's word)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def throttle_of(scope: Any) -> Throttle:
    return scope["app"].state.throttle  # type: ignore[no-any-return]


def key_matches(given: str | bytes, expected: str) -> bool:
    raw = given.encode("utf-8", "surrogatepass") if isinstance(given, str) else given
    return secrets.compare_digest(raw, expected.encode("utf-8", "surrogatepass"))


def _session_token(scope: Any) -> bytes | None:
    """The CSRF token of this browser's signed-in session, if its cookie still carries it."""
    session = scope.get("session")
    if not isinstance(session, dict) or not session.get("signed_in"):
        return None
    bound = session.get("csrf")
    if not isinstance(bound, str) or not bound:
        return None
    token = bound.encode()
    return token if secrets.compare_digest(_cookie(scope, b"csrftoken"), token) else None


def signed_in(scope: Any) -> bool:
    return _session_token(scope) is not None


def allowed(scope: Any, expected: str) -> bool:
    """Shared by the guard and the raw /v1 mount. While the caller is locked out for wrong
    keys, no key is tried, the right one included."""
    given = _bearer(scope)
    if given:
        throttle, client = throttle_of(scope), client_of(scope)
        if throttle.wait(client):
            return False
        if key_matches(given, expected):
            return True
        throttle.failed(client)
    token = _session_token(scope)
    if token is None:
        return False
    if scope.get("method", "GET") in SAFE:
        return True
    return secrets.compare_digest(_headers(scope).get(b"x-csrftoken", b""), token)


class CSRFMiddleware(csrf.CSRFMiddleware):
    """Litestar's, except that a non-ASCII token (header, form field or cookie) is a wrong
    token, 403, where Litestar's compare_digest raises TypeError (a 500)."""

    def _decode_csrf_token(self, token: str) -> str | None:
        return super()._decode_csrf_token(token) if token.isascii() else None


def new_csrf_cookie(config: CSRFConfig) -> tuple[str, Cookie]:
    """A fresh CSRF token, signed as the middleware signs its own, for the session that signs
    in now: a token planted in the browser before sign-in is not the one bound."""
    token = csrf.generate_csrf_token(config.secret)
    return token, Cookie(key=config.cookie_name, value=token, path=config.cookie_path,
                         secure=config.cookie_secure, httponly=config.cookie_httponly,
                         samesite=config.cookie_samesite, domain=config.cookie_domain)


def bearer_wait(scope: Any) -> int:
    """Seconds this caller stays locked out, as it stood before this try: the try that fails
    for the fifth time is answered as wrong (401), the ones after it as refused (429)."""
    return throttle_of(scope).wait(client_of(scope)) if _bearer(scope) else 0


def require_key(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    scope = connection.scope
    wait = bearer_wait(scope)
    if allowed(scope, connection.app.state.api_key):
        return
    if wait:
        raise TooManyRequestsException(
            f"Too many failed attempts with a wrong key: try again in {wait} s",
            headers={"Retry-After": str(wait)})
    raise NotAuthorizedException("an API key is required: Authorization: Bearer <key> "
                                 "(ADVISOR_API_KEY or the key file in ADVISOR_HOME), or sign in")
