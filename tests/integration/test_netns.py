"""Partitions as real network faults (harness/netns.py): each worker in a network namespace
on a bridge, cut off by nftables rules. Needs root and the ip and nft commands; behind the
`slow` marker: `./scripts/test -m slow tests/integration/test_netns.py`."""

import os
import shutil
import signal
from pathlib import Path

import pytest
from test_loadtest import assert_clean, loadtest

from workfleet.harness import netns
from workfleet.harness.cluster import Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(tool) for tool in netns.TOOLS),
        reason="network namespaces and nftables need root and the ip and nft commands",
    ),
]


def test_a_partition_over_namespaces_is_detected_healed_and_cleaned_up() -> None:
    before = netns.leftovers()
    code, report, log = loadtest("partition", "--network", "netns")
    ledger = assert_clean(code, report, log)
    assert all(report["checks"].values()), report["checks"]
    assert report["options"]["network"] == "netns"
    figures = report["figures"]
    assert figures["threshold_s"] <= figures["unavailable_after_s"] < 10
    assert figures["available_after_heal_s"] < 10
    assert ledger["outcomes"] == {"completed": 12}
    assert netns.leftovers() == before  # its bridge, namespaces and tables are gone


@pytest.mark.parametrize("percent", [10, 30])
def test_lossy_links_cost_retransmits_but_every_operation_completes_once(percent: int) -> None:
    before = netns.leftovers()
    code, report, log = loadtest(
        "packet-loss", "--network", "netns", "--loss-percent", str(percent)
    )
    ledger = assert_clean(code, report, log)
    assert all(report["checks"].values()), report["checks"]
    assert report["options"]["loss_percent"] == percent
    figures = report["figures"]
    assert len(figures["lossy"]) == 3
    assert abs(figures["packets_dropped"]["percent"] - percent) < 5  # the drop really bit
    # reported, not checked: marks only where packets were lost, none removed
    assert set(figures["false_unavailable_by_worker"]) <= set(figures["lossy"])
    assert figures["removed"] == 0
    assert set(ledger["outcomes"]) == {"completed"}
    assert netns.leftovers() == before  # the loss tables went with the rest


async def test_signals_reach_the_worker_itself_inside_its_namespace(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", network="netns")
    assert cluster.fabric is not None
    try:
        await cluster.start_backend()
        worker = await cluster.start_worker("w01")
        await cluster.wait_workers("w01")
        assert worker.host == cluster.fabric.worker_address("w01") != cluster.host
        # `ip netns exec` ran the worker in place: the pid we signal is the worker's own
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
        assert b"workfleet" in cmdline and b"worker" in cmdline
        assert os.readlink(f"/proc/{worker.pid}/ns/net") != os.readlink("/proc/self/ns/net")
        worker.signal(signal.SIGKILL)
        assert worker.popen.wait(timeout=5) == -signal.SIGKILL
        await cluster.wait_workers("w01", status="temporarily_unavailable")
    finally:
        await cluster.stop()
    assert not any(netns.leftovers(cluster.fabric.prefix).values())
