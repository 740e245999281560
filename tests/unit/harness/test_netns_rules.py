"""The pure parts of harness/netns.py, without root: the nftables text of each side of a
partition and of a lossy link, the loss counters read back, the choice of a free subnet, the
one message when netns cannot run, and the `loadtest --network netns` checks made before
anything starts."""

import ipaddress
import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from workfleet.cli import loadtest as cli
from workfleet.cli.main import app
from workfleet.harness import netns
from workfleet.harness.run import Options, Result

pytestmark = pytest.mark.unit


def rules(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if " drop" in line]


def test_cutting_the_backends_calls_drops_the_connections_it_opened_both_ways() -> None:
    text = netns.partition_rules("wfx0_2_in", "10.213.7.2", "in")
    assert rules(text) == [
        "ip daddr 10.213.7.2 ct direction original drop",  # output: its requests
        "ip saddr 10.213.7.2 ct direction reply drop",  # input: the worker's answers
    ]


def test_cutting_the_workers_calls_drops_the_connections_it_opened_both_ways() -> None:
    text = netns.partition_rules("wfx0_2_out", "10.213.7.2", "out")
    assert rules(text) == [
        "ip daddr 10.213.7.2 ct direction reply drop",
        "ip saddr 10.213.7.2 ct direction original drop",
    ]


def test_the_script_replaces_its_table_whether_or_not_it_exists() -> None:
    lines = netns.partition_rules("wfx0_2_in", "10.213.7.2", "in").splitlines()
    assert lines[:3] == [
        "add table inet wfx0_2_in",
        "delete table inet wfx0_2_in",
        "table inet wfx0_2_in {",
    ]


def test_both_directions_are_the_two_sides_each_in_its_own_table() -> None:
    assert netns.SIDES["both"] == ("in", "out")
    names = {netns.table_name("wfxabcdef", 3, side) for side in netns.SIDES["both"]}
    assert names == {"wfxabcdef_3_in", "wfxabcdef_3_out"}
    assert all(name.startswith(netns.FAMILY) for name in names)  # found by the cleanup


def test_a_subnet_in_use_is_never_picked() -> None:
    taken = [ipaddress.IPv4Network(f"10.213.{n}.0/24") for n in range(255)]
    subnet = netns.pick_subnet([*taken, ipaddress.IPv4Network("192.0.2.0/24")], random.Random(1))
    assert subnet == ipaddress.IPv4Network("10.213.255.0/24")
    with pytest.raises(netns.NetnsError, match="no free /24"):
        netns.pick_subnet([netns.SUBNETS], random.Random(1))


def test_without_root_it_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(netns.NetnsError, match=r"needs root.*: not running as root"):
        netns.require()


def test_a_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "nft" else tool)
    with pytest.raises(netns.NetnsError, match="nft not found"):
        netns.require()


def test_the_cli_refuses_netns_for_a_scenario_that_needs_the_proxies() -> None:
    done = CliRunner().invoke(app, ["loadtest", "jitter", "--network", "netns"])
    assert done.exit_code == 2
    assert "jitter needs the proxies" in done.output and "partition" in done.output


def test_the_cli_refuses_netns_without_root_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    done = CliRunner().invoke(app, ["loadtest", "partition", "--network", "netns"])
    assert done.exit_code == 2 and "needs root" in done.output


def test_the_cli_passes_the_network_to_the_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Options] = []

    async def run_scenario(name: str, opts: Options, root: Path, say: object) -> Result:
        seen.append(opts)
        raise SystemExit(0)

    monkeypatch.setattr(netns, "require", lambda: None)
    monkeypatch.setattr(cli, "run_scenario", run_scenario)
    CliRunner().invoke(app, ["loadtest", "long-partition", "--network", "netns"])
    assert [opts.network for opts in seen] == ["netns"]


def test_a_lossy_link_drops_a_share_of_the_packets_each_way_and_counts_them() -> None:
    text = netns.loss_rules("wfx0_2_loss", "10.213.7.2", 30)
    assert rules(text) == [
        "ip daddr 10.213.7.2 numgen random mod 100 < 30 counter drop",  # output: to it
        "ip saddr 10.213.7.2 numgen random mod 100 < 30 counter drop",  # input: from it
    ]
    # every packet is counted before its draw: the loss it really had can be reported
    seen = [line.strip() for line in text.splitlines() if line.strip().endswith("counter")]
    assert seen == ["ip daddr 10.213.7.2 counter", "ip saddr 10.213.7.2 counter"]
    assert text.splitlines()[:2] == ["add table inet wfx0_2_loss", "delete table inet wfx0_2_loss"]


def test_a_loss_is_a_percentage() -> None:
    assert "< 100 counter drop" in netns.loss_rules("t", "10.213.7.2", 100)
    for wrong in (-1, 101):
        with pytest.raises(ValueError, match="0 to 100"):
            netns.loss_rules("t", "10.213.7.2", wrong)


def test_a_loss_tables_name_is_found_by_the_cleanup() -> None:
    assert netns.table_name("wfxabcdef", 3, "loss") == "wfxabcdef_3_loss"


def test_the_loss_counts_are_read_from_the_tables_json_listing() -> None:
    def rule(chain: str, packets: int, *, drop: bool) -> dict[str, Any]:
        expr: list[dict[str, Any]] = [{"match": {}}, {"counter": {"packets": packets, "bytes": 1}}]
        return {"rule": {"chain": chain, "expr": expr + ([{"drop": None}] if drop else [])}}

    listing = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "wfx0_2_loss"}},
            {"chain": {"name": "output"}},
            rule("output", 100, drop=False),
            rule("output", 9, drop=True),
            rule("input", 50, drop=False),
            rule("input", 6, drop=True),
        ]
    }
    assert netns.loss_counts(json.dumps(listing)) == (150, 15)


def test_the_cli_refuses_a_netns_only_scenario_over_the_loopback() -> None:
    done = CliRunner().invoke(app, ["loadtest", "packet-loss"])
    assert done.exit_code == 2 and "packet-loss needs --network netns" in done.output
    assert "packet-loss" in cli.NETNS_SCENARIOS  # and --network netns runs it
