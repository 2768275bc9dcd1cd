"""Alembic migrations for the kd store. They ship inside the installed package (see kdstore.migrate)."""
