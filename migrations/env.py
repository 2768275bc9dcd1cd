"""Alembic environment: kd always hands in an open connection (kdstore.migrate), so there is no ini file."""

from alembic import context

from kdstore.schema import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("kd migrations run online only: use `kd db upgrade`")
run_migrations_online()
