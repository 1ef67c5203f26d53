"""Migrations: an empty database reaches head with no drift from the tables service.py declares;
migrate is idempotent; an old PHP database is adopted without losing a row; the committed MySQL
DDL is what the migrations render."""

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import service

ROOT = Path(__file__).resolve().parent.parent
LEGACY_SQL = Path(__file__).resolve().parent / "legacy_php_schema.sql"


def drift(engine: sa.Engine) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), service.metadata)


def snapshot(engine: sa.Engine) -> dict:
    inspector = sa.inspect(engine)
    return {
        table: (
            [column["name"] for column in inspector.get_columns(table)],
            sorted(index["name"] for index in inspector.get_indexes(table)),
        )
        for table in sorted(inspector.get_table_names())
    }


def run_sql_script(engine: sa.Engine, script: str) -> None:
    with engine.begin() as connection:
        for statement in script.split(";"):
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "".join(lines).strip():
                connection.exec_driver_sql("\n".join(lines))


def test_empty_database_reaches_head_with_no_drift(empty_database_url):
    engine = service.make_engine(empty_database_url)
    service.migrate(engine)
    assert service.schema_revision(engine) == service.head_revision()
    assert drift(engine) == []
    engine.dispose()


def test_migrate_twice_changes_nothing(empty_database_url):
    engine = service.make_engine(empty_database_url)
    service.migrate(engine)
    before = snapshot(engine)
    service.migrate(engine)
    assert snapshot(engine) == before
    assert service.schema_revision(engine) == service.head_revision()
    engine.dispose()


def test_old_php_database_is_adopted_without_losing_a_row(mariadb_url):
    engine = service.make_engine(mariadb_url)
    run_sql_script(engine, LEGACY_SQL.read_text())
    service.migrate(engine)

    with engine.connect() as connection:
        payouts = connection.execute(
            sa.select(service.b2c_payments).order_by(service.b2c_payments.c.id)
        ).all()
        callbacks = connection.execute(sa.select(service.b2c_payment_callbacks)).all()
        payments = connection.execute(sa.select(service.payments.c.id)).scalars().all()
    assert sorted(payments) == ["p-1", "p-2"]
    assert [(row.id, row.status, row.amount, row.reason_code) for row in payouts] == [
        ("b-1", "completed", 1000, "0"),
        ("b-2", "failed", 500, "2001"),
    ]
    assert payouts[0].originator_conversation_id is None
    assert payouts[0].attempt_count == 0
    assert [(row.transaction_id, row.raw_response) for row in callbacks] == [
        ("TK58QW1RTY", '{"Result": {"ResultCode": 0}}')
    ]
    assert service.schema_revision(engine) == service.head_revision()
    engine.dispose()


def test_adopted_database_differs_from_declared_tables_only_in_legacy_index_names(mariadb_url):
    engine = service.make_engine(mariadb_url)
    run_sql_script(engine, LEGACY_SQL.read_text())
    service.migrate(engine)
    kinds = {difference[0] for difference in drift(engine)}
    assert kinds <= {"add_index", "remove_index", "add_constraint", "remove_constraint"}
    for difference in drift(engine):
        # Each declared index or unique constraint missing by name is there under its PHP name.
        if difference[0] in ("add_index", "add_constraint"):
            columns = [column.name for column in difference[1].columns]
            present = sa.inspect(engine).get_indexes(difference[1].table.name)
            assert any(index["column_names"] == columns for index in present), difference
    engine.dispose()


def test_old_php_database_keeps_working_for_old_sql(mariadb_url):
    engine = service.make_engine(mariadb_url)
    run_sql_script(engine, LEGACY_SQL.read_text())
    service.migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO b2c_payments (id, user_id, amount, status, reference_id, initiated_at) "
            "VALUES ('b-3', 'u-9', 300.00, 'pending', 'payout_ref_3', NOW())"
        )
        pending = connection.exec_driver_sql(
            "SELECT id FROM b2c_payments WHERE status = 'pending'"
        ).scalars()
        assert list(pending) == ["b-3"]
    engine.dispose()


def test_committed_mysql_schema_is_what_the_migrations_render():
    committed = (ROOT / "sql" / "schema.mysql.sql").read_text()
    assert committed == service.render_mysql_schema(), (
        "sql/schema.mysql.sql is stale: run `make schema` and commit it"
    )


def test_committed_mysql_schema_builds_the_declared_tables(mariadb_url):
    engine = service.make_engine(mariadb_url)
    run_sql_script(engine, (ROOT / "sql" / "schema.mysql.sql").read_text())
    assert drift(engine) == []
    assert service.schema_revision(engine) == service.head_revision()
    engine.dispose()
