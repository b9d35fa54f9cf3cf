"""The JSON API under ``/api/v1``: scans, objects (filtered, keyset-paged, exported), reviews, images."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from fakescan.api import images, overlay, queries
from fakescan.api.deps import FiltersDep, Limit, ReviewerDep, SessionDep, principal
from fakescan.db import listing, reviews
from fakescan.db.models import Scan, StoredObject
from fakescan.decode import DecodeError

router = APIRouter(prefix="/api/v1", dependencies=[Depends(principal)])
Sort = Annotated[queries.SortChoice, Query(description="score or time, '-' for descending")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]
EXPORT_FIELDS = ("object_id", "uri", "verdict", "score", "decided_at", "review")


@router.get("/scans", summary="scans, newest first, with counts and progress")
def list_scans(session: SessionDep, limit: Limit = 50,
               cursor: Annotated[int | None, Query(ge=1, description="next_cursor of the previous page")] = None,
               ) -> Any:
    return queries.scan_list(session, cursor, limit)


@router.get("/scans/{scan_id}", summary="one scan: progress (as `fakescan status --json`), verdicts, histograms")
def get_scan(request: Request, scan_id: int, session: SessionDep) -> Any:
    return queries.scan_detail(session, scan_id, request.app.state.policy_version)


@router.get("/objects", summary="objects with their combined verdict, filtered, one keyset page",
            response_class=JSONResponse)
def list_objects(request: Request, params: FiltersDep, session: SessionDep, sort: Sort = "-score",
                 cursor: Cursor = None, limit: Limit = 50) -> Response:
    page = queries.object_page(session, params, request.app.state.policy_version, sort, cursor, limit)
    # the hot path: plain json.dumps, about 2 ms less per page than FastAPI's generic encoder
    return Response(json.dumps(page, default=_iso), media_type="application/json")


@router.get("/objects/export", summary="every matching object, streamed as CSV or JSONL")
def export_objects(request: Request, params: FiltersDep,
                   format: Literal["csv", "jsonl"] = "jsonl") -> StreamingResponse:
    filters = params.to_filter(request.app.state.policy_version)
    if filters.scan_id is not None:  # an unknown scan is a 404 now, not a broken stream later
        with request.app.state.sessions() as session:
            if session.get(Scan, filters.scan_id) is None:
                raise LookupError(f"no scan with id {filters.scan_id}")
    rows = _stream(request.app.state.sessions, filters)
    body = _csv_lines(rows) if format == "csv" else (json.dumps(_plain(row)) + "\n" for row in rows)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(body, media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="fakescan-objects.{format}"'})


def _stream(session_factory: Any, filters: listing.ObjectFilter) -> Iterator[dict[str, Any]]:
    with session_factory() as session:
        yield from listing.iter_objects(session, filters)


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(_plain(row))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


def _iso(value: Any) -> str:
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {key: (row[key].isoformat() if hasattr(row[key], "isoformat") else row[key]) for key in EXPORT_FIELDS}


@router.get("/objects/{object_id}", summary="one object: every detector's row, evidence, combined verdict, reviews")
def get_object(request: Request, object_id: int, session: SessionDep) -> Any:
    return queries.object_detail(session, object_id, request.app.state.policy_version)


@router.get("/objects/{object_id}/thumbnail", summary="a JPEG at most `size` pixels on each side",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}, "image/png": {}}}})
def get_thumbnail(request: Request, object_id: int, session: SessionDep,
                  size: Annotated[int, Query(ge=16, le=2048)] = 256) -> Response:
    settings = request.app.state.settings
    edge = min(size, settings.api_thumbnail_edge)
    data = _read(request, session, object_id)
    try:
        return Response(images.thumbnail(data, edge, settings.max_image_pixels), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})
    except DecodeError as error:
        return Response(images.placeholder(edge), media_type="image/png", headers={"X-Fakescan-Error": str(error)})


@router.get("/objects/{object_id}/original", summary="the stored image, if it decodes",
            response_class=Response, responses={200: {"content": {"image/*": {}}}})
def get_original(request: Request, object_id: int, session: SessionDep) -> Response:
    data = _read(request, session, object_id)
    try:
        body, media = images.original(data, request.app.state.settings.max_image_pixels)
    except DecodeError as error:
        return Response(json.dumps({"detail": str(error)}), status_code=422, media_type="application/json")
    return Response(body, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                     "Content-Security-Policy": "default-src 'none'"})


def _read(request: Request, session: Session, object_id: int) -> bytes:
    stored = session.get(StoredObject, object_id)
    if stored is None:
        raise LookupError(f"no object with id {object_id}")
    try:
        return request.app.state.stores.read(stored.store, stored.key)
    except DecodeError as error:  # too large to fetch: the same reason the worker stored
        raise images.ObjectGone(str(error)) from None


@router.get("/objects/{object_id}/overlays/{detector}",
            summary="a detector's explanation overlays (Grad-CAM / attention), computed in a child process")
def get_overlays(request: Request, object_id: int, detector: str, session: SessionDep) -> Any:
    stored = session.get(StoredObject, object_id)
    if stored is None:
        raise LookupError(f"no object with id {object_id}")
    spec, version = queries.detector_spec(session, object_id, detector)
    folder = overlay.cache_folder(request.app.state.settings, object_id, detector, version)
    found = overlay.compute(request.app.state.settings, stored.uri, spec, folder)
    return {"detector": detector, "version": version,
            "overlays": {name: f"/api/v1/objects/{object_id}/overlays/{detector}/{name}.png" for name in found}}


@router.get("/objects/{object_id}/overlays/{detector}/{name}.png", response_class=FileResponse)
def get_overlay_png(request: Request, object_id: int, detector: str, name: str,
                    session: SessionDep) -> FileResponse:
    _, version = queries.detector_spec(session, object_id, detector)
    found = overlay.cached(overlay.cache_folder(request.app.state.settings, object_id, detector, version))
    if name not in found:
        raise overlay.OverlayUnavailable(f"no {name!r} overlay computed for object {object_id} and {detector}")
    return FileResponse(found[name], media_type="image/png")


class ReviewIn(BaseModel):
    object_id: int = Field(ge=1)
    decision: Literal["confirmed-fake", "confirmed-real", "unsure"]
    note: str | None = Field(None, max_length=2000)
    reviewer: str | None = Field(None, min_length=1, max_length=128, description="default: the token's name")


@router.post("/reviews", status_code=201, summary="record a moderator's decision (role reviewer)")
def post_review(review: ReviewIn, who: ReviewerDep, session: SessionDep) -> Any:
    stored = reviews.add_review(session, review.object_id, review.decision, review.reviewer or who.name, review.note)
    session.commit()
    return {"id": stored.id, "object_id": stored.object_id, "decision": stored.decision, "note": stored.note,
            "reviewer": stored.reviewer, "created_at": stored.created_at}


@router.get("/reviews", summary="reviews, newest first, filtered")
def list_reviews(session: SessionDep, object_id: Annotated[int | None, Query(ge=1)] = None,
                 scan: Annotated[int | None, Query(ge=1)] = None,
                 decision: Literal["confirmed-fake", "confirmed-real", "unsure"] | None = None,
                 reviewer: Annotated[str | None, Query(max_length=128)] = None,
                 latest: Annotated[bool, Query(description="only each object's latest decision")] = False,
                 cursor: Annotated[int | None, Query(ge=1)] = None, limit: Limit = 50) -> Any:
    query = reviews.ReviewQuery(object_id, scan, decision, reviewer, latest)
    items = reviews.page_reviews(session, query, cursor, limit + 1)
    return {"items": items[:limit], "next_cursor": str(items[limit - 1]["id"]) if len(items) > limit else None}
