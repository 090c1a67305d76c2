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
from urllib.parse import urlsplit

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
    """Whether ``password`` matches the stored hash. Exactly one scrypt hash of ``password`` runs in
    every case (no stored hash, a malformed one, a non-string password), at the cost new hashes get,
    so the answer's timing does not tell whether an account exists or has a password yet."""
    params = _parse_hash(stored)
    possible = params is not None and isinstance(password, str)
    if params is None:
        params = (_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _DUMMY_SALT, bytes(32))
    n, r, p, salt, expected = params
    secret = password.encode("utf-8", "surrogatepass") if isinstance(password, str) else b""
    try:
        actual = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=128 << 20, dklen=len(expected))
    except ValueError:  # a stored cost beyond the memory limit: a damaged row, not a password
        return False
    return possible and hmac.compare_digest(actual, expected)


_DUMMY_SALT = secrets.token_bytes(16)  # hashed against when there is no stored hash


def _parse_hash(stored: str | None) -> tuple[int, int, int, bytes, bytes] | None:
    """(n, r, p, salt, digest) of a ``scrypt$n$r$p$salt$hash`` string, or None."""
    if not isinstance(stored, str):
        return None
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        params = (int(n), int(r), int(p), base64.b64decode(salt, validate=True),
                  base64.b64decode(digest, validate=True))
    except (ValueError, TypeError):
        return None
    n, r, p = params[:3]
    if scheme != "scrypt" or n < 2 or n & (n - 1) or not 0 < r <= 64 or not 0 < p <= 16 or not params[4]:
        return None
    return params


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValueError("a password may have at most 1024 characters")
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a password must be plain Unicode text; it has a lone surrogate "
                         "(an unpaired \\ud800-\\udfff escape): type it again") from None


def valid_username(username: object) -> bool:
    return isinstance(username, str) and _USERNAME.fullmatch(username) is not None


def check_username(username: str) -> str:
    if not valid_username(username):
        raise ValueError(f"user name {username!r} must be 1-64 letters, digits or . _ @ -, "
                         "starting with a letter or digit")
    return username


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


_URL_IGNORED = re.compile(r"[\t\n\r]")  # browsers drop these anywhere in a URL
_C0_OR_SPACE = "".join(map(chr, range(0x21)))  # and these at either end


def safe_next(value: object) -> str:
    """Where to go after logging in: ``value`` when it is a path on this site, else ``/``.

    Checked as a browser reads it: a browser drops tabs and newlines anywhere in a URL and control
    characters and spaces at its ends, and reads ``\\`` as ``/``, so ``/<tab>/evil.example`` and
    ``/\\evil.example`` both mean ``//evil.example``, another site. What is returned is that
    normalised path, one ``/`` then no second ``/``, with no scheme and no host."""
    if not isinstance(value, str) or len(value) > 2048:
        return "/"
    path = _URL_IGNORED.sub("", value).strip(_C0_OR_SPACE).replace("\\", "/")
    if not path.startswith("/") or path.startswith("//"):
        return "/"
    try:
        parts = urlsplit(path)
    except ValueError:
        return "/"
    if parts.scheme or parts.netloc:
        return "/"
    return path


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
    """Failed logins, per (user name, client address) and per client address, in memory (per server
    process, which is what a password-guessing client hits).

    After ``attempts`` failures of one account from one address, that address must wait before
    trying that account again: ``base_delay_s`` after the next failure, doubling with each further
    one up to ``max_delay_s``. The account stays open to every other address, so nobody can lock
    out a user (an admin) by failing on purpose. Each address may fail about ``per_address``
    times per ``window_s`` across all accounts (a leaky bucket). A success clears that
    (account, address) count, never the address's. At most ``max_entries`` of each are kept,
    the least recently failed going first.
    """

    def __init__(self, attempts: int = 5, *, per_address: int = 50, window_s: float = 900.0,
                 base_delay_s: float = 1.0, max_delay_s: float = 900.0, forget_s: float = 86400.0,
                 max_entries: int = 100_000, clock=time.monotonic):
        if attempts < 1 or per_address < 1 or window_s <= 0 or base_delay_s <= 0 or max_delay_s < base_delay_s:
            raise ValueError(f"LoginThrottle(attempts={attempts}, per_address={per_address}, window_s={window_s}, "
                             f"base_delay_s={base_delay_s}, max_delay_s={max_delay_s}): use positive numbers "
                             "with max_delay_s >= base_delay_s")
        self.attempts, self.per_address, self.window_s = attempts, per_address, window_s
        self.base_delay_s, self.max_delay_s = base_delay_s, max_delay_s
        self.forget_s = max(forget_s, max_delay_s)  # a count outlives its longest delay
        self.max_entries, self.clock = max_entries, clock
        self._accounts: dict[tuple[str, str], tuple[int, float]] = {}  # -> (failures, last failure)
        self._addresses: dict[str, tuple[float, float]] = {}  # -> (bucket level, last update)
        self._lock = threading.Lock()

    def _delay(self, failures: int) -> float:
        extra = failures - self.attempts
        if extra < 0:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** min(extra, 64))

    def _level(self, address: str, now: float) -> float:
        level, then = self._addresses.get(address, (0.0, now))
        return max(0.0, level - (now - then) * self.per_address / self.window_s)

    def retry_after(self, username: str, address: str) -> tuple[float, str] | None:
        """None when a login attempt may go ahead, else (seconds to wait, what is throttled)."""
        key = (username.lower(), address)
        with self._lock:
            now = self.clock()
            level = self._level(address, now)
            if level >= self.per_address:
                return (level - self.per_address + 1) * self.window_s / self.per_address, "address"
            failures, last = self._accounts.get(key, (0, now))
            wait = last + self._delay(failures) - now
            return (wait, "account") if wait > 0 else None

    def failed(self, username: str, address: str) -> None:
        key = (username.lower(), address)
        with self._lock:
            now = self.clock()
            failures = self._accounts.pop(key, (0, now))[0] + 1
            self._accounts[key] = (failures, now)  # re-inserted: dicts keep the most recent last
            level = self._level(address, now) + 1
            self._addresses.pop(address, None)
            self._addresses[address] = (level, now)
            self._trim(now)

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._accounts.pop((username.lower(), address), None)

    def _trim(self, now: float) -> None:
        for table, stale in ((self._accounts, lambda v: now - v[1] > self.forget_s),
                             (self._addresses, lambda v: v[0] <= (now - v[1]) * self.per_address / self.window_s)):
            while table:
                oldest = next(iter(table))
                if len(table) <= self.max_entries and not stale(table[oldest]):
                    break
                del table[oldest]

    def __len__(self) -> int:
        return len(self._accounts) + len(self._addresses)
