"""Request dependencies: a database session, the caller's identity, the object filters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request
from sqlalchemy.orm import Session

from fakescan.api.auth import COOKIE, Principal
from fakescan.api.queries import MAX_PAGE, ObjectParams, ReviewState, VerdictChoice


def sessions(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.cookies.get(COOKIE)


def principal(request: Request) -> Principal:
    found = request.app.state.access.authenticate(presented_token(request))
    if found is None:
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return found


def reviewer(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.may_review:
        raise HTTPException(403, f"token {who.name!r} has role {who.role}; recording a review needs role reviewer")
    return who


def object_params(
    scan: Annotated[int | None, Query(ge=1, description="objects this scan enqueued")] = None,
    verdict: Annotated[VerdictChoice | None, Query(description="combined verdict; none: nothing judged it")] = None,
    detector: Annotated[str | None, Query(min_length=1, max_length=128, description="has a result of it")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="detector's score, else combined")] = None,
    max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    prefix: Annotated[str | None, Query(min_length=1, max_length=2048, description="key prefix or URI prefix")] = None,
    error_kind: Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$",
                                            description="a result failed with this kind: corrupt, empty ...")] = None,
    review: Annotated[ReviewState | None, Query(description="latest review decision, reviewed or unreviewed")] = None,
) -> ObjectParams:
    return ObjectParams(scan, verdict, detector, min_score, max_score, prefix, error_kind, review)


SessionDep = Annotated[Session, Depends(sessions)]
FiltersDep = Annotated[ObjectParams, Depends(object_params)]
ReviewerDep = Annotated[Principal, Depends(reviewer)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
