"""The annotation web app (FastAPI): plain HTML pages with their own scripts, and a JSON API.

Security in one place: every API call but login needs a session cookie (HttpOnly, SameSite=Lax);
every state-changing call needs the session's CSRF token in ``X-CSRF-Token`` (login uses a
double-submit cookie); annotators reach only their own assignments and the images of tasks handed
to them; admin calls need the admin role (see :mod:`.auth`); images are served by id from paths
fixed at import, never from a path in the URL; a Content-Security-Policy allows only this site's
own scripts; request bodies are capped. Routes: :mod:`.routes` (annotators), :mod:`.admin_routes`.
"""

from __future__ import annotations

import math
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from reliable_ad.annotation import admin_routes, queue, routes, security
from reliable_ad.annotation.auth import SESSION_COOKIE, SessionCache  # noqa: F401 - re-exported
from reliable_ad.annotation.config import AnnotationConfig
from reliable_ad.annotation.db import Database

STATIC = Path(__file__).with_name("static")
MAX_BODY = 64 * 1024  # bytes of a JSON request; every legitimate one is far smaller
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class _Guard:
    """ASGI middleware: security headers on every response, no caching of pages and API answers,
    and a size limit on request bodies (declared or streamed)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            response = JSONResponse({"detail": f"request body over {MAX_BODY} bytes"}, status_code=413)
            return await response(scope, receive, send)
        cache = b"private, max-age=86400" if scope["path"].startswith(("/media/", "/static/")) else b"no-store"
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, f"request body over {MAX_BODY} bytes")
            return message

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"cache-control"]
                message["headers"] = headers + _SECURITY_HEADERS + [(b"cache-control", cache)]
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)


def _error(status: int):
    return lambda request, exc: JSONResponse({"detail": str(exc)}, status_code=status)


def _json_safe(value):
    """``value`` with what JSON cannot carry written out as text: NaN and infinities (``1e999`` in
    a request) and lone surrogates (``"\\ud800"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _invalid_request(request, exc: RequestValidationError) -> JSONResponse:
    """422 with what is wrong where, as FastAPI answers, also when the bad value cannot be written as
    JSON (FastAPI's own answer would then fail to render). A bad value is echoed, a whole body (a
    missing field's "input", which may hold a password) is not."""
    errors = [{k: v for k, v in e.items() if k != "input" or not isinstance(v, (dict, list, tuple))}
              for e in exc.errors()]
    return JSONResponse({"detail": _json_safe(jsonable_encoder(errors))}, status_code=422)


def create_app(config: AnnotationConfig | None = None, db: Database | None = None) -> FastAPI:
    """The app for one database (``db``, or the one ``config.db`` names)."""
    config = config or AnnotationConfig()
    app = FastAPI(title="reliable-ad annotation", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.config = config
    app.state.db = db or Database(config.db)
    app.state.sessions = SessionCache()
    app.state.throttle = security.LoginThrottle(config.login_attempts, per_address=config.login_attempts_per_address)
    app.add_middleware(_Guard)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(queue.NotFound, _error(404))
    app.add_exception_handler(queue.Conflict, _error(409))
    app.add_exception_handler(PermissionError, _error(403))
    app.add_exception_handler(ValueError, _error(422))
    app.include_router(routes.router)
    app.include_router(admin_routes.router)
    return app
