"""`workfleet simulate`: the placement policies on a simulated fleet, against the lower bound."""

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from workfleet.cli.common import err, out
from workfleet.domain.placement import POLICY_NAMES
from workfleet.scheduling.scenario import ScenarioError, build, load_fleet, load_workload
from workfleet.scheduling.simulator import PolicyReport, compare


def fail(message: str) -> NoReturn:
    """One line, however long (a bad file's message names the file and every problem)."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def simulate(
    fleet: Annotated[
        Path, typer.Option("--fleet", help="Fleet YAML: the workers, their capabilities, speeds.")
    ],
    workload: Annotated[
        Path, typer.Option("--workload", help="Workload YAML: groups of operations, arrivals.")
    ],
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help=f"A placement policy to run ({', '.join(POLICY_NAMES)}); repeat for several. "
            "Default: all of them.",
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the workload (default: the file's).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object keyed by policy.")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw the comparison into this PNG file.")
    ] = None,
) -> None:
    """Run placement policies on a simulated fleet and workload (seeded, no real workers).

    Per policy: makespan, its lower bound LB and the ratio makespan / LB, mean and p95 queue
    wait, slot utilisation and Jain's fairness index across submitters.
    """
    names = policy or list(POLICY_NAMES)
    unknown = [name for name in names if name not in POLICY_NAMES]
    if unknown:
        fail(f"unknown policy {unknown[0]!r} (one of {', '.join(POLICY_NAMES)})")
    try:
        scenario = build(load_fleet(fleet), load_workload(workload), seed=seed)
    except ScenarioError as exc:
        fail(f"{exc} (formats: examples/scheduling/README.md)")
    reports = compare(scenario, list(dict.fromkeys(names)))
    if as_json:
        typer.echo(json.dumps({r.policy: r.figures() for r in reports}, indent=2))
    else:
        out.print(
            _table(reports, operations=len(scenario.operations), workers=len(scenario.workers))
        )
    if plot is not None:
        _plot(reports, plot)


def _table(reports: list[PolicyReport], *, operations: int, workers: int) -> Table:
    table = Table(
        "policy",
        "makespan",
        "LB",
        "ratio",
        "wait mean",
        "wait p95",
        "util",
        "Jain",
        title=f"{operations} operations on {workers} workers (times in s, ratio = makespan / LB)",
    )
    for r in reports:
        table.add_row(
            r.policy,
            f"{r.makespan:.1f}",
            f"{r.lower_bound:.1f}",
            f"{r.ratio:.3f}",
            f"{r.wait_mean:.1f}",
            f"{r.wait_p95:.1f}",
            f"{r.utilisation:.0%}",
            f"{r.jain:.3f}",
        )
    return table


def _plot(reports: list[PolicyReport], path: Path) -> None:
    try:
        import matplotlib as mpl  # optional, and slow to import: only for --plot
    except ImportError:
        fail("--plot needs matplotlib: pip install 'workfleet[plot]'")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.policy for r in reports]
    figure, axes = plt.subplots(2, 2, figsize=(10, 7))
    (makespan, waits), (ratio, shares) = axes
    makespan.bar(names, [r.makespan for r in reports], color="tab:blue")
    makespan.axhline(reports[0].lower_bound, color="black", linestyle="--", label="lower bound")
    makespan.set(title="makespan (s)")
    makespan.legend()
    ratio.bar(names, [r.ratio for r in reports], color="tab:orange")
    ratio.axhline(1.10, color="black", linestyle=":", label="target 1.10")
    ratio.set(title="makespan / lower bound", ylim=(0.9, max(1.2, *(r.ratio for r in reports))))
    ratio.legend()
    width = 0.4
    positions = range(len(names))
    waits.bar(
        [p - width / 2 for p in positions], [r.wait_mean for r in reports], width, label="mean"
    )
    waits.bar([p + width / 2 for p in positions], [r.wait_p95 for r in reports], width, label="p95")
    waits.set(title="queue wait (s)", xticks=list(positions), xticklabels=names)
    waits.legend()
    shares.bar(
        [p - width / 2 for p in positions],
        [r.utilisation for r in reports],
        width,
        label="utilisation",
    )
    shares.bar([p + width / 2 for p in positions], [r.jain for r in reports], width, label="Jain")
    shares.set(
        title="utilisation and fairness", xticks=list(positions), xticklabels=names, ylim=(0, 1.05)
    )
    shares.legend(loc="lower right")
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    finally:
        plt.close(figure)
