"""Database access: an SQLite file by default (embedded, no set-up), PostgreSQL by URL for teams.

SQLite serialises writers; a write transaction that starts as a read and upgrades can fail with
"database is locked" however long it waits. So every write transaction starts with BEGIN IMMEDIATE,
and writers of one process queue on a lock (fair and without SQLite's sleeping busy handler, which
gives long latency tails under load). Read-only sessions start a plain BEGIN: in WAL mode they
never block a writer. PostgreSQL needs neither: the queue's conditional updates are atomic there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


def normalize_url(db: str | os.PathLike) -> str:
    """A SQLAlchemy URL from a URL or a file path: ``annotation.db`` -> ``sqlite:///<abs path>``,
    ``postgresql://...`` -> ``postgresql+psycopg://...`` (psycopg 3)."""
    if isinstance(db, os.PathLike):
        db = os.fspath(db)
    if not isinstance(db, str) or not db.strip():
        raise ValueError(f"database {db!r} must be an SQLite file path or a URL such as postgresql://user@host/db")
    db = db.strip()
    if "://" not in db:
        return "sqlite:///" + os.path.abspath(os.path.expanduser(db))
    scheme, rest = db.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg://{rest}"
    if scheme in ("sqlite", "postgresql+psycopg", "postgresql+psycopg2"):
        return db
    raise ValueError(f"database URL {db!r}: use sqlite:///FILE or postgresql://user:password@host/db")


def with_schema(db: str | os.PathLike, schema: str) -> str:
    """A PostgreSQL URL whose connections work in ``schema`` (their search_path): several
    independent annotation databases (or test runs) in one PostgreSQL database."""
    from urllib.parse import quote

    url = normalize_url(db)
    if not url.startswith("postgresql"):
        raise ValueError(f"schemas are a PostgreSQL feature; {url.split('://')[0]} has none")
    if not schema.replace("_", "").isalnum():
        raise ValueError(f"schema {schema!r} must be letters, digits and underscores")
    return f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"


class Database:
    """An engine plus sessions: ``with db.write() as s:`` commits on success and rolls back on error;
    ``with db.read() as s:`` never writes."""

    def __init__(self, db: str | os.PathLike, *, migrate: bool = True):
        self.url = normalize_url(db)
        self.is_sqlite = make_url(self.url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                # a connection per server thread (FastAPI's pool has 40): opening one costs more than a query
                engine = create_engine(self.url, connect_args={"check_same_thread": False, "timeout": 60},
                                       pool_size=40, max_overflow=10)
            else:  # one shared in-memory database
                engine = create_engine(self.url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
            _sqlite_transactions(engine)
        else:
            try:
                engine = create_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            except ModuleNotFoundError as e:
                raise ImportError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from e
        self.engine: Engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        if migrate:
            upgrade(self.engine)

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        with self._write_lock, self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        # closing ends the transaction and detaches what was loaded, still readable (not expired)
        with self._sessions() as session:
            session.connection(execution_options={"read_only": True})
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_transactions(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves (below)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=60000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; creates the tables in a new database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
