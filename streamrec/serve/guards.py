"""What a request must pass before the service reads its body, and what every answer carries.

FastAPI reads and parses a JSON body before it runs a route's dependencies, so without this an
unauthenticated `PUT /live` of 162 MB was read in full (+340 MB in the worker, 0.9 s) only to be
answered 401. `Guard` is a plain ASGI middleware in front of the app: it answers an admin route
without a valid token at once, a declared Content-Length over the limit with 413 at once, a body
sent without one (chunked) with 413 as soon as the bytes read pass the limit, and a request
target (path and query) over MAX_TARGET_BYTES with 414.

It also answers HEAD wherever GET answers (load balancers health-check with HEAD; FastAPI routes
declare GET only), and adds `X-Content-Type-Options: nosniff` to every answer and
`Cache-Control: no-store` to the admin routes' answers.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable

from fastapi import HTTPException

OFF = {
    "admin": "admin endpoints are off: set ADMIN_TOKEN to enable them",
    "ingest": "POST /events is off: set INGEST_TOKEN to enable it",
}


def admin_refusal(token: str, authorization: str | None, kind: str = "admin") -> tuple[int, str] | None:
    """Why a request to an admin endpoint (`kind` "ingest": to POST /events) is refused, as
    (status, detail), or None when its `Authorization` header carries `token`."""
    if not token:
        return 404, OFF[kind]
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return 401, f"expected 'Authorization: Bearer <{kind} token>'"
    if not secrets.compare_digest(credentials.strip().encode(), token.encode()):
        return 403, f"wrong {kind} token"
    return None


def refusal_headers(status: int) -> dict[str, str]:
    return {"WWW-Authenticate": "Bearer"} if status == 401 else {}


MAX_TARGET_BYTES = 16 * 1024  # path and query of one request; h11's limit for a whole head is 16 KiB too
NOSNIFF = (b"x-content-type-options", b"nosniff")
NO_STORE = (b"cache-control", b"no-store")


def too_large(limit: int, found: str) -> str:
    return f"request body too large: expected at most {limit:,} bytes (MAX_BODY_BYTES); found {found}"


class Guard:
    """ASGI middleware: `admin` is the set of (method, path) of the admin routes, `ingest` of the
    routes of the ingest token; `token`, `ingest_token` and `limit` are read per request
    (functions), so that tests and reloads see the settings."""

    def __init__(
        self,
        app,
        admin: set[tuple[str, str]],
        token: Callable[[], str],
        limit: Callable[[], int],
        ingest: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
        ingest_token: Callable[[], str] = lambda: "",
    ):
        self.app, self.admin, self.token, self.limit = app, admin, token, limit
        self.ingest, self.ingest_token = ingest, ingest_token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        target = len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"])
        if target > MAX_TARGET_BYTES:
            expected = f"expected at most {MAX_TARGET_BYTES:,} bytes of path and query"
            return await _respond(send, 414, f"request target too long: {expected}; found {target:,}")
        head = scope["method"] == "HEAD"
        if head:  # a copy: the server keeps its own scope, and so still sends no body
            scope = {**scope, "method": "GET"}
        route = (scope["method"], scope["path"])
        admin = route in self.admin
        if admin:
            refusal = admin_refusal(self.token(), _header(scope, b"authorization"))
            if refusal is not None:
                return await _respond(send, *refusal)
        elif route in self.ingest:
            refusal = admin_refusal(self.ingest_token(), _header(scope, b"authorization"), "ingest")
            if refusal is not None:
                return await _respond(send, *refusal)
        extra = (NOSNIFF, NO_STORE) if admin else (NOSNIFF,)

        async def secured(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif head and message["type"] == "http.response.body" and message.get("body"):
                message = {**message, "body": b""}
            await send(message)

        limit = self.limit()
        declared = _header(scope, b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > limit:
                return await _respond(send, 413, too_large(limit, f"a Content-Length of {int(declared):,}"))
            return await self.app(scope, receive, secured)
        # No declared length: count what is read, and stop at the limit.
        read = 0

        async def counted():
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise HTTPException(413, too_large(limit, f"more than {limit:,} bytes sent without a length"))
            return message

        return await self.app(scope, counted, secured)


def _header(scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _respond(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), NOSNIFF, NO_STORE]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal_headers(status).items()]
    if status in (413, 414):
        headers.append((b"connection", b"close"))  # the unread body is not worth reading to keep the connection
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
