"""The browser's session cookie: an id for a session kept server-side, and `Secure` on every
cookie of a request that came over https.

Sessions live in a Litestar FileStore under `ADVISOR_HOME/sessions` (0700; each file 0600),
so they survive a restart and end for good at sign-out: the cookie is only an id, and a
copied cookie replays nothing once its session is deleted. Unlike Litestar's own
server-side backend this one writes nothing for an anonymous visitor (no file per request
for anyone who can reach the port), and a session that signs in gets a new id, so an id
planted in the browser beforehand is never the one signed in.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import SerializationException
from litestar.middleware import DefineMiddleware
from litestar.middleware.session import SessionMiddleware
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.stores.file import FileStore
from litestar.types import ASGIApp, Message, Receive, Scope, ScopeSession, Send

from advisor.errors import AdvisorError

COOKIE = "advisor-session"
MAX_AGE = 7 * 24 * 3600
_LOADED = "advisor.session_loaded"  # scope key: (the id whose session was found, its data then)


class Sessions(ServerSideSessionBackend):
    def __init__(self, config: ServerSideSessionConfig, store: FileStore) -> None:
        super().__init__(config=config)
        self.store = store

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        session_id = connection.cookies.get(self.config.key)
        data: dict[str, Any] = {}
        if session_id:
            try:
                raw = await self.get(session_id, store=self.store)
                data = self.deserialize_data(raw) if raw is not None else {}
            except (SerializationException, ValueError):  # a damaged file is no session
                data = {}
        connection.scope[_LOADED] = (session_id if data else None, dict(data))  # type: ignore[literal-required]
        return data

    def _cookie(self, value: str, max_age: int) -> str:
        c = self.config
        return Cookie(key=c.key, value=value, max_age=max_age, path=c.path, domain=c.domain,
                      secure=c.secure, httponly=c.httponly, samesite=c.samesite).to_header(header="")

    async def store_in_message(self, scope_session: ScopeSession, message: Message,
                               connection: ASGIConnection[Any, Any, Any, Any]) -> None:
        loaded: tuple[str | None, dict[str, Any]] = connection.scope.get(_LOADED) or (None, {})  # type: ignore[assignment]
        known, before = loaded
        # this app's sessions are plain dicts (set_session also takes structs: not used here)
        session = dict(scope_session) if isinstance(scope_session, dict) else {}
        headers = MutableScopeHeaders.from_message(message)
        if not session:
            if known:
                await self.delete(known, store=self.store)
            if connection.cookies.get(self.config.key):
                headers.add("Set-Cookie", self._cookie("null", 0))
            return
        if known and session == before:
            return  # nothing changed: the browser keeps its cookie, the store its file
        if known:
            session_id = known
        else:
            session_id = self.generate_session_id()
            # tidy up now and then: sessions start only at sign-in (a damaged file stays)
            with contextlib.suppress(OSError, ValueError):
                await self.store.delete_expired()
        await self.set(session_id, self.serialize_data(session, connection.scope), store=self.store)
        headers.add("Set-Cookie", self._cookie(session_id, self.config.max_age))


def session_middleware(home: Path) -> DefineMiddleware:
    folder = home / "sessions"
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode passes through the umask, and the folder may be older
    except OSError as exc:
        raise AdvisorError(f"cannot make the sessions folder {folder}: {exc.strerror or exc}; "
                           "ADVISOR_HOME must be a folder this user can write") from None
    config = ServerSideSessionConfig(key=COOKIE, samesite="strict", httponly=True, max_age=MAX_AGE)
    return DefineMiddleware(SessionMiddleware, backend=Sessions(config, FileStore(folder)))


def _secure(value: bytes) -> bytes:
    attributes = {part.strip().split(b"=", 1)[0].lower() for part in value.split(b";")[1:]}
    return value if b"secure" in attributes else value + b"; Secure"


def secure_cookies(app: ASGIApp) -> ASGIApp:
    """Middleware: `Secure` on the cookies of an https request. uvicorn sets the scheme from
    X-Forwarded-Proto when a trusted proxy (FORWARDED_ALLOW_IPS, 127.0.0.1 by default) sends
    it; over plain http the flag would make the browser drop the cookies."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("scheme") != "https":
            await app(scope, receive, send)
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [(k, _secure(v) if k.lower() == b"set-cookie" else v)
                                      for k, v in message.get("headers", [])]
            await send(message)

        await app(scope, receive, send_secure)

    return middleware
