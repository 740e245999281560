"""`workfleet loadtest SCENARIO`: a local fleet of real processes under load and faults, then
the ledger check (harness/scenarios/, harness/ledger.py). Exit status 1 when an invariant
breaks or the scenario's expectation fails."""

import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from workfleet.cli.common import err, fail, out
from workfleet.harness import broken, netns
from workfleet.harness.nemesis import Schedule
from workfleet.harness.report import write_report
from workfleet.harness.run import Options, Result
from workfleet.harness.scenarios import SCENARIOS, run_scenario

NETNS_SCENARIOS = [name for name, scenario in SCENARIOS.items() if scenario.netns]
NETNS_ONLY = [name for name, scenario in SCENARIOS.items() if not scenario.loopback]


def loadtest(
    scenario: Annotated[str, typer.Argument(help=f"One of: {', '.join(SCENARIOS)}.")],
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Workers (default: per scenario).")
    ] = None,
    operations: Annotated[
        int | None, typer.Option("--operations", min=1, help="Operations (default: per scenario).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of faults and choices.")] = 1,
    duration: Annotated[
        float, typer.Option("--duration", min=1, help="nemesis: seconds of faults.")
    ] = 60.0,
    op_seconds: Annotated[
        float | None, typer.Option("--op-seconds", min=0, help="Length of each operation.")
    ] = None,
    schedule: Annotated[
        Path | None,
        typer.Option("--schedule", help="nemesis: replay this schedule (JSON of a report)."),
    ] = None,
    max_losses: Annotated[
        int | None,
        typer.Option(
            "--max-losses",
            min=1,
            help="The backend's lost attempts before an operation fails (default: 3; "
            "cascading: one more than the kills).",
        ),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.1, help="latency: submits per second (default 5)."),
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", min=0, help="jitter: delay of each way of a link.")
    ] = Options.latency_ms,
    jitter_ms: Annotated[
        float, typer.Option("--jitter-ms", min=0, help="jitter: ± this around the delay.")
    ] = Options.jitter_ms,
    flap_seconds: Annotated[
        float,
        typer.Option("--flap-seconds", min=1, help="flapping: how long the link goes down and up."),
    ] = Options.flap_s,
    loss_percent: Annotated[
        int,
        typer.Option(
            "--loss-percent",
            min=1,
            max=100,
            help="packet-loss: % of the packets dropped each way on the lossy links.",
        ),
    ] = Options.loss_percent,
    break_backend: Annotated[
        str | None,
        typer.Option(
            "--break-backend",
            hidden=True,
            help="The checker's self-test: run a deliberately broken backend "
            f"({', '.join(broken.MODES)}); the ledger must fail.",
        ),
    ] = None,
    network: Annotated[
        Literal["loopback", "netns"],
        typer.Option(
            "--network",
            help="loopback: partitions through TCP proxies (no root). netns: as root, each "
            "worker in a network namespace on a bridge, partitions as nftables rules "
            f"({', '.join(NETNS_SCENARIOS)}).",
        ),
    ] = "loopback",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write report.json, the logs and PNG charts here."),
    ] = None,
) -> None:
    """Start a backend and workers here, run a load or fault scenario, check the ledger."""
    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}", 2)
    if break_backend is not None and break_backend not in broken.MODES:
        fail(f"unknown --break-backend {break_backend!r}; one of: {', '.join(broken.MODES)}", 2)
    _check_network(scenario, network)
    if report is not None:
        try:
            import matplotlib  # noqa: F401 - optional: only for the charts of --report
        except ImportError:
            fail(escape("--report draws charts with matplotlib: pip install 'workfleet[plot]'"), 2)
    replay = None
    if schedule is not None:
        try:
            text = schedule.read_text()
            data = json.loads(text)
            replay = Schedule.from_json(json.dumps(data.get("schedule") or data))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            fail(f"cannot read the schedule {schedule}: {exc}", 2)
    opts = Options(
        workers,
        operations,
        seed,
        duration,
        op_seconds,
        replay,
        max_losses,
        rate=rate,
        break_backend=break_backend,
        network=network,
        latency_ms=latency_ms,
        jitter_ms=jitter_ms,
        flap_s=flap_seconds,
        loss_percent=loss_percent,
    )

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    say(f"loadtest {scenario} (seed {seed})")
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run_scenario(scenario, opts, report / "cluster", say))
        write_report(result, report)
    else:
        with tempfile.TemporaryDirectory(prefix="workfleet-loadtest-") as root:
            result = asyncio.run(run_scenario(scenario, opts, Path(root), say))
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    else:
        _summary(result)
    if not result.passed:
        raise typer.Exit(1)


def _check_network(scenario: str, network: str) -> None:
    if network == "loopback":
        if scenario in NETNS_ONLY:
            fail(f"{scenario} needs --network netns (as root: its faults are nftables rules)", 2)
        return
    if scenario not in NETNS_SCENARIOS:
        runs = ", ".join(NETNS_SCENARIOS)
        fail(f"{scenario} needs the proxies; --network netns runs {runs}", 2)
    try:
        netns.require()
    except netns.NetnsError as exc:
        fail(str(exc), 2)


def _figure(value: Any) -> str:
    """A latency distribution (stats.distribution) on one line, in the order one reads it:
    the count the tail rests on, then the percentiles; anything else as it is."""
    if isinstance(value, dict) and "p50_ms" in value:
        quantiles = " ".join(
            f"{name.removesuffix('_ms').replace('_', '.')}={value[name]:.1f}"
            for name in ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")
            if name in value
        )
        return f"N={value['n']}  {quantiles} ms"
    return str(value)


def _summary(result: Result) -> None:
    data = result.to_dict()
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    out.print(f"{result.scenario}: {verdict}")
    for name, value in data["figures"].items():
        out.print(f"  {name}: {_figure(value)}", highlight=False, soft_wrap=True)
    for name, ok in result.checks.items():
        out.print(f"  check {name}: {'ok' if ok else '[red]no[/red]'}")
    ledger = data["ledger"]
    counts = ", ".join(
        f"{name}={ledger[name]}"
        for name in (
            "acknowledged",
            "terminal",
            "lost",
            "stuck",
            "double_terminal",
            "unexpected",
            "stale_accepted",
            "stale_rejected",
            "duplicate_executions",
            "metrics_mismatch",
        )
    )
    out.print(f"  ledger: {counts}", highlight=False, soft_wrap=True)
    out.print(f"  outcomes: {ledger['outcomes']}", highlight=False)
    if not ledger["metrics_checked"]:
        out.print("  (backend restarted: its counters were not compared with the ledger)")
    for name, ids in ledger["samples"].items():
        out.print(f"  [red]{name}[/red]: {', '.join(map(str, ids))}", highlight=False)
