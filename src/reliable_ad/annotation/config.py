"""Settings of the annotation server and of imports, validated at construction."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DB = "sqlite:///annotation.db"
QUEUE_ORDERS = ("sequential", "uncertainty", "random")


@dataclass
class AnnotationConfig:
    db: str = DEFAULT_DB  # SQLAlchemy URL or an SQLite file path; postgresql://... for teams
    host: str = "127.0.0.1"  # where `serve` listens; 0.0.0.0 exposes it to the network
    port: int = 8000
    k: int = 2  # labels (or rankings) each item gets from different annotators, for new batches
    order: str = "sequential"  # queue order of new batches: sequential, uncertainty (active learning), random
    prefetch: int = 2  # items an annotator holds ahead of the one shown, so the next one is preloaded
    lease_seconds: int = 1800  # an item held but not answered this long goes back to the queue
    session_hours: float = 24 * 14  # login lifetime
    invite_hours: float = 24 * 7  # invite-link lifetime
    secure_cookies: bool = False  # set behind HTTPS: cookies are then sent over HTTPS only
    max_import_bytes: int = 512 * 1024 * 1024  # a larger manifest or label file is refused
    max_import_records: int = 2_000_000  # more records than this are refused
    # failed logins of one account from one client address before that address must wait (1 s, then
    # doubling per further failure up to 15 minutes); other addresses can still log in to the account
    login_attempts: int = 5
    login_attempts_per_address: int = 50  # failed logins from one address per 15 minutes, all accounts

    def __post_init__(self) -> None:
        for name in ("port", "k", "prefetch", "lease_seconds", "max_import_bytes", "max_import_records",
                     "login_attempts", "login_attempts_per_address"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "prefetch" else 1):
                raise ValueError(f"annotation.{name}={value!r} must be a positive int")
        if self.port > 65535:
            raise ValueError(f"annotation.port={self.port} must be at most 65535")
        if self.prefetch > 10:
            raise ValueError(f"annotation.prefetch={self.prefetch} is too many; use 0..10 (2 is plenty)")
        if self.order not in QUEUE_ORDERS:
            raise ValueError(f"annotation.order={self.order!r} must be one of {QUEUE_ORDERS}")
        for name in ("session_hours", "invite_hours"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"annotation.{name}={value!r} must be a positive number of hours")
        if not isinstance(self.db, str) or not self.db.strip():
            raise ValueError(f"annotation.db={self.db!r} must be a database URL or an SQLite file path")
