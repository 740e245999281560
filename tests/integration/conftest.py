from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from workfleet.harness.cluster import Cluster


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """A backend (started) in token mode with the fast timing profile; tests add workers."""
    fleet = Cluster(tmp_path / "cluster")
    try:
        await fleet.start_backend()
        yield fleet
    finally:
        await fleet.stop()


def dump_logs(cluster: Cluster) -> str:
    parts = []
    for process in [cluster.backend, *cluster.workers.values()]:
        if process is not None:
            parts.append(f"----- {process.name} -----\n{process.log()[-4000:]}")
    return "\n".join(parts)
