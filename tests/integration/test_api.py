"""``fakescan serve``'s API over a really scanned bucket, on PostgreSQL and on SQLite.

The expectations come from the ORM rows read directly (an oracle independent of the listing SQL),
so each filter, sort and cursor walk is checked against what the database holds.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select

from fakescan.api.app import create_app
from fakescan.api.auth import Access, hash_token, parse_entry
from fakescan.db.engine import make_engine, make_sessionmaker
from fakescan.db.models import Result, ScanItem, StoredObject, Verdict
from fakescan.verdicts import load_policy
from tests import services
from tests.api_support import BRIGHT_IMAGES, SIGNED_KEY, scan_bucket
from tests.worker_support import CORRUPT_KINDS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def scanned(request, s3_service, postgres_service):
    home = Path(tempfile.mkdtemp(prefix="fakescan-api-"))
    if request.param == "postgresql":
        url = services.create_database(postgres_service.url, f"api_{uuid.uuid4().hex[:10]}")
    else:
        url = f"sqlite:///{home / 'fakescan.db'}"
    settings, fixture = scan_bucket(s3_service.url, url, home)
    return settings, fixture


@pytest.fixture
def client(scanned):
    settings, _ = scanned
    app = create_app(settings)
    with TestClient(app) as test_client:
        yield test_client
    app.state.engine.dispose()


def oracle(settings):
    """Every object as the database holds it: key, verdict, score, decided_at, results, scan membership."""
    engine = make_engine(settings)
    policy = load_policy(settings.verdict_policy).version
    try:
        with make_sessionmaker(engine)() as session:
            objects = {}
            for stored, verdict in session.execute(
                    select(StoredObject, Verdict).join(Verdict, Verdict.object_id == StoredObject.id)
                    .where(Verdict.policy_version == policy)):
                objects[stored.id] = {"key": stored.key, "uri": stored.uri, "verdict": verdict.verdict,
                                      "score": verdict.score, "decided_at": verdict.decided_at, "results": []}
            for result in session.scalars(select(Result)):
                objects[result.object_id]["results"].append(result)
            members = {row for row in session.scalars(select(ScanItem.object_id))}
    finally:
        engine.dispose()
    return objects, members


def walk(client, limit=4, **params):
    """Every page of /objects through the cursor; the items in the order served."""
    items, cursor, pages = [], None, 0
    while True:
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get("/api/v1/objects", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, pages
        assert len(body["items"]) == limit


def keys(items):
    return sorted(item["key"] for item in items)


def test_scans_list_and_one_scan(client, scanned):
    settings, fixture = scanned
    listed = client.get("/api/v1/scans").json()
    assert [scan["scan_id"] for scan in listed["items"]] == [fixture.scan_id]
    scan = client.get(f"/api/v1/scans/{fixture.scan_id}").json()
    total = len(fixture.keys)
    assert scan["state"] == "finished" and scan["enqueued"] == total and scan["queued"] == 0
    assert scan["done"] + scan["errors"] == total and scan["given_up"] == 0
    assert scan["errors"] == len(CORRUPT_KINDS)  # bad input: settled items with an error row
    objects, _ = oracle(settings)
    expected = {}
    for item in objects.values():
        expected[item["verdict"] or "none"] = expected.get(item["verdict"] or "none", 0) + 1
    assert scan["verdicts"] == expected
    assert scan["error_kinds"]["bright"] == {kind: 1 for kind in CORRUPT_KINDS.values()}
    assert sum(scan["histograms"]["bright"]) == BRIGHT_IMAGES + 1  # every image that decoded
    assert client.get("/api/v1/scans/999").status_code == 404


def test_every_filter_matches_the_database(client, scanned):
    settings, fixture = scanned
    objects, members = oracle(settings)

    def expect(predicate):
        return sorted(item["key"] for object_id, item in objects.items() if predicate(object_id, item))

    def bright(item):
        return next(r for r in item["results"] if r.detector == "bright")

    cases = {
        (("scan", fixture.scan_id),): lambda i, o: i in members,
        (("verdict", "fake"),): lambda i, o: o["verdict"] == "fake",
        (("verdict", "real"),): lambda i, o: o["verdict"] == "real",
        (("verdict", "uncertain"),): lambda i, o: o["verdict"] == "uncertain",
        (("verdict", "none"),): lambda i, o: o["verdict"] is None,
        (("min_score", 0.5), ("max_score", 0.8)):
            lambda i, o: o["score"] is not None and 0.5 <= o["score"] <= 0.8,
        (("detector", "bright"), ("min_score", 0.25), ("max_score", 0.6)):
            lambda i, o: bright(o).score is not None and 0.25 <= bright(o).score <= 0.6,
        (("detector", "provenance"), ("min_score", 0.9)):
            lambda i, o: any(r.detector == "provenance" and (r.score or 0) >= 0.9 for r in o["results"]),
        (("prefix", "light/"),): lambda i, o: o["key"].startswith("light/"),
        (("prefix", f"s3://{fixture.bucket}/bad/"),): lambda i, o: o["key"].startswith("bad/"),
        (("error_kind", "corrupt"),): lambda i, o: (bright(o).error or "").startswith("corrupt:"),
        (("error_kind", "not-an-image"), ("detector", "provenance")):
            lambda i, o: any(r.detector == "provenance" and (r.error or "").startswith("not-an-image:")
                             for r in o["results"]),
        (("scan", fixture.scan_id), ("verdict", "fake"), ("prefix", "light/")):
            lambda i, o: o["verdict"] == "fake" and o["key"].startswith("light/"),
    }
    for params, predicate in cases.items():
        served, _ = walk(client, **dict(params))
        assert keys(served) == expect(predicate), params
        assert keys(served), f"the fixture set has no object for {params}: the case tests nothing"


def test_cursor_walks_every_sort_without_duplicate_or_gap(client, scanned):
    settings, _ = scanned
    objects, _ = oracle(settings)
    for sort in ("-score", "score", "-time", "time"):
        served, pages = walk(client, limit=4, sort=sort)
        ids = [item["object_id"] for item in served]
        assert len(ids) == len(set(ids)) == len(objects), sort
        assert pages == -(-len(objects) // 4)
        if sort.endswith("score"):
            scored = [item for item in served if item["score"] is not None]
            assert all(item["score"] is None for item in served[len(scored):]), "unscored objects come last"
            assert len(served) > len(scored), "the walk crosses from scored to unscored objects"
            pairs = [(item["score"], item["object_id"]) for item in scored]
            assert pairs == sorted(pairs, reverse=sort.startswith("-")), sort
        else:
            pairs = [(item["decided_at"], item["object_id"]) for item in served]
            assert pairs == sorted(pairs, reverse=sort.startswith("-")), sort
    flagged, _ = walk(client, limit=2, verdict="fake")
    assert keys(flagged) == sorted(o["key"] for o in objects.values() if o["verdict"] == "fake")


def test_export_streams_the_same_rows_as_csv_and_jsonl(client, scanned):
    settings, _ = scanned
    objects, _ = oracle(settings)
    with client.stream("GET", "/api/v1/objects/export", params={"format": "jsonl", "verdict": "fake"}) as response:
        assert response.status_code == 200 and "content-length" not in response.headers  # chunked: a stream
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert sorted(row["uri"].split("/", 3)[3] for row in lines) == sorted(
        o["key"] for o in objects.values() if o["verdict"] == "fake")
    response = client.get("/api/v1/objects/export", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert response.headers["content-type"].startswith("text/csv")
    assert sorted(int(row["object_id"]) for row in rows) == sorted(objects)
    assert client.get("/api/v1/objects/export", params={"format": "xml"}).status_code == 422


def test_one_object_has_every_detector_row_evidence_and_explanation(client, scanned):
    settings, _ = scanned
    objects, _ = oracle(settings)
    signed = next(i for i, o in objects.items() if o["key"] == SIGNED_KEY)
    body = client.get(f"/api/v1/objects/{signed}").json()
    assert {row["detector"] for row in body["results"]} == {"provenance", "bright"}
    provenance = next(row for row in body["results"] if row["detector"] == "provenance")
    assert provenance["evidence"]["finding"] == "c2pa-ai"
    assert "C2PA: fakescan test signer, trainedAlgorithmicMedia" in body["badges"]
    assert body["combined"]["verdict"] == "fake" and body["combined"]["explanation"]["rule"] == "provenance"
    assert body["combined"]["explain"][0].startswith("verified provenance")
    assert client.get("/api/v1/objects/987654").status_code == 404


def test_images_through_the_service(client, scanned):
    settings, fixture = scanned
    objects, _ = oracle(settings)
    by_key = {o["key"]: i for i, o in objects.items()}
    light = by_key["light/img20.png"]
    response = client.get(f"/api/v1/objects/{light}/thumbnail", params={"size": 16})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) <= 16
    assert client.get(f"/api/v1/objects/{light}/thumbnail", params={"size": 99999}).status_code == 422
    original = client.get(f"/api/v1/objects/{light}/original")
    assert original.content == fixture.keys["light/img20.png"] and original.headers["content-type"] == "image/png"
    for key, kind in CORRUPT_KINDS.items():
        broken = client.get(f"/api/v1/objects/{by_key[key]}/thumbnail")
        assert broken.status_code == 200 and broken.headers["x-fakescan-error"].startswith(kind + ":"), key
        assert Image.open(io.BytesIO(broken.content)).format == "PNG"  # the placeholder
        assert client.get(f"/api/v1/objects/{by_key[key]}/original").status_code == 422


def test_an_object_gone_from_s3_is_a_404_with_a_reason(client, scanned):
    settings, fixture = scanned
    objects, _ = oracle(settings)
    key = "dark/img03.png"
    boto3.client("s3", endpoint_url=settings.s3_endpoint_url).delete_object(Bucket=fixture.bucket, Key=key)
    object_id = next(i for i, o in objects.items() if o["key"] == key)
    for path in ("thumbnail", "original"):
        response = client.get(f"/api/v1/objects/{object_id}/{path}")
        assert response.status_code == 404
        assert response.json()["detail"] == f"{key!r} is no longer in s3://{fixture.bucket}"
    assert client.get(f"/api/v1/objects/{object_id}").status_code == 200  # its results stay


def test_reviews_are_kept_and_filter_objects(client, scanned):
    settings, fixture = scanned
    objects, _ = oracle(settings)
    by_key = {o["key"]: i for i, o in objects.items()}
    first, second = by_key["light/img23.png"], by_key["dark/img00.png"]
    for object_id, decision, who in ((first, "unsure", "ann"), (first, "confirmed-real", "bob"),
                                     (second, "confirmed-fake", "ann")):
        response = client.post("/api/v1/reviews", json={"object_id": object_id, "decision": decision,
                                                        "reviewer": who, "note": f"{who} says {decision}"})
        assert response.status_code == 201, response.text
    history = client.get("/api/v1/reviews", params={"object_id": first}).json()["items"]
    assert [r["decision"] for r in history] == ["confirmed-real", "unsure"]  # newest first, history kept
    assert [r["object_id"] for r in client.get("/api/v1/reviews", params={"reviewer": "ann"}).json()["items"]] \
        == [second, first]
    latest = client.get("/api/v1/reviews", params={"latest": True, "scan": fixture.scan_id}).json()["items"]
    assert {(r["object_id"], r["decision"]) for r in latest} == {(first, "confirmed-real"), (second, "confirmed-fake")}
    assert keys(walk(client, review="confirmed-real")[0]) == ["light/img23.png"]
    assert keys(walk(client, review="reviewed")[0]) == ["dark/img00.png", "light/img23.png"]
    assert len(walk(client, review="unreviewed")[0]) == len(objects) - 2
    assert keys(walk(client, review="unsure")[0]) == []  # the latest decision counts
    assert client.get(f"/api/v1/objects/{first}").json()["review"] == "confirmed-real"
    assert client.post("/api/v1/reviews", json={"object_id": 987654, "decision": "unsure"}).status_code == 404
    bad = client.post("/api/v1/reviews", json={"object_id": first, "decision": "probably-fake"})
    assert bad.status_code == 422 and "\n" not in bad.json()["detail"]


@pytest.mark.parametrize("params, names", [
    ({"verdict": "maybe"}, "verdict"), ({"sort": "size"}, "sort"), ({"min_score": 1.5}, "min_score"),
    ({"max_score": -0.1}, "max_score"), ({"min_score": 0.8, "max_score": 0.2}, "min_score"),
    ({"limit": 0}, "limit"), ({"limit": 1000}, "limit"), ({"cursor": "not-a-cursor"}, "cursor"),
    ({"error_kind": "DROP TABLE"}, "error_kind"), ({"scan": 0}, "scan"), ({"review": "liked"}, "review"),
    ({"scan": 424242}, "scan"),
])
def test_bad_parameters_are_a_422_with_one_line(client, params, names):
    response = client.get("/api/v1/objects", params=params)
    assert response.status_code == 422, params
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and names in detail, detail


def test_a_cursor_of_another_sort_is_refused(client):
    cursor = client.get("/api/v1/objects", params={"limit": 2, "sort": "time"}).json()["next_cursor"]
    response = client.get("/api/v1/objects", params={"limit": 2, "sort": "-score", "cursor": cursor})
    assert response.status_code == 422 and "sort=time" in response.json()["detail"]


def test_tokens_roles_401_and_403(scanned, tmp_path):
    settings, _ = scanned
    access = Access((parse_entry("test", "viewer:vera:view-secret"),
                     parse_entry("test", f"reviewer:rex:{hash_token('review-secret')}")))
    app = create_app(settings, access)
    with TestClient(app) as anonymous:
        assert anonymous.get("/api/v1/objects").status_code == 401
        assert anonymous.get("/api/v1/objects").headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/api/v1/objects", headers={"Authorization": "Bearer wrong"}).status_code == 401
        viewer = {"Authorization": "Bearer view-secret"}
        reviewer = {"Authorization": "Bearer review-secret"}
        assert anonymous.get("/api/v1/objects", headers=viewer).status_code == 200
        body = {"object_id": 1, "decision": "unsure"}
        assert anonymous.post("/api/v1/reviews", json=body).status_code == 401
        assert anonymous.post("/api/v1/reviews", json=body, headers=viewer).status_code == 403
        posted = anonymous.post("/api/v1/reviews", json=body, headers=reviewer)
        assert posted.status_code == 201 and posted.json()["reviewer"] == "rex"
        page = anonymous.get("/gallery", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert anonymous.post("/login", data={"token": "nope", "next": "/gallery"}).status_code == 401
        login = anonymous.post("/login", data={"token": "view-secret", "next": "//evil.example/"},
                               follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"  # no open redirect
        assert anonymous.get("/gallery").status_code == 200  # the cookie now carries the token
        assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/readyz").json() == {"status": "ready"}
    app.state.engine.dispose()


def test_no_response_reveals_urls_credentials_or_traces(scanned, monkeypatch):
    settings, _ = scanned
    app = create_app(settings)
    client = TestClient(app, raise_server_exceptions=False)  # what a real server sends, not the exception
    from sqlalchemy.exc import OperationalError

    from fakescan.api import queries

    secret = settings.resolved_database_url()

    def broken(*_args, **_kwargs):
        raise RuntimeError(f"boom at {secret} with aws_secret_access_key=testing")

    def down(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception(f"connection to {secret} refused"))

    monkeypatch.setattr(queries, "scan_list", broken)
    response = client.get("/api/v1/scans")
    assert response.status_code == 500 and response.json() == {"detail": "internal error"}
    monkeypatch.setattr(queries, "scan_list", down)
    response = client.get("/api/v1/scans")
    assert response.status_code == 503 and secret not in response.text and "Traceback" not in response.text
    for path in ("/openapi.json", "/api/v1/scans/1", "/api/v1/objects?limit=200", "/readyz"):
        text = client.get(path).text
        assert secret not in text and "testing" not in text and "Traceback" not in text, path
    app.state.engine.dispose()


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/v1/objects", "/api/v1/objects/export", "/api/v1/reviews", "/api/v1/scans/{scan_id}"} <= set(
        schema["paths"])
    assert client.get("/docs").status_code == 200


def test_calibrate_from_reviews_uses_the_confirmed_labels(client, scanned, tmp_path, monkeypatch, capsys):
    settings, fixture = scanned
    objects, _ = oracle(settings)
    by_key = {o["key"]: i for i, o in objects.items()}
    labelled = {f"dark/img{n:02d}.png": "confirmed-real" for n in (1, 2, 4, 5, 6)}
    labelled.update({f"light/img{n:02d}.png": "confirmed-fake" for n in (14, 15, 16, 17)})
    labelled["light/img13.png"] = "unsure"  # teaches nothing: left out
    for key, decision in labelled.items():
        assert client.post("/api/v1/reviews", json={"object_id": by_key[key], "decision": decision}).status_code == 201
    monkeypatch.setenv("FAKESCAN_DATABASE_URL", settings.resolved_database_url())
    monkeypatch.setenv("FAKESCAN_S3_ENDPOINT_URL", settings.s3_endpoint_url)
    monkeypatch.setenv("FAKESCAN_HOME", str(settings.home))
    from fakescan.cli import main

    folder = settings.home / "detectors" / "bright"
    out = tmp_path / "calibrated"
    assert main(["calibrate", str(folder), "--from-reviews", "--scan", str(fixture.scan_id), "--target-fpr", "0",
                 "--out", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    manifest = json.loads((out / "fakescan.json").read_text())
    calibration = manifest["calibration"]
    assert calibration["data"] == f"reviews of scan {fixture.scan_id}"
    # every object whose latest review confirms a label, including those reviewed by the earlier tests
    latest = {r["object_id"]: r["decision"] for r in client.get(
        "/api/v1/reviews", params={"latest": True, "limit": 200}).json()["items"]}
    metrics = calibration["metrics"]
    assert calibration["errors"] == 0
    assert metrics["n_real"] == sum(d == "confirmed-real" for d in latest.values()) >= 5
    assert metrics["n_fake"] == sum(d == "confirmed-fake" for d in latest.values()) >= 4
    assert printed["false_positive_rate"] == 0.0
    assert main(["calibrate", str(folder), "--target-fpr", "0"]) == 2  # neither DATA nor --from-reviews
    assert main(["calibrate", str(folder), str(tmp_path), "--scan", "1", "--target-fpr", "0"]) == 2
    assert "--from-reviews" in capsys.readouterr().err
