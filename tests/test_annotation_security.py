"""Annotation app security: authentication on every route, CSRF, annotators confined to their own
work, no path traversal, injection strings kept as plain data, imports that fail whole."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from annotation_helpers import Annotator, app_routes, make_run, postgres_db  # noqa: E402
from reliable_ad.annotation import security  # noqa: E402
from reliable_ad.annotation.app import SESSION_COOKIE, create_app  # noqa: E402
from reliable_ad.annotation.config import AnnotationConfig  # noqa: E402
from reliable_ad.annotation.db import Database  # noqa: E402
from reliable_ad.annotation.importer import ImportRejected, Limits, import_availability  # noqa: E402
from reliable_ad.annotation.models import Assignment, Batch, Task, User  # noqa: E402

PASSWORD = "correct horse battery"
INJECTIONS = ["'; DROP TABLE tasks; --", "\" OR 1=1 --", "Robert'); DELETE FROM users;--", "<script>alert(1)</script>"]


@pytest.fixture(autouse=True)
def fast_password_hashing(monkeypatch):
    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "annotation.db")
    with database.write() as s:
        for name in ("alice", "bob"):
            security.create_user(s, name, password=PASSWORD)
        security.create_user(s, "root", "admin", password=PASSWORD)
    yield database
    database.dispose()


@pytest.fixture
def app(db):
    return create_app(AnnotationConfig(db=db.url, prefetch=0, login_attempts=3), db)


@pytest.fixture
def batch(db, tmp_path) -> int:
    return import_availability(db, make_run(tmp_path / "run", 2, 2), k=2).batch_id


def _count(db, model) -> int:
    with db.read() as s:
        return s.scalar(select(func.count()).select_from(model))


class _Clock:
    """A throttle's clock that moves only when a test moves it."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _login(client, username, password):
    token = client.get("/api/login-token").json()["token"]
    return client.post("/api/login", json={"username": username, "password": password},
                       headers={"X-CSRF-Token": token})


def _routes(app):
    """(method, path) of every API and image route, from the app's own OpenAPI description."""
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            yield method.upper(), path


def test_every_api_and_media_route_refuses_the_unauthenticated(app, batch):
    anonymous = TestClient(app)
    open_routes = {("GET", "/api/login-token"), ("POST", "/api/login"), ("POST", "/api/invite"),
                   ("GET", "/api/openapi.json")}
    checked = 0
    for method, path in _routes(app):
        if not path.startswith(("/api/", "/media/")) or (method, path) in open_routes:
            continue
        url = path.replace("{which}", "image")
        for name in ("batch_id", "assignment_id", "task_id", "candidate_id", "user_id"):
            url = url.replace("{" + name + "}", "1")
        response = anonymous.request(method, url, json={})
        assert response.status_code == 401, f"{method} {url} answered {response.status_code} without a login"
        checked += 1
    assert checked >= 20
    for page in ("/", "/annotate/1", "/rank/1", "/admin", "/admin/review/1"):
        response = anonymous.get(page, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_state_changes_need_the_sessions_csrf_token(app, batch):
    client = TestClient(app)
    alice = Annotator(client, "alice", PASSWORD)
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
        response = client.post(f"/api/batches/{batch}/next", json={"count": 1}, headers=headers)
        assert response.status_code == 403
    assert alice.next(batch)  # the right token works
    # the login form itself: the token must match the double-submit cookie
    fresh = TestClient(app)
    fresh.get("/api/login-token")
    forged = fresh.post("/api/login", json={"username": "alice", "password": PASSWORD}, headers={"X-CSRF-Token": "x"})
    assert forged.status_code == 403


def test_annotators_reach_only_their_own_assignments_and_media(app, db, batch):
    alice = Annotator(TestClient(app), "alice", PASSWORD)
    bob = Annotator(TestClient(app), "bob", PASSWORD)
    mine = alice.next(batch, count=1)[0]
    assert alice.label(mine["assignment"], 3).status_code == 200
    # bob cannot read, answer, skip or see the images of alice's assignment
    assert bob.get(f"/api/assignments/{mine['assignment']}").status_code == 404
    assert bob.label(mine["assignment"], 0).status_code == 404
    assert bob.post(f"/api/assignments/{mine['assignment']}/skip").status_code == 404
    assert bob.get(f"/api/my/answers?batch={batch}").json() == []
    with db.read() as s:
        unseen = s.scalar(select(Task.id).where(Task.id != mine["task"]).order_by(Task.id.desc()))
    assert bob.get(f"/media/task/{unseen}/image").status_code == 404  # not handed to bob yet
    with db.read() as s:
        assert s.scalar(select(Assignment.label).where(Assignment.id == mine["assignment"])) == 3
    assert alice.get(f"/api/assignments/{mine['assignment']}").json()["label"] == 3


def test_annotators_cannot_reach_admin_pages_or_calls(app, batch):
    alice = Annotator(TestClient(app), "alice", PASSWORD)
    assert alice.get("/admin").status_code == 403
    assert alice.get(f"/admin/review/{batch}").status_code == 403
    admin_calls = [(m, p) for m, p in _routes(app) if p.startswith("/api/admin/")]
    assert len(admin_calls) >= 7
    for method, path in admin_calls:
        url = path.replace("{batch_id}", str(batch)).replace("{task_id}", "1").replace("{user_id}", "1")
        body = {"label": 0, "role": "admin", "username": "x"}
        response = alice.get(url) if method == "GET" else alice.post(url, body)
        assert response.status_code == 403, f"{method} {url}: {response.status_code}"
    root = Annotator(TestClient(app), "root", PASSWORD)
    assert root.get(f"/api/admin/batches/{batch}/stats").status_code == 200


@pytest.mark.parametrize("url", [
    "/static/../pyproject.toml", "/static/..%2f..%2fpyproject.toml", "/static/%2e%2e/%2e%2e/etc/passwd",
    "/media/task/1/..%2f..%2f..%2fetc%2fpasswd", "/media/task/1/../../../etc/passwd",
    "/media/task/..%2f1/image", "/media/candidate/..%2f..%2fetc%2fpasswd", "/media/task/1/%2fetc%2fpasswd",
    "/static/%2fetc%2fpasswd", "/static//etc/passwd",
])
def test_path_traversal_in_image_and_static_urls_is_refused(app, batch, url):
    root = Annotator(TestClient(app), "root", PASSWORD)  # even an admin, who may see every image
    response = root.get(url)
    assert response.status_code in (400, 404, 405), f"{url}: {response.status_code}"
    assert b"root:" not in response.content and b"[build-system]" not in response.content


def test_import_refuses_images_outside_the_run_folder(db, tmp_path):
    run = make_run(tmp_path / "run", 1, 1)
    secret = tmp_path / "secret.png"
    secret.write_bytes((run / "images").glob("*.png").__next__().read_bytes())
    record = json.loads((run / "manifest.jsonl").read_text())
    for image in ("../secret.png", str(secret), "images/../../secret.png"):
        (run / "manifest.jsonl").write_text(json.dumps({**record, "image": image}) + "\n")
        with pytest.raises(ImportRejected, match="leaves the folder|must be relative"):
            import_availability(db, run)
    assert _count(db, Task) == 0


def test_injection_strings_are_stored_and_served_as_plain_data(app, db, tmp_path):
    run = make_run(tmp_path / "run", len(INJECTIONS), 1, captions=INJECTIONS)
    batch = import_availability(db, run, name="'; DROP TABLE batches; --", k=1).batch_id
    client = TestClient(app)
    for evil in INJECTIONS:  # as user names: no login, no error
        token = client.get("/api/login-token").json()["token"]
        assert client.post("/api/login", json={"username": evil, "password": evil},
                           headers={"X-CSRF-Token": token}).status_code == 401
    root = Annotator(client, "root", PASSWORD)
    created = root.post("/api/admin/users", {"username": "x' OR '1'='1", "password": "whatever123"})
    assert created.status_code == 422  # not a valid user name: refused, not executed
    alice = Annotator(TestClient(app), "alice", PASSWORD)
    captions = [t["caption"] for t in alice.next(batch, count=len(INJECTIONS))]
    assert captions == INJECTIONS
    with db.read() as s:
        assert s.scalar(select(Batch.name)) == "'; DROP TABLE batches; --"
        assert list(s.scalars(select(Task.caption).order_by(Task.id))) == INJECTIONS
        assert s.scalar(select(func.count()).select_from(User)) == 3
    # pages never interpret data as HTML: text goes in with textContent, and the CSP forbids inline script
    csp = alice.get("/").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    static = Path(__file__).parents[1] / "src" / "reliable_ad" / "annotation" / "static"
    assert not any("innerHTML" in p.read_text() for p in static.glob("*.js"))


def test_malformed_import_is_rejected_whole_with_line_numbers(db, tmp_path):
    run = make_run(tmp_path / "run", 3, 2)
    lines = (run / "manifest.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]  # a torn line
    lines[4] = json.dumps({**json.loads(lines[4]), "caption": 12})
    (run / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportRejected) as e:
        import_availability(db, run)
    assert "nothing was imported" in str(e.value)
    assert any(":3: not valid JSON" in p for p in e.value.problems)
    assert any(":5: 'caption' must be a string" in p for p in e.value.problems)
    assert _count(db, Task) == 0 and _count(db, Batch) == 0
    # with --skip-problems the four good records go in and the two bad ones are listed
    summary = import_availability(db, run, skip_problems=True)
    assert summary.added == 4 and len(summary.problems) == 2


def test_oversized_import_is_rejected_before_reading(db, tmp_path):
    run = make_run(tmp_path / "run", 3, 2)
    size = (run / "manifest.jsonl").stat().st_size
    with pytest.raises(ImportRejected, match="over the import limit"):
        import_availability(db, run, limits=Limits(max_bytes=size - 1))
    with pytest.raises(ImportRejected, match="more than 5 records"):
        import_availability(db, run, limits=Limits(max_records=5))
    assert _count(db, Task) == 0 and _count(db, Batch) == 0


def test_an_import_that_fails_while_writing_leaves_nothing(db, tmp_path, monkeypatch):
    from reliable_ad.annotation import importer

    run = make_run(tmp_path / "run", 3, 2)
    monkeypatch.setattr(importer, "_CHUNK", 2)
    calls = []
    real = importer.insert

    def failing_insert(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(importer, "insert", failing_insert)
    with pytest.raises(RuntimeError, match="disk full"):
        import_availability(db, run)
    assert _count(db, Task) == 0 and _count(db, Batch) == 0


def test_oversized_or_malformed_requests_are_refused(app, batch):
    alice = Annotator(TestClient(app), "alice", PASSWORD)
    task = alice.next(batch)[0]
    big = alice.post(f"/api/assignments/{task['assignment']}/label", {"label": 0, "pad": "x" * 100_000})
    assert big.status_code == 413
    for body in ({"label": 9}, {"label": "Available"}, {"label": -1}, {}, {"label": True, "duration_ms": -5}):
        assert alice.post(f"/api/assignments/{task['assignment']}/label", body).status_code == 422, body
    raw = alice.client.post(f"/api/assignments/{task['assignment']}/label", content=b"{not json",
                            headers={"X-CSRF-Token": alice.csrf, "Content-Type": "application/json"})
    assert raw.status_code == 422


def test_passwords_sessions_and_cookies(app, db):
    client = TestClient(app)
    token = client.get("/api/login-token").json()["token"]
    response = client.post("/api/login", json={"username": "alice", "password": PASSWORD},
                           headers={"X-CSRF-Token": token})
    cookie = response.headers["set-cookie"]
    assert f"{SESSION_COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    for header in ("content-security-policy", "x-content-type-options", "x-frame-options"):
        assert header in response.headers
    with db.read() as s:
        stored = s.scalar(select(User.password_hash).where(User.username == "alice"))
        from reliable_ad.annotation.models import AuthSession

        session_tokens = list(s.scalars(select(AuthSession.token_hash)))
    assert PASSWORD not in stored and stored.startswith("scrypt$")
    assert security.verify_password(PASSWORD, stored) and not security.verify_password(PASSWORD + "x", stored)
    assert client.cookies[SESSION_COOKIE] not in session_tokens  # only its hash is stored
    # logout ends the session on the server, not only in the browser
    old = client.cookies[SESSION_COOKIE]
    me = client.get("/api/me").json()
    assert client.post("/api/logout", json={}, headers={"X-CSRF-Token": me["csrf"]}).status_code == 200
    replay = TestClient(app)
    replay.cookies.set(SESSION_COOKIE, old)
    assert replay.get("/api/me").status_code == 401


def test_real_password_hash_cost(monkeypatch):
    monkeypatch.undo()  # the production cost, not the test one
    stored = security.hash_password("a long enough password")
    assert stored.split("$")[1:4] == ["16384", "8", "1"]
    with pytest.raises(ValueError, match="at least 8"):
        security.hash_password("short")


def test_failed_logins_are_throttled_and_disabled_users_are_out(app, db):
    app.state.throttle.clock = _Clock()
    client = TestClient(app)

    def login(password):
        token = client.get("/api/login-token").json()["token"]
        return client.post("/api/login", json={"username": "bob", "password": password},
                           headers={"X-CSRF-Token": token})

    assert [login("wrong").status_code for _ in range(3)] == [401, 401, 401]
    assert login(PASSWORD).status_code == 429  # even the right password, for a while
    alice = Annotator(TestClient(app), "alice", PASSWORD)
    root = Annotator(TestClient(app), "root", PASSWORD)
    with db.read() as s:
        alice_id = s.scalar(select(User.id).where(User.username == "alice"))
    assert root.post(f"/api/admin/users/{alice_id}", {"active": False}).status_code == 200
    assert alice.get("/api/me").status_code == 401
    assert root.post("/api/admin/users/3", {"active": False}).status_code == 409  # not yourself


def test_chunked_oversized_bodies_are_cut_off_on_a_real_server(app):
    import httpx

    from annotation_helpers import ServerThread

    with ServerThread(app) as base_url, httpx.Client(base_url=base_url) as client:
        alice = Annotator(client, "alice", PASSWORD)
        chunks = (b"x" * 1000 for _ in range(100))  # no Content-Length: Transfer-Encoding chunked
        response = client.post("/api/batches/1/next", content=chunks,
                               headers={"X-CSRF-Token": alice.csrf, "Content-Type": "application/json"})
        assert response.status_code == 413


# ---- where to go after logging in -----------------------------------------------------------------

OFF_SITE_NEXT = ["/\t/evil.example/x", "/\n/evil.example/x", "/\r\n/evil.example", "/\\evil.example",
                 "\\/evil.example", "\\\\evil.example", "//evil.example", "///evil.example", "https://evil.example",
                 "http:evil.example", "javascript:alert(1)", " //evil.example", "\x01//evil.example",
                 "/\t\\evil.example", "evil.example", "", None, 12]


@pytest.mark.parametrize("value", OFF_SITE_NEXT)
def test_next_pages_off_this_site_fall_back_to_the_home_page(value):
    assert security.safe_next(value) == "/"


@pytest.mark.parametrize(("value", "expected"), [
    ("/", "/"), ("/admin", "/admin"), ("/annotate/3", "/annotate/3"),
    ("/admin/review/2?x=1#y", "/admin/review/2?x=1#y"), ("/a//b", "/a//b"), ("/%2F%2Fevil.example", "/%2F%2Fevil.example"), ("/ad\tmin", "/admin"), ("/a\\b", "/a/b"),
])
def test_next_pages_on_this_site_are_kept_as_a_browser_reads_them(value, expected):
    assert security.safe_next(value) == expected


def test_login_answers_the_next_page_only_when_it_is_on_this_site(app):
    def login(next_page):
        client = TestClient(app)
        token = client.get("/api/login-token").json()["token"]
        response = client.post("/api/login", json={"username": "alice", "password": PASSWORD, "next": next_page},
                               headers={"X-CSRF-Token": token})
        assert response.status_code == 200, response.text
        return response.json()["next"]

    assert login("/annotate/1") == "/annotate/1"
    for evil in ("/\t/evil.example/x", "/\\evil.example", "https://evil.example"):
        assert login(evil) == "/"
    anonymous = TestClient(app)
    response = anonymous.get("/annotate/7", follow_redirects=False)
    assert response.headers["location"] == "/login?next=/annotate/7"


# ---- the same work whoever logs in ------------------------------------------------------------------


def test_every_login_branch_runs_exactly_one_password_hash(app, db, monkeypatch):
    import hashlib

    with db.write() as s:
        security.create_user(s, "ivan")  # invited: no password yet
        dave, _ = security.create_user(s, "dave", password=PASSWORD)
        dave.active = False
    costs = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(*args, **kwargs):
        costs.append((kwargs["n"], kwargs["r"], kwargs["p"]))
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)  # what security calls
    client = TestClient(app)
    cases = {"unknown user": ("nobody", PASSWORD, 401), "not a user name": ("no body!", PASSWORD, 401),
             "invited, no password yet": ("ivan", PASSWORD, 401), "disabled": ("dave", PASSWORD, 401),
             "wrong password": ("alice", "wrong password", 401), "right password": ("alice", PASSWORD, 200)}
    for _ in range(2):  # the second round: nothing cached the first time changes the count
        for case, (username, password, status) in cases.items():
            token = client.get("/api/login-token").json()["token"]
            costs.clear()
            response = client.post("/api/login", json={"username": username, "password": password},
                                   headers={"X-CSRF-Token": token})
            assert response.status_code == status, case
            assert costs == [(2**8, 8, 1)], f"{case}: {len(costs)} password hashes, at costs {costs}"


# ---- failed logins: throttled per account and address, and per address ---------------------------


def test_failures_from_one_address_never_lock_the_account_for_another(app):
    clock = app.state.throttle.clock = _Clock()
    attacker = TestClient(app, client=("203.0.113.9", 4000))
    owner = TestClient(app, client=("198.51.100.7", 5000))
    assert [_login(attacker, "root", "guess").status_code for _ in range(3)] == [401, 401, 401]
    refused = _login(attacker, "root", PASSWORD)  # even the right password, from that address, for now
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.headers
    assert "try again in 1 s" in refused.json()["detail"]
    assert _login(owner, "root", PASSWORD).status_code == 200  # the admin still gets in
    assert _login(attacker, "alice", PASSWORD).status_code == 200  # and the address to other accounts
    clock.now += 1.5
    assert _login(attacker, "root", "guess").status_code == 401  # after the wait: one more try
    assert _login(attacker, "root", PASSWORD).headers["retry-after"] == "2"  # then twice as long


def test_login_delays_double_with_each_failure_up_to_a_cap():
    clock = _Clock()
    throttle = security.LoginThrottle(3, base_delay_s=1.0, max_delay_s=60.0, clock=clock)
    waits = []
    for _ in range(12):
        refused = throttle.retry_after("Root", "10.0.0.1")
        if refused is not None:
            clock.now += refused[0]
        waits.append(refused and refused[0])
        throttle.failed("root", "10.0.0.1")  # user names count case-insensitively
    assert waits == [None, None, None, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert throttle.retry_after("root", "10.0.0.2") is None
    throttle.succeeded("root", "10.0.0.1")
    assert throttle.retry_after("root", "10.0.0.1") is None


def test_one_address_may_fail_only_so_often_across_all_accounts(db):
    app = create_app(AnnotationConfig(db=db.url, prefetch=0, login_attempts=3, login_attempts_per_address=5), db)
    clock = app.state.throttle.clock = _Clock()
    sprayer = TestClient(app, client=("203.0.113.9", 4000))
    names = ["alice", "bob", "root", "nobody", "somebody"]
    assert [_login(sprayer, name, "guess").status_code for name in names] == [401] * 5
    refused = _login(sprayer, "alice", PASSWORD)
    assert refused.status_code == 429 and "your address" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "180"  # 15 minutes / 5: one more failure's worth
    assert _login(TestClient(app, client=("198.51.100.7", 5000)), "alice", PASSWORD).status_code == 200
    clock.now += 180
    assert _login(sprayer, "alice", PASSWORD).status_code == 200


def test_the_throttle_keeps_a_bounded_number_of_entries():
    clock = _Clock()
    throttle = security.LoginThrottle(3, max_entries=100, clock=clock)
    for i in range(5000):
        throttle.failed(f"user{i}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
        clock.now += 0.001
    assert len(throttle) <= 200
    throttle.failed("root", "10.9.9.9")  # the most recent failures are the ones kept
    for _ in range(3):
        throttle.failed("root", "10.9.9.9")
    assert throttle.retry_after("root", "10.9.9.9") is not None


# ---- ids in URLs beyond what the database holds ----------------------------------------------------

MAX_ID = 2**31 - 1  # what an Integer column holds on PostgreSQL
BAD_IDS = ["99999999999999999999", str(2**63), str(2**31), "0", "-1", "abc", "1.5", "1e3"]
EXAMPLE_BODIES = {"label": {"label": 0}, "rank": {"ranking": "12"}, "resolve": {"label": 0}}


def _int_params(fields) -> list[str]:
    import typing

    return [f.name for f in fields if f.field_info.annotation is int or int in typing.get_args(f.field_info.annotation)]


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    if request.param == "sqlite":
        database, drop = Database(tmp_path / "annotation.db"), lambda: None
    else:
        database, drop = postgres_db()
    with database.write() as s:
        security.create_user(s, "alice", password=PASSWORD)
        security.create_user(s, "root", "admin", password=PASSWORD)
    yield database
    database.dispose()
    drop()


def test_ids_no_row_can_have_are_404_or_422_never_a_server_error(any_db, tmp_path):
    app = create_app(AnnotationConfig(db=any_db.url, prefetch=0), any_db)
    batch = import_availability(any_db, make_run(tmp_path / "run", 1, 2), k=1).batch_id
    root = Annotator(TestClient(app, raise_server_exceptions=False), "root", PASSWORD)
    alice = Annotator(TestClient(app, raise_server_exceptions=False), "alice", PASSWORD)
    alice.next(batch)  # so that the admin's and her answers exist
    checked, failures = set(), []
    for method, path, route in app_routes(app):
        if route is None:  # static files, the OpenAPI document: no ids
            continue
        in_path, in_query = _int_params(route.dependant.path_params), _int_params(route.dependant.query_params)
        body = EXAMPLE_BODIES.get(path.rsplit("/", 1)[-1], {})
        for name in in_path + in_query:
            for value in [*BAD_IDS, str(MAX_ID)]:
                url = path.replace("{which}", "image")
                for other in in_path:
                    url = url.replace("{" + other + "}", value if other == name else str(batch))
                if name in in_query:
                    url += f"?{name}={value}"
                for who in (root, alice):
                    response = who.client.request(method, url, json=body, headers={"X-CSRF-Token": who.csrf})
                    allowed = {200, 403, 404} if value == str(MAX_ID) and name != "limit" else {403, 404, 422}
                    if response.status_code not in allowed:
                        failures.append(f"{who.username}: {method} {url} -> {response.status_code} "
                                        f"{response.text[:80]}")
                checked.add((method, path, name))
    assert not failures, "\n".join(failures)
    assert len(checked) >= 17, sorted(checked)


def test_invalid_requests_say_what_is_wrong_even_when_the_value_is_not_json(app):
    client = TestClient(app)
    token = client.get("/api/login-token").json()["token"]
    for body, bad in ((b'{"username": "alice", "password": NaN}', "nan"),
                      (b'{"username": "alice", "password": 1e999}', "inf"),
                      (b'{"username": "alice", "password": ["\\ud800"]}', None),
                      (b'{"password": "correct horse battery"}', None)):
        response = client.post("/api/login", content=body,
                               headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
        assert response.status_code == 422, body
        problems = response.json()["detail"]
        assert isinstance(problems, list) and problems[0]["loc"][0] == "body", (body, problems)
        assert problems[0].get("input") == bad
        assert PASSWORD not in response.text  # a whole body is not echoed back


def test_a_link_swapped_in_after_import_is_not_served(tmp_path, monkeypatch):
    """The import checked every path; a product replaced by a link to a file outside the imported folder
    afterwards must not be served either (the media route resolves links again)."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from reliable_ad.annotation.app import create_app
    from reliable_ad.annotation.config import AnnotationConfig
    from reliable_ad.annotation.db import Database
    from reliable_ad.annotation.importer import import_availability

    monkeypatch.setattr(security, "_SCRYPT_N", 2**8)
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), (9, 9, 9)).save(secret)
    run = make_run(tmp_path / "run", n_products=1, per_product=1)
    db = Database(tmp_path / "a.db")
    import_availability(db, run, k=1)
    with db.write() as s:
        security.create_user(s, "alice", password=PASSWORD)
    client = TestClient(create_app(AnnotationConfig(db=db.url), db))
    alice = Annotator(client, "alice", PASSWORD)
    (task,) = alice.post("/api/batches/1/next", {"count": 1}).json()["tasks"]
    served = alice.get(task["product_url"])
    product = next((run / "products").glob("*.png"))
    assert served.status_code == 200 and served.content == product.read_bytes()
    product.unlink()
    product.symlink_to(secret)  # swapped in after the import
    assert alice.get(task["product_url"]).status_code == 404
    db.dispose()
