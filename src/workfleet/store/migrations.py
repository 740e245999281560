"""Schema versioning. A new database gets the latest schema and is stamped; an older one is
moved forward one step at a time. Add a step here whenever tables.py changes."""

from collections.abc import Callable

import sqlalchemy as sa

from workfleet.store import tables

Step = Callable[[sa.Connection], None]


def _add_datasets(conn: sa.Connection) -> None:
    tables.datasets.create(conn)


def _add_artifacts(conn: sa.Connection) -> None:
    tables.artifacts.create(conn)


def _add_audit(conn: sa.Connection) -> None:
    tables.audit_records.create(conn)  # with its append-only triggers (tables.py)
    tables.audit_checkpoints.create(conn)


def _add_traceparent(conn: sa.Connection) -> None:
    conn.execute(sa.text("ALTER TABLE operations ADD COLUMN traceparent VARCHAR(128)"))


# STEPS[n] moves a database from version n to n + 1.
STEPS: dict[int, Step] = {
    1: _add_datasets,
    2: _add_artifacts,
    3: _add_audit,
    4: _add_traceparent,
}


class SchemaTooNew(RuntimeError):
    pass


def migrate(conn: sa.Connection) -> int:
    """Bring the schema to tables.SCHEMA_VERSION; returns the version found before."""
    inspector = sa.inspect(conn)
    if not inspector.has_table("schema_version"):
        tables.metadata.create_all(conn)
        conn.execute(tables.schema_version.insert().values(version=tables.SCHEMA_VERSION))
        return 0
    found = conn.execute(sa.select(tables.schema_version.c.version)).scalar_one()
    if found > tables.SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database has schema version {found}; this workfleet knows up to "
            f"{tables.SCHEMA_VERSION}: upgrade workfleet"
        )
    for version in range(found, tables.SCHEMA_VERSION):
        STEPS[version](conn)
    conn.execute(tables.schema_version.update().values(version=tables.SCHEMA_VERSION))
    return int(found)
