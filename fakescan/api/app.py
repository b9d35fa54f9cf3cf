"""The ASGI application of ``fakescan serve``: built from settings by :func:`create_app`, never at import.

Errors leave as one JSON line: a bad parameter is 422 with the parameter and the reason, a
missing scan/object/image 404 with the reason, an unreachable database 503; anything unexpected
is logged here and answered with a bare 500, so no response carries a database URL, a credential
or a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from fakescan.api import routes
from fakescan.api.auth import Access, load_access
from fakescan.api.images import Stores
from fakescan.api.pages import PAGES, STATIC, LoginRequired, drop_empty_filters
from fakescan.db.database import Database
from fakescan.db.migrate import SchemaOutOfDate
from fakescan.errors import UsageError
from fakescan.settings import Settings
from fakescan.verdicts import load_policy

log = logging.getLogger("fakescan.api")


def create_app(settings: Settings, access: Access | None = None) -> FastAPI:
    database = Database.connect(settings)
    app = FastAPI(title="fakescan", version="1", description="Verdicts of fakescan's scans, and moderators' reviews.",
                  openapi_url="/openapi.json", docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.database = database
    app.state.engine = database.engine
    app.state.sessions = database.sessions
    app.state.access = access if access is not None else load_access(settings)
    app.state.policy_version = load_policy(settings.verdict_policy).version
    app.state.stores = Stores(settings)
    app.include_router(routes.router)
    app.include_router(PAGES)
    app.middleware("http")(drop_empty_filters)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_api_route("/healthz", lambda: {"status": "ok"}, include_in_schema=False)
    app.add_api_route("/readyz", ready, include_in_schema=False)
    _error_handlers(app)
    return app


def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers and its schema is the one this fakescan needs."""
    try:
        request.app.state.database.check_ready()
    except (SQLAlchemyError, SchemaOutOfDate) as error:
        log.warning("not ready: %s", error)
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_first(request: Request, _: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": one_line_reason(error.errors())}, status_code=422)

    @app.exception_handler(UsageError)
    async def usage(_: Request, error: UsageError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(error))}, status_code=422)

    @app.exception_handler(LookupError)
    async def missing(_: Request, error: LookupError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(str(error.args[0]) if error.args else "not found")}, status_code=404)

    @app.exception_handler(OperationalError)
    async def database_down(_: Request, error: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", error.orig or error)
        return JSONResponse({"detail": "the results database is unavailable"}, status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)


def one_line_reason(errors: Any) -> str:
    first: dict[str, Any] = next(iter(errors), {})
    where = [str(part) for part in first.get("loc", ()) if part not in ("query", "body", "path")]
    name = ".".join(where) or "request"
    return _one_line(f"{name}: {first.get('msg', 'invalid value')}")


def _one_line(text_: str) -> str:
    return " ".join(text_.split())
