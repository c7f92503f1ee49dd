"""Alembic environment of the serving database: always run by `genforge.serve.db.migrate` on an open
connection (config.attributes["connection"]), never from an alembic.ini."""

from alembic import context

from genforge.serve.db import Base

context.configure(connection=context.config.attributes["connection"], target_metadata=Base.metadata,
                  render_as_batch=True)  # batch mode: SQLite alters tables by copying them
with context.begin_transaction():
    context.run_migrations()
