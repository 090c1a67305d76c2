"""Accounts: scrypt password hashes (standard library), random tokens stored only as hashes,
server-side sessions with a per-session CSRF token, invites, and a failed-login throttle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from reliable_ad.annotation.models import ROLES, AuthSession, User, utcnow

# scrypt cost: n=2**14, r=8 takes ~40 ms and 16 MiB here (OWASP's minimum is n=2**17 with r=8, p=1
# for interactive logins on fast servers; raise _SCRYPT_N where logins are rare)
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash`` with a fresh 16-byte salt."""
    check_password_strength(password)
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, maxmem=64 << 20)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not isinstance(password, str):
        _dummy_work()  # the same time whether or not the user exists
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                                maxmem=128 << 20, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


_DUMMY = None


def _dummy_work() -> None:
    global _DUMMY
    if _DUMMY is None:
        _DUMMY = hash_password("dummy-password-for-timing")
    verify_password("not the password", _DUMMY)


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValueError("a password may have at most 1024 characters")


def check_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.match(username):
        raise ValueError(f"user name {username!r} must be 1-64 letters, digits or . _ @ -, "
                         "starting with a letter or digit")
    return username


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


# ---------------------------------------------------------------------------------------------
# Users


def create_user(s: Session, username: str, role: str = "annotator", *, password: str | None = None,
                invite_hours: float = 24 * 7) -> tuple[User, str | None]:
    """A new user with a password, or with an invite token (returned once; only its hash is kept)."""
    check_username(username)
    if role not in ROLES:
        raise ValueError(f"role {role!r} must be one of {ROLES}")
    if s.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValueError(f"user {username!r} exists already")
    user = User(username=username, role=role, active=True)
    invite = None
    if password is not None:
        user.password_hash = hash_password(password)
    else:
        invite = new_token()
        user.invite_hash = token_hash(invite)
        user.invite_expires = utcnow() + timedelta(hours=invite_hours)
    s.add(user)
    s.flush()
    return user, invite


def reinvite(s: Session, user: User, invite_hours: float = 24 * 7) -> str:
    """A fresh invite token for an existing user (a forgotten password); old sessions end."""
    invite = new_token()
    user.invite_hash = token_hash(invite)
    user.invite_expires = utcnow() + timedelta(hours=invite_hours)
    s.execute(delete(AuthSession).where(AuthSession.user_id == user.id))
    return invite


def accept_invite(s: Session, token: str, password: str) -> User:
    check_password_strength(password)
    user = s.scalar(select(User).where(User.invite_hash == token_hash(token or "")))
    if user is None or not user.active or user.invite_expires is None or user.invite_expires < utcnow():
        raise PermissionError("this invite link is invalid or has expired; ask an admin for a new one")
    user.password_hash = hash_password(password)
    user.invite_hash = None
    user.invite_expires = None
    return user


# ---------------------------------------------------------------------------------------------
# Sessions


def start_session(s: Session, user: User, hours: float) -> tuple[str, AuthSession]:
    """A new login: returns the cookie value (only its hash is stored) and the session row."""
    token = new_token()
    row = AuthSession(token_hash=token_hash(token), user_id=user.id, csrf_token=new_token(),
                      expires_at=utcnow() + timedelta(hours=hours))
    s.add(row)
    s.flush()
    row.user = user
    return token, row


def find_session(s: Session, token: str | None) -> AuthSession | None:
    if not token or len(token) > 256:
        return None
    row = s.scalar(select(AuthSession).where(AuthSession.token_hash == token_hash(token)))
    if row is None or row.expires_at < utcnow() or not row.user.active:
        return None
    return row


def end_session(s: Session, token: str | None) -> None:
    if token:
        s.execute(delete(AuthSession).where(AuthSession.token_hash == token_hash(token)))


def purge_expired_sessions(s: Session) -> int:
    return s.execute(delete(AuthSession).where(AuthSession.expires_at < utcnow())).rowcount or 0


class LoginThrottle:
    """At most ``attempts`` failed logins per user name in a sliding window (in memory: per server
    process, which is what a password-guessing client hits)."""

    def __init__(self, attempts: int = 10, window_s: float = 900.0):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(key, ()) if now - t < self.window_s]
        self._failures[key] = times
        return times

    def blocked(self, username: str) -> bool:
        with self._lock:
            return len(self._recent(username.lower(), time.monotonic())) >= self.attempts

    def failed(self, username: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(username.lower(), now).append(now)
            if len(self._failures) > 100_000:  # bound memory against made-up names
                self._failures = {k: v for k, v in self._failures.items() if v}

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username.lower(), None)
