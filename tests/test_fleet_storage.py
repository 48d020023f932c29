"""A fleet's storage: PgBouncer in front of PostgreSQL, connection budgets, timeouts, faults, TOTAL."""

from __future__ import annotations

import psycopg
import sqlalchemy

from search.testing import pgbouncer


def test_pgbouncer_pools_transactions_in_front_of_postgres(postgres_url: str) -> None:
    with pgbouncer(postgres_url, pool_size=2) as url:
        assert sqlalchemy.make_url(url).port != sqlalchemy.make_url(postgres_url).port
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.NullPool,
                                          connect_args={"prepare_threshold": None})
        with engine.connect() as conn:
            database, port = conn.exec_driver_sql("SELECT current_database(), inet_server_port()").one()
        engine.dispose()
        assert (database, port) == (sqlalchemy.make_url(postgres_url).database,
                                    sqlalchemy.make_url(postgres_url).port)
        console = sqlalchemy.make_url(url).set(drivername="postgresql", database="pgbouncer")
        with psycopg.connect(console.render_as_string(hide_password=False), autocommit=True,
                             prepare_threshold=None) as conn:
            settings = {row[0]: row[1] for row in conn.execute("SHOW CONFIG").fetchall()}
        assert settings["pool_mode"] == "transaction" and settings["default_pool_size"] == "2"
