"""The report directory of `workfleet loadtest --report DIR`: report.json, the nemesis
schedule, and PNG charts with the faults marked: throughput, worker states over time, and
latency percentiles over time when the scenario recorded latencies. matplotlib is imported
here only (the optional `plot` extra)."""

import itertools
import json
from pathlib import Path
from typing import Any

from workfleet.harness.run import Result
from workfleet.harness.stats import windows

STATE_COLOURS = {
    "available": "#4caf50",
    "busy": "#1976d2",
    "draining": "#ff9800",
    "temporarily_unavailable": "#e53935",
    "absent": "#d0d0d0",
}
SERIES_COLOURS = ("#1976d2", "#e65100", "#2e7d32", "#6a1b9a")
MS_TICKS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
WINDOWS_PER_RUN = 8  # latency windows: about this many over the run, at least 1 s wide


def write_report(result: Result, directory: Path) -> None:
    (directory / "report.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.schedule is not None:
        (directory / "schedule.json").write_text(result.schedule.to_json() + "\n")
    import matplotlib as mpl

    mpl.use("Agg")
    _throughput_chart(result, directory / "throughput.png")
    _workers_chart(result, directory / "workers.png")
    if any(result.latencies.values()):
        _latency_chart(result, directory / "latency.png")


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


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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
    _save(figure, path)


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
    _save(figure, path)


def window_width(samples: list[tuple[float, float]]) -> float:
    span = max(t for t, _ in samples) - min(t for t, _ in samples)
    return float(max(1, round(span / WINDOWS_PER_RUN)))


def _latency_chart(result: Result, path: Path) -> None:
    """Each series' samples as faint dots, and its p50 (solid) and p99 (dashed) per window
    drawn at the window's middle: where the tail moves, and whether a fault moved it."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4))
    series = [(name, samples) for name, samples in result.latencies.items() if samples]
    width = min(window_width(samples) for _, samples in series)
    for (name, samples), colour in zip(series, itertools.cycle(SERIES_COLOURS), strict=False):
        ts, values = zip(*samples, strict=True)
        axes.scatter(ts, [v * 1000 for v in values], s=3, color=colour, alpha=0.25)
        grouped = windows(samples, width)
        middles = [start + width / 2 for start, _ in grouped]
        for figure_name, style in (("p50_ms", "-"), ("p99_ms", "--")):
            axes.plot(
                middles,
                [d[figure_name] for _, d in grouped],
                color=colour,
                linestyle=style,
                marker="o",  # a run shorter than one window still shows its point
                markersize=3,
                label=f"{name} {figure_name.removesuffix('_ms')}",
            )
    axes.set_yscale("symlog", linthresh=1.0)  # log-like, and a 0 ms sample still shows
    low, high = axes.get_ylim()
    ticks = [t for t in MS_TICKS if low <= t <= high]
    axes.set_yticks(ticks, [f"{t:g}" for t in ticks])
    axes.set_xlim(left=0)
    axes.set_xlabel(f"seconds since start (percentiles per {width:g} s window)")
    axes.set_ylabel("milliseconds")
    axes.set_title(f"{result.scenario}: latency (dots: samples; red lines: faults)")
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _mark_faults(axes, result)
    _save(figure, path)
