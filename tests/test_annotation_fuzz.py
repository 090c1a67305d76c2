"""Fuzzing the annotation app: every route (found from the app itself, so a new route is fuzzed
too) gets random ids, query strings and JSON bodies (nested JSON, huge numbers, any Unicode, nulls,
malformed JSON) from an admin, an annotator and an anonymous client, with and without the CSRF
token. No answer may be a server error, and every error is a short JSON or HTML message, never a
traceback. On SQLite, and on PostgreSQL when RELIABLE_AD_TEST_POSTGRES_URL names a server."""

from __future__ import annotations

import json
import os
import typing
from urllib.parse import quote, urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("hypothesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sqlalchemy import select  # noqa: E402

from annotation_helpers import Annotator, app_routes, make_run, postgres_db  # noqa: E402
from reliable_ad.annotation import security  # noqa: E402
from reliable_ad.annotation.app import create_app  # noqa: E402
from reliable_ad.annotation.config import AnnotationConfig  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.annotation.importer import import_availability, import_preference  # noqa: E402
from reliable_ad.annotation.models import User  # noqa: E402

PASSWORD = "correct horse battery"
EXAMPLES = int(os.environ.get("RELIABLE_AD_FUZZ_EXAMPLES", "25"))  # per route and database; more: a deeper pass
# what an answer shows when an error escaped the app's own checks: a traceback, a database error,
# or the message of Python's JSON or text encoders failing on the answer itself
INTERNAL_SIGNS = ("Traceback (most recent call last)", 'File "/', "sqlalchemy.exc", "psycopg.", "sqlite3.",
                  "(Background on this error", "not JSON compliant", "codec can't", "object is not")


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch):
    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database, drop = Database(tmp_path / "annotation.db"), lambda: None
    else:
        database, drop = postgres_db()
    yield database
    database.dispose()
    drop()


def _is_int(field) -> bool:
    annotation = field.field_info.annotation
    return annotation is int or int in typing.get_args(annotation)


def _body_fields(route) -> dict:
    """The fields of a route's JSON body model: name -> pydantic FieldInfo."""
    if route is None:
        return {}
    fields = {}
    for param in route.dependant.body_params:
        for model in (param.field_info.annotation, *typing.get_args(param.field_info.annotation)):
            fields.update(getattr(model, "model_fields", {}))
    return fields


# ---- what is sent -----------------------------------------------------------------------------------

huge = st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 10**20, 10**400])
ints = st.integers(min_value=-5, max_value=8) | st.integers() | huge
texts = st.text(max_size=40) | st.sampled_from(["", " ", "\x00", "\ud800", "'; DROP TABLE users; --",
                                                "../../etc/passwd", "root", "sequential", "admin", "1423", "1,2"])
scalars = st.none() | st.booleans() | ints | st.floats() | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=12)
real_ids = st.integers(min_value=1, max_value=8)  # ids the database has
id_text = st.one_of(real_ids.map(str), ints.map(str), st.text(max_size=12),
                    st.sampled_from(["1.5", "1e3", "abc", "0x10", " 1", "١", "%00", "1;2", "1/2"]))
PLAUSIBLE_TEXT = ["12", "21", "1,2", "random", "uncertainty", "sequential", "annotator", "admin", "somebody",
                  "annie", "root", "ivan", "a long enough password", "/annotate/1", "/\t/evil.example"]


def _valid(annotation, metadata):
    """A strategy for values the field's type and bounds allow (so the request gets further)."""
    bounds = {type(m).__name__: m for m in metadata}
    low = getattr(bounds.get("Ge"), "ge", -3)
    high = getattr(bounds.get("Le"), "le", low + 50)
    options = []
    for kind in typing.get_args(annotation) or (annotation,):
        if kind is int:
            options.append(st.integers(min_value=low, max_value=high))
        elif kind is bool:
            options.append(st.booleans())
        elif kind is str:
            options.append(st.sampled_from(PLAUSIBLE_TEXT) | st.text(max_size=getattr(bounds.get("MaxLen"),
                                                                                       "max_length", 30)))
        elif kind is type(None):
            options.append(st.none())
        elif typing.get_origin(kind) is list:
            options.append(st.permutations([1, 2]) | st.lists(st.integers(min_value=-1, max_value=4), max_size=4))
    return st.one_of(options) if options else json_values


@st.composite
def _requests(draw, path: str, route, known_query: list[str]):
    """(url, body, raw body) for one request to ``path``: half of them plausible (ids the database
    has, a body with every field of the route's model, each of its type), so that requests get as
    far as the database and the app's own checks; the other half anything at all."""
    plausible = draw(st.booleans())
    url = path
    for name in [p.strip("{}") for p in path.split("/") if p.startswith("{")]:
        field = next((f for f in route.dependant.path_params if f.name == name), None) if route else None
        if field is not None and _is_int(field):
            value = draw(real_ids.map(str) if plausible else id_text)
        else:
            value = draw(st.sampled_from(["image", "product", "app.css", "login.js", "..", "%2e%2e"])
                         | st.text(max_size=20))
        url = url.replace("{" + name + "}", quote(value, safe="", errors="surrogatepass") or "x")
    names = st.sampled_from(known_query) if plausible and known_query else texts
    query = draw(st.dictionaries(names, real_ids.map(str) if plausible else id_text | texts, max_size=3))
    if query:
        url += "?" + urlencode(query, errors="surrogatepass")
    fields = _body_fields(route)
    if plausible:
        body = draw(st.fixed_dictionaries({name: _valid(f.annotation, f.metadata) for name, f in fields.items()}))
        return url, body, None
    body = draw(st.fixed_dictionaries({}, optional={name: json_values for name in fields})
                | st.dictionaries(texts, json_values, max_size=4) | json_values)
    raw = None
    if draw(st.booleans()):  # not JSON at all
        raw = draw(st.binary(max_size=30) | st.sampled_from([b"", b"{", b"NaN", b"[1,", b"\xff\xfe", b'{"a":1}{']))
    return url, body, raw


def _check(method: str, url: str, response) -> None:
    where = f"{method} {url} -> {response.status_code}: {response.text[:300]!r}"
    assert response.status_code < 500, where
    if response.status_code < 400:
        return
    kind = response.headers.get("content-type", "")
    assert kind.startswith(("application/json", "text/html")), where
    assert not any(sign in response.text for sign in INTERNAL_SIGNS), where
    if kind.startswith("application/json"):
        detail = json.loads(response.text)["detail"]
        assert isinstance(detail, (str, list)) and detail, where
        if isinstance(detail, list):  # FastAPI's list of problems: each says where and what
            assert all(isinstance(d, dict) and d.get("loc") and d.get("msg") for d in detail), where


# ---- the test ---------------------------------------------------------------------------------------


def test_random_requests_to_every_route_give_no_server_error(db, tmp_path):
    users = {"root": "admin", "annie": "annotator"}
    with db.write() as s:
        for name, role in users.items():
            security.create_user(s, name, role, password=PASSWORD)
        security.create_user(s, "ivan")  # an invited user
    import_availability(db, make_run(tmp_path / "run", 2, 2), k=2)
    products = tmp_path / "products"
    runs = [make_run(tmp_path / m, 2, 1, seed=i, products_dir=products) for i, m in enumerate(["base", "rfft"])]
    import_preference(db, runs, methods=["base", "rfft"], k=1)
    # throttling has its own tests; here a fuzzed login must not lock the fuzzing clients out
    app = create_app(AnnotationConfig(db=db.url, prefetch=0, login_attempts=10**6,
                                      login_attempts_per_address=10**6), db)
    clients = {name: TestClient(app, raise_server_exceptions=False) for name in (*users, "anonymous")}
    sessions: dict[str, Annotator] = {}

    def log_in(name: str) -> None:
        with db.write() as s:  # undo what a fuzzed admin call may have done to the account
            user = s.scalar(select(User).where(User.username == name))
            user.role, user.active = users[name], True
        app.state.sessions.clear()
        sessions[name] = Annotator(clients[name], name, PASSWORD)

    for name in users:
        log_in(name)
        for batch in (1, 2):  # some assignments to answer, skip and undo
            sessions[name].next(batch, count=2)
    routes = list(app_routes(app))
    assert len(routes) >= 30, routes
    for method, path, route in routes:
        known_query = [f.name for f in route.dependant.query_params] if route else []

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(request=_requests(path, route, known_query), who=st.sampled_from([*users, *users, "anonymous"]),
               csrf=st.sampled_from([True, True, True, False]))
        def fuzz(request, who, csrf):
            url, body, raw = request
            client = clients[who]
            headers = {}
            if csrf and path in ("/api/login", "/api/invite"):
                headers["X-CSRF-Token"] = client.get("/api/login-token").json()["token"]
            elif csrf and who in sessions:
                headers["X-CSRF-Token"] = sessions[who].csrf
            content = raw if raw is not None else json.dumps(body).encode()  # NaN and lone surrogates too
            response = client.request(method, url, content=content,
                                      headers={**headers, "Content-Type": "application/json"})
            _check(method, url, response)
            if who in sessions and client.get("/api/me").status_code == 401:
                log_in(who)  # logged out, disabled or re-invited by the fuzzed call

        fuzz()
