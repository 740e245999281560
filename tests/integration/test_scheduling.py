"""Scheduling with real processes: the brief's test D.3 (a strong worker does more than twice
the work of a weak one), fair share between two users, and requirements no worker meets.

One machine stands for a weak and a strong worker: a worker's WORKFLEET_SPEED divides the
duration of diagnostic sleeps, and WORKFLEET_CORES is what it declares."""

from collections import Counter
from pathlib import Path

import pytest

from workfleet.client import ApiError, Client
from workfleet.harness.cluster import Cluster
from workfleet.protocol import OperationView, RequirementsModel

SLEEP = {"action": "sleep", "seconds": 0.6}  # 0.6 s on the weak worker, 0.15 s on the strong


async def wait_all(
    client: Client, ops: list[OperationView], timeout_s: float
) -> list[OperationView]:
    return [await client.wait(op.operation_id, timeout_s=timeout_s) for op in ops]


async def test_d3_a_strong_worker_completes_more_than_twice_as_many_as_a_weak_one(
    tmp_path: Path,
) -> None:
    fleet = Cluster(tmp_path / "cluster", backend_env={"WORKFLEET_PLACEMENT": "fastest"})
    try:
        await fleet.start_backend()
        await fleet.start_worker("weak", env={"WORKFLEET_CORES": "2", "WORKFLEET_SPEED": "1"})
        await fleet.start_worker("strong", env={"WORKFLEET_CORES": "16", "WORKFLEET_SPEED": "4"})
        await fleet.wait_workers("weak", "strong")
        async with fleet.client() as client:
            declared = {w.worker_id: w.capabilities for w in (await client.workers()).items}
            assert (declared["weak"].speed, declared["strong"].speed) == (1.0, 4.0)
            assert (declared["weak"].cores, declared["strong"].cores) == (2, 16)
            ops = await client.submit_many([("diagnostic", SLEEP)] * 100)
            finals = await wait_all(client, ops, timeout_s=60)
    finally:
        await fleet.stop()
    assert {op.status for op in finals} == {"completed"}
    counts = Counter(op.worker_id for op in finals)
    print(f"D.3 (fastest): strong {counts['strong']}, weak {counts['weak']}")
    assert counts["strong"] > 2 * counts["weak"], counts


async def test_a_second_users_operations_finish_before_the_first_users_twentieth(
    cluster: Cluster,
) -> None:
    alice_key = cluster.create_key("operator", "alice")
    bob_key = cluster.create_key("operator", "bob")
    await cluster.start_worker("w1")  # one slot: every placement is a choice between the two
    await cluster.wait_workers("w1")
    short = {"action": "sleep", "seconds": 0.1}
    async with cluster.client(alice_key) as alice, cluster.client(bob_key) as bob:
        alices = await alice.submit_many([("diagnostic", short)] * 60)
        bobs = await bob.submit_many([("diagnostic", short)] * 3)
        bob_finals = await wait_all(bob, bobs, timeout_s=60)
        alice_finals = await wait_all(alice, alices, timeout_s=60)
    assert {op.status for op in [*alice_finals, *bob_finals]} == {"completed"}
    alice_done = sorted(op.finished_at for op in alice_finals if op.finished_at)
    bob_done = sorted(op.finished_at for op in bob_finals if op.finished_at)
    before = sum(done < bob_done[-1] for done in alice_done)
    print(f"fair share: bob's 3 operations done after {before} of alice's 60")
    assert bob_done[-1] < alice_done[19]


async def test_an_operation_no_registered_worker_can_ever_run_is_refused_with_422(
    cluster: Cluster,
) -> None:
    await cluster.start_worker("w1", env={"WORKFLEET_CORES": "2", "WORKFLEET_LABELS": "zone=eu"})
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        with pytest.raises(ApiError, match="min_cores 64") as refused:
            await client.submit("diagnostic", {}, requirements=RequirementsModel(min_cores=64))
        assert refused.value.status == 422
        with pytest.raises(ApiError, match="label zone=us"):
            await client.submit(
                "diagnostic", {}, requirements=RequirementsModel(labels={"zone": "us"})
            )
        selected = await client.submit(
            "diagnostic", {}, requirements=RequirementsModel(min_cores=2, labels={"zone": "eu"})
        )
        done = await client.wait(selected.operation_id, timeout_s=30)
    assert (done.status, done.worker_id, done.requirements.labels) == (
        "completed",
        "w1",
        {"zone": "eu"},
    )
