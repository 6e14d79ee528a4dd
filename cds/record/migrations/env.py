"""Alembic environment, run programmatically by cds.record.engine.migrate on a connection it holds."""

from alembic import context

from cds.record.schema import metadata

context.configure(connection=context.config.attributes["connection"], target_metadata=metadata,
                  render_as_batch=True)  # batch mode lets later migrations alter tables on SQLite
with context.begin_transaction():
    context.run_migrations()
