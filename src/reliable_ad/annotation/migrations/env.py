"""Alembic environment of the annotation database. The caller (reliable_ad.annotation.db.upgrade)
passes an open connection in ``config.attributes["connection"]``; no alembic.ini is needed."""

from alembic import context

from reliable_ad.annotation.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through reliable_ad.annotation.db.upgrade(engine), which passes a connection")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them; batch mode does that
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
