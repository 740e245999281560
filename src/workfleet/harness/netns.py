"""Real network partitions for the harness, as root (tier B; the proxies of harness/proxy.py
are tier A and need no root): one Linux bridge in the root namespace, where the backend
listens on the bridge's address, and one network namespace per worker, joined to the bridge
by a veth pair, with an address of its own. A worker is cut off by nftables rules in the
root namespace, where all its traffic with the backend passes; healing deletes them.

A partition has a direction, as the proxies' have: `in` cuts the connections the backend
opens to the worker (dispatches, health checks, cancels), `out` those the worker opens to the
backend (registration, session, reports), `both` all of them. Connections are told apart by
conntrack's direction (who sent the first packet), so a partition holds whatever ports the
processes use. Each (worker, direction) has its own table, so healing one direction leaves
the other cut, and creating or deleting a table is atomic.

A lossy link drops a share of the packets, each drawn apart, both ways (`numgen random`), in
a table of its own per worker: TCP retransmits them, so the link is slow and uneven, not cut.

Every name (bridge, veths, namespaces, tables) starts with the run's prefix, FAMILY plus a
random part: `close()` removes them all, and `python -m workfleet.harness.netns --cleanup`
removes what a crashed run left (every name starting with FAMILY).

No netem on the kernel this was built on, so latency stays with the proxies."""

import ipaddress
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["in", "out"]
Kind = Side | Literal["loss"]  # a table's purpose: one side of a partition, or packet loss
SIDES: dict[str, tuple[Side, ...]] = {"both": ("in", "out"), "in": ("in",), "out": ("out",)}
FAMILY = "wfx"  # every run's prefix starts with it
SUBNETS = ipaddress.IPv4Network("10.213.0.0/16")  # each run takes a free /24 of it
TOOLS = ("ip", "nft")
MAX_WORKERS = 253  # a /24: .1 the backend, .2 to .254 the workers


class NetnsError(RuntimeError):
    """The namespaces cannot be used here (not root, a tool missing) or a command failed."""


def require() -> None:
    """Fail with one message unless this process can build namespaces and nftables rules."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        why = "not running as root" if os.geteuid() != 0 else f"{', '.join(missing)} not found"
        raise NetnsError(
            f"--network netns needs root and the ip and nft commands (iproute2, nftables): {why}"
        )


def _run(*command: str, stdin: str | None = None) -> str:
    done = subprocess.run(  # noqa: S603 - fixed tools, arguments we built
        command, input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        raise NetnsError(f"{' '.join(command)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


# ---- the nftables text (pure, so it is tested without root) -------------------------------


def table_name(prefix: str, index: int, kind: Kind) -> str:
    return f"{prefix}_{index}_{kind}"


def partition_rules(table: str, address: str, side: Side) -> str:
    """An nft script that (re)creates `table`, dropping both ways of the connections on one
    side of a worker at `address`: `in` those the root namespace opened to it (conntrack
    direction `original` on the way out, `reply` on the way back), `out` those it opened.
    Dropped, not rejected: a cut link stalls, as the proxies' partition does. The table is
    added then deleted first, so the script works whether or not it existed."""
    towards, back = ("original", "reply") if side == "in" else ("reply", "original")
    return (
        f"add table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n"
        f"  chain output {{ type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {address} ct direction {towards} drop\n"
        f"  }}\n"
        f"  chain input {{ type filter hook input priority 0; policy accept;\n"
        f"    ip saddr {address} ct direction {back} drop\n"
        f"  }}\n"
        f"}}\n"
    )


def loss_rules(table: str, address: str, percent: int) -> str:
    """An nft script that (re)creates `table`, dropping `percent` % of the packets between the
    root namespace and a worker at `address`, each way, whoever opened the connection: each
    packet draws a number in 0..99 (`numgen random mod 100`) and goes if it is below. Counters
    count the packets seen and those dropped (`loss_counts`), so a run shows the loss it had."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a loss is a percentage, 0 to 100: {percent}")
    chains = []
    for hook, match in (("output", f"ip daddr {address}"), ("input", f"ip saddr {address}")):
        chains.append(
            f"  chain {hook} {{ type filter hook {hook} priority 0; policy accept;\n"
            f"    {match} counter\n"
            f"    {match} numgen random mod 100 < {percent} counter drop\n"
            f"  }}\n"
        )
    return (
        f"add table inet {table}\n"
        f"delete table inet {table}\n"
        f"table inet {table} {{\n{''.join(chains)}}}\n"
    )


def loss_counts(listing: str) -> tuple[int, int]:
    """The packets seen and dropped by a `loss_rules` table, from `nft -j list table`: the
    counters of its rules, those ending in a drop counting the dropped."""
    seen = dropped = 0
    for item in json.loads(listing)["nftables"]:
        expr = item.get("rule", {}).get("expr", [])
        packets = sum(e["counter"]["packets"] for e in expr if "counter" in e)
        if any("drop" in e for e in expr):
            dropped += packets
        else:
            seen += packets
    return seen, dropped


def without_table(table: str) -> str:
    """An nft script that deletes `table` if it exists (`add` first: deleting a table that
    is not there is an error)."""
    return f"add table inet {table}\ndelete table inet {table}\n"


def pick_subnet(used: list[ipaddress.IPv4Network], rng: random.Random) -> ipaddress.IPv4Network:
    """A /24 of SUBNETS that overlaps none of `used`, from a random start (so that two runs
    at once do not race for the same one)."""
    candidates = list(SUBNETS.subnets(new_prefix=24))
    start = rng.randrange(len(candidates))
    for subnet in candidates[start:] + candidates[:start]:
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise NetnsError(f"no free /24 left in {SUBNETS}")


# ---- what exists ----------------------------------------------------------------------------


def _used_subnets() -> list[ipaddress.IPv4Network]:
    found = []
    for line in _run("ip", "-o", "-4", "addr", "show").splitlines():
        cidr = line.split()[3]  # "2: eth0    inet 192.0.2.2/24 brd ..."
        found.append(ipaddress.IPv4Interface(cidr).network)
    return found


def leftovers(prefix: str = FAMILY) -> dict[str, list[str]]:
    """Namespaces, links and nft tables whose names start with `prefix`."""
    namespaces = [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line]
    links = [
        line.split(":")[1].strip().split("@")[0]  # "7: wfx1h1@if6: <...>"
        for line in _run("ip", "-o", "link", "show").splitlines()
    ]
    tables = [
        line.split()[2]  # "table inet wfx1_1_in"
        for line in _run("nft", "list", "tables").splitlines()
        if line.startswith("table inet ")
    ]
    return {
        "namespaces": [n for n in namespaces if n.startswith(prefix)],
        "links": [n for n in links if n.startswith(prefix)],
        "tables": [t for t in tables if t.startswith(prefix)],
    }


def remove(prefix: str = FAMILY) -> None:
    """Delete every table, link and namespace whose name starts with `prefix`: tables first
    (partitions end), then links (deleting a veth's root end deletes the pair at once; a
    namespace's own end would only go once the kernel frees the namespace, later), then the
    namespaces."""
    found = leftovers(prefix)
    for table in found["tables"]:
        _run("nft", "delete", "table", "inet", table)
    for link in found["links"]:
        _run("ip", "link", "delete", link)
    for namespace in found["namespaces"]:
        _run("ip", "netns", "delete", namespace)


# ---- one run's network ----------------------------------------------------------------------


@dataclass
class Fabric:
    """One run's bridge, namespaces and partitions. `up()` builds the bridge, `add()` a
    worker's namespace, `close()` removes everything named with `prefix`."""

    prefix: str = field(default_factory=lambda: FAMILY + secrets.token_hex(3))
    subnet: ipaddress.IPv4Network | None = None
    workers: dict[str, int] = field(default_factory=dict)  # worker id -> index (address, names)

    def __post_init__(self) -> None:
        require()

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def backend_address(self) -> str:
        return self._address(1)

    def _address(self, index: int) -> str:
        assert self.subnet is not None, "Fabric.up() first"
        return str(self.subnet[index])

    def up(self) -> None:
        """The bridge, with the backend's address (once; again is a no-op)."""
        if self.subnet is not None:
            return
        self.subnet = pick_subnet(_used_subnets(), random.Random())
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.backend_address}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        except NetnsError:
            self.close()
            raise

    def add(self, worker_id: str) -> str:
        """The worker's namespace, on the bridge; its address. A worker started again under
        its id keeps its namespace and address."""
        if worker_id in self.workers:
            return self.worker_address(worker_id)
        index = len(self.workers) + 2  # .1 is the backend's
        if index > MAX_WORKERS + 1:
            raise NetnsError(f"at most {MAX_WORKERS} workers on one bridge")
        self.workers[worker_id] = index
        namespace, host_end, worker_end = self.namespace(worker_id), *self._veth(index)
        _run("ip", "netns", "add", namespace)
        _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", worker_end)
        _run("ip", "link", "set", host_end, "master", self.bridge, "up")
        _run("ip", "link", "set", worker_end, "netns", namespace)
        inside = ("ip", "-n", namespace)
        _run(*inside, "addr", "add", f"{self._address(index)}/24", "dev", worker_end)
        _run(*inside, "link", "set", worker_end, "up")
        _run(*inside, "link", "set", "lo", "up")
        return self._address(index)

    def _veth(self, index: int) -> tuple[str, str]:
        return f"{self.prefix}h{index}", f"{self.prefix}n{index}"  # 15 characters at most

    def namespace(self, worker_id: str) -> str:
        return f"{self.prefix}-{self.workers[worker_id]}"

    def worker_address(self, worker_id: str) -> str:
        return self._address(self.workers[worker_id])

    def exec_prefix(self, worker_id: str) -> list[str]:
        """Run a command in the worker's namespace. `ip netns exec` execs it in place (no
        fork): the pid Popen returns is the command's own, so signals reach it."""
        return ["ip", "netns", "exec", self.namespace(worker_id)]

    def partition(self, worker_id: str, direction: str = "both") -> None:
        index, address = self.workers[worker_id], self.worker_address(worker_id)
        for side in SIDES[direction]:
            table = table_name(self.prefix, index, side)
            _run("nft", "-f", "-", stdin=partition_rules(table, address, side))

    def heal(self, worker_id: str, direction: str = "both") -> None:
        index = self.workers[worker_id]
        for side in SIDES[direction]:
            _run("nft", "-f", "-", stdin=without_table(table_name(self.prefix, index, side)))

    def lose(self, worker_id: str, percent: int) -> None:
        """Drop `percent` % of the packets each way on the worker's link (0: none)."""
        table = table_name(self.prefix, self.workers[worker_id], "loss")
        address = self.worker_address(worker_id)
        script = loss_rules(table, address, percent) if percent else without_table(table)
        _run("nft", "-f", "-", stdin=script)

    def loss_counts(self, worker_id: str) -> tuple[int, int]:
        """The packets seen and dropped on the worker's lossy link so far."""
        table = table_name(self.prefix, self.workers[worker_id], "loss")
        return loss_counts(_run("nft", "-j", "list", "table", "inet", table))

    def heal_all(self) -> None:
        for worker_id in self.workers:
            self.heal(worker_id)
            self.lose(worker_id, 0)

    def close(self) -> None:
        remove(self.prefix)


def _main(argv: list[str]) -> int:
    if argv != ["--cleanup"]:
        print(f"usage: python -m workfleet.harness.netns --cleanup  (removes {FAMILY}* names)")
        return 2
    require()
    found = leftovers()
    remove()
    print(f"removed: {found}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
