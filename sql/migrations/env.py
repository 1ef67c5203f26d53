"""Alembic environment for the service's schema.

`python service.py migrate` hands in an open connection (config.attributes["connection"]);
`alembic -c alembic.ini ...` and offline rendering (`python service.py schema`) use a URL.
"""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online_with(connection) -> None:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_online_with(connection)
        return
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as connection:
        run_online_with(connection)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
