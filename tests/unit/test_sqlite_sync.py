"""WORKFLEET_DB_SYNC: every connection of the SQLite store runs with the durability asked for
(full by default), and a value that is not one of them is refused with the choices named."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from workfleet.settings import BackendSettings
from workfleet.store.sql import SqlStore

pytestmark = pytest.mark.unit
SYNCHRONOUS = {1: "normal", 2: "full"}  # what PRAGMA synchronous answers


def _sync_of(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return SYNCHRONOUS[int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())]


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_each_connection_commits_with_the_durability_asked_for(tmp_path: Path, sync: str) -> None:
    """Asked before open(): the writer thread then holds the one write connection."""
    store = SqlStore(f"sqlite:///{tmp_path / 'w.db'}", sync=sync)  # type: ignore[arg-type]
    assert _sync_of(store._write_engine) == _sync_of(store._read_engine) == sync


def test_full_is_the_default_and_anything_else_is_refused(tmp_path: Path) -> None:
    assert BackendSettings(data_dir=tmp_path).db_sync == "full"
    with pytest.raises(ValueError, match="'full' or 'normal'"):
        BackendSettings(data_dir=tmp_path, db_sync="sometimes")  # type: ignore[arg-type]
