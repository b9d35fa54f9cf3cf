"""The review page: server-rendered HTML (Jinja2) over the same queries as the JSON API.

Pages read what the API returns; the little JavaScript in ``static/app.js`` loads the next gallery
page through the cursor as the moderator scrolls and posts reviews on a key press. A browser
cannot put a bearer token on an ``<img>`` request, so ``/login`` keeps the token in an HttpOnly,
SameSite=Strict cookie that the API accepts like the header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from fakescan.api import queries
from fakescan.api.auth import COOKIE, Principal
from fakescan.api.deps import FiltersDep, Limit, SessionDep, presented_token
from fakescan.db import scans

HERE = Path(__file__).parent
STATIC = HERE / "static"
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
PAGES = APIRouter(include_in_schema=False)
GALLERY_PAGE = 48
REVIEW_KEYS = {"f": "confirmed-fake", "r": "confirmed-real", "u": "unsure"}


class LoginRequired(Exception):
    pass


def page_principal(request: Request) -> Principal:
    found = request.app.state.access.authenticate(presented_token(request))
    if found is None:
        raise LoginRequired()
    return found


PageWho = Annotated[Principal, Depends(page_principal)]


def _render(request: Request, template: str, who: Principal, **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, template, {"who": who, "open_access": request.app.state.access.open,
                                                          "review_keys": REVIEW_KEYS, **context})


@PAGES.get("/", response_class=HTMLResponse)
def scans_page(request: Request, who: PageWho, session: SessionDep) -> HTMLResponse:
    return _render(request, "scans.html", who, scans=queries.scan_list(session, None, 100)["items"])


@PAGES.get("/scans/{scan_id}", response_class=HTMLResponse)
def scan_page(request: Request, scan_id: int, who: PageWho, session: SessionDep) -> HTMLResponse:
    detail = queries.scan_detail(session, scan_id, request.app.state.policy_version)
    plots = {detector: histogram_svg(counts) for detector, counts in sorted(detail["histograms"].items())}
    return _render(request, "scan.html", who, scan=detail, plots=plots)


@PAGES.get("/gallery", response_class=HTMLResponse)
def gallery_page(request: Request, params: FiltersDep, who: PageWho, session: SessionDep,
                 sort: queries.SortChoice = "-score", limit: Limit = GALLERY_PAGE) -> HTMLResponse:
    if not request.query_params:  # a first visit: the latest scan's flagged objects
        params = queries.ObjectParams(scan=scans.latest_scan_id(session), verdict="fake")
    page = queries.object_page(session, params, request.app.state.policy_version, sort, None, limit)
    filters = {key: value for key, value in params.__dict__.items() if value is not None}
    return _render(request, "gallery.html", who, page=page, filters=filters, sort=sort,
                   api_query=urlencode({**filters, "sort": sort, "limit": limit}))


@PAGES.get("/gallery/more", response_class=HTMLResponse)
def gallery_more(request: Request, params: FiltersDep, who: PageWho, session: SessionDep,
                 cursor: Annotated[str, Query(max_length=512)], sort: queries.SortChoice = "-score",
                 limit: Limit = GALLERY_PAGE) -> HTMLResponse:
    """The next page of gallery cards as HTML (infinite scroll); its cursor in ``X-Next-Cursor``."""
    page = queries.object_page(session, params, request.app.state.policy_version, sort, cursor, limit)
    cards = "".join(TEMPLATES.get_template("_card.html").render(item=item) for item in page["items"])
    return HTMLResponse(cards, headers={"X-Next-Cursor": page["next_cursor"] or ""})


@PAGES.get("/objects/{object_id}", response_class=HTMLResponse)
def object_page(request: Request, object_id: int, who: PageWho, session: SessionDep) -> HTMLResponse:
    detail = queries.object_detail(session, object_id, request.app.state.policy_version)
    return _render(request, "object.html", who, obj=detail)


@PAGES.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "login.html", {"next": _local(next), "failed": False})


@PAGES.post("/login")
def login(request: Request, token: Annotated[str, Form(max_length=512)],
          next: Annotated[str, Form()] = "/") -> Response:
    if request.app.state.access.authenticate(token) is None:
        return TEMPLATES.TemplateResponse(request, "login.html", {"next": _local(next), "failed": True},
                                          status_code=401)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


async def drop_empty_filters(request: Request, call_next: Any) -> Response:
    """A submitted filter form sends blank fields as ``name=``; on the pages they mean "no filter"."""
    if request.url.path.startswith("/gallery") and request.url.query:
        kept = [(name, value) for name, value in request.query_params.multi_items() if value != ""]
        request.scope["query_string"] = urlencode(kept).encode()
    return await call_next(request)


def _local(target: str) -> str:
    """Only paths of this site after login (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def histogram_svg(counts: list[int], width: int = 400, height: int = 120) -> dict[str, Any]:
    """Bars of a score histogram as SVG rectangles (x, y, w, h, count, range) for the template."""
    top = max(counts) or 1
    step = width / len(counts)
    bars = []
    for index, count in enumerate(counts):
        bar_height = round(count / top * (height - 4), 1)
        bars.append({"x": round(index * step, 1), "y": round(height - bar_height, 1), "w": round(step - 1, 1),
                     "h": bar_height, "count": count,
                     "range": f"{index / len(counts):.2f}-{(index + 1) / len(counts):.2f}"})
    return {"width": width, "height": height, "bars": bars, "total": sum(counts)}
