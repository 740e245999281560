"""`workfleet loadtest SCENARIO`: a local fleet of real processes under load and faults, then
the ledger check (harness/scenarios/, harness/ledger.py). Exit status 1 when an invariant
breaks or the scenario's expectation fails."""

import asyncio
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from workfleet.cli.common import err, fail, out
from workfleet.harness.nemesis import Schedule
from workfleet.harness.run import Options, Result
from workfleet.harness.scenarios import SCENARIOS, run_scenario

STATE_COLOURS = {
    "available": "#4caf50",
    "busy": "#1976d2",
    "draining": "#ff9800",
    "temporarily_unavailable": "#e53935",
    "absent": "#d0d0d0",
}


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
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write report.json, the logs and PNG charts here."),
    ] = None,
) -> None:
    """Start a backend and workers here, run a load or fault scenario, check the ledger."""
    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}", 2)
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
    opts = Options(workers, operations, seed, duration, op_seconds, replay, max_losses)

    def say(line: str) -> None:
        err.print(line, highlight=False, markup=False)

    say(f"loadtest {scenario} (seed {seed})")
    if report is not None:
        report.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run_scenario(scenario, opts, report / "cluster", say))
        _write_report(result, report)
    else:
        with tempfile.TemporaryDirectory(prefix="workfleet-loadtest-") as root:
            result = asyncio.run(run_scenario(scenario, opts, Path(root), say))
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
    else:
        _summary(result)
    if not result.passed:
        raise typer.Exit(1)


def _summary(result: Result) -> None:
    data = result.to_dict()
    verdict = "[green]PASSED[/green]" if result.passed else "[red]FAILED[/red]"
    out.print(f"{result.scenario}: {verdict}")
    for name, value in data["figures"].items():
        out.print(f"  {name}: {value}", highlight=False)
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


def _write_report(result: Result, directory: Path) -> None:
    (directory / "report.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.schedule is not None:
        (directory / "schedule.json").write_text(result.schedule.to_json() + "\n")
    import matplotlib as mpl

    mpl.use("Agg")
    _throughput_chart(result, directory / "throughput.png")
    _workers_chart(result, directory / "workers.png")


def _mark_faults(axes: Any, result: Result) -> None:
    for mark in result.marks:
        axes.axvline(mark.t, color="#e53935", linewidth=0.8, alpha=0.6)
        axes.annotate(
            mark.label,
            (mark.t, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=6,
            va="top",
            ha="right",
        )


def _throughput_chart(result: Result, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4))
    done = result.finished_at
    if done:
        end = int(max(done)) + 1
        axes.hist(done, bins=range(0, end + 1), color="#1976d2", label="completed per second")
        cumulative = axes.twinx()
        cumulative.plot(done, range(1, len(done) + 1), color="#333333", label="total")
        cumulative.set_ylabel("operations finished")
    axes.set_xlabel("seconds since start")
    axes.set_ylabel("per second")
    axes.set_title(f"{result.scenario}: throughput (red: faults)")
    _mark_faults(axes, result)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _workers_chart(result: Result, path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = sorted({name for _, states in result.samples if states for name in states})
    figure, axes = plt.subplots(figsize=(10, 1 + 0.35 * max(1, len(names))))
    samples = result.samples
    for (t, states), (t_next, _) in itertools.pairwise(samples):
        if states is None:
            axes.axvspan(t, t_next, color="#9e9e9e", alpha=0.4, linewidth=0)
            continue
        for row, name in enumerate(names):
            state = states.get(name, "absent")
            axes.broken_barh([(t, t_next - t)], (row - 0.4, 0.8), color=STATE_COLOURS[state])
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("seconds since start (grey band: backend down)")
    axes.set_title(f"{result.scenario}: worker states (red lines: faults)")
    _mark_faults(axes, result)
    handles = [Patch(color=colour, label=state) for state, colour in STATE_COLOURS.items()]
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
