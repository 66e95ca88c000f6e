"""Alembic's environment for the experiments store: online only, on the engine ``db.migrate`` passes."""

from __future__ import annotations

from alembic import context

from experiments.db import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
