"""Table definitions (SQLAlchemy Core). They describe the latest schema; migrations.py moves an
older database to it."""

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

SCHEMA_VERSION = 5


class UtcDateTime(sa.types.TypeDecorator[datetime]):
    """Timestamps are always timezone-aware UTC in and out (SQLite would drop the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        stamp: datetime = value
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

operations = sa.Table(
    "operations",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("operation_id", sa.String(64), nullable=False, unique=True),
    sa.Column("operation_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(128), nullable=False),
    sa.Column("idempotency_key", sa.String(256)),
    sa.Column("request_hash", sa.String(64)),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("requirements", sa.JSON, nullable=False),
    sa.Column("worker_id", sa.String(128)),
    sa.Column("lease_attempt", sa.Integer),
    sa.Column("lease_token", sa.String(128)),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("losses", sa.Integer, nullable=False),
    sa.Column("accepted_seq", sa.Integer),
    sa.Column("progress", sa.JSON),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.JSON),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("dispatched_at", UtcDateTime),
    sa.Column("started_at", UtcDateTime),
    sa.Column("finished_at", UtcDateTime),
    sa.Column("cancel_requested_at", UtcDateTime),
    sa.Column("trace_id", sa.String(64)),
    sa.Column("traceparent", sa.String(128)),
    sa.UniqueConstraint("owner", "idempotency_key", name="uq_operations_idempotency"),
    sa.Index("ix_operations_status", "status"),
    sa.Index("ix_operations_type", "operation_type"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("worker_type", sa.String(64), nullable=False),
    sa.Column("endpoint_url", sa.String(512), nullable=False),
    sa.Column("capabilities", sa.JSON, nullable=False),
    sa.Column("operation_types", sa.JSON, nullable=False),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("draining", sa.Boolean, nullable=False),
    sa.Column("registered_at", UtcDateTime, nullable=False),
    sa.Column("last_healthy_at", UtcDateTime),
    sa.Column("unavailable_since", UtcDateTime),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime),
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("symbol", sa.String(64), primary_key=True),
    sa.Column("timeframe", sa.String(8), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("bars", sa.Integer, nullable=False),
    sa.Column("first_at", UtcDateTime, nullable=False),
    sa.Column("last_at", UtcDateTime, nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("operation_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

# The audit log: append-only. The hash chain makes any change evident (domain/audit.py); on
# SQLite, triggers also refuse UPDATE and DELETE so a change needs deliberate effort. They are
# created with the tables, by a fresh database and by the migration alike.
audit_records = sa.Table(
    "audit_records",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),  # SQLite: the rowid itself
        primary_key=True,
        autoincrement=False,
    ),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(128)),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("signature", sa.String(128), nullable=False),
)


def _append_only(table: sa.Table, what: str) -> None:
    def create_triggers(target: sa.Table, conn: sa.Connection, **_: Any) -> None:
        if conn.dialect.name != "sqlite":
            return
        for verb in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER {target.name}_no_{verb.lower()} BEFORE {verb} ON {target.name} "
                f"BEGIN SELECT RAISE(ABORT, '{what} are append-only'); END"
            )

    sa.event.listen(table, "after_create", create_triggers)


_append_only(audit_records, "audit records")
_append_only(audit_checkpoints, "audit checkpoints")
