"""Percentiles, latency distributions, per-window percentiles, least-squares trends and peak
overlap: the arithmetic of load figures, free of I/O so it is tested on its own.

Standard library only: benchmarks/stats.py imports `percentile` from here, and the peers'
benchmark sides run it in a venv where workfleet is not installed (they put src/ on the path),
so benchmarks and loadtest scenarios compute percentiles by one definition."""

import statistics
from collections.abc import Sequence

QUANTILES = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p99_9_ms": 99.9}


def percentile(values: Sequence[float], q: float) -> float:
    """The value at rank q % of the sorted values (the nearest of n - 1 steps: no
    interpolation, so every percentile is a value that was measured)."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def distribution(values_s: Sequence[float]) -> dict[str, float]:
    """Count, p50 / p90 / p99 / p99.9 and max in milliseconds. The count comes first because
    it says what the tail rests on: a p99 of 200 samples is the second-largest of them."""
    if not values_s:
        return {"n": 0}
    ms = sorted(value * 1000 for value in values_s)
    figures = {name: round(percentile(ms, q), 3) for name, q in QUANTILES.items()}
    return {"n": len(ms), **figures, "max_ms": round(ms[-1], 3)}


def windows(
    samples: Sequence[tuple[float, float]], width_s: float
) -> list[tuple[float, dict[str, float]]]:
    """(t, value) samples grouped into windows of `width_s` by t: each non-empty window's
    start and the distribution of its values (so a chart shows the tail moving over time)."""
    grouped: dict[int, list[float]] = {}
    for t, value in samples:
        grouped.setdefault(int(t // width_s), []).append(value)
    return [(index * width_s, distribution(grouped[index])) for index in sorted(grouped)]


def trend(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The least-squares slope of y over x, and the growth from the first point to the last
    (a slope alone can come from a single outlier; growth alone from noise at the ends)."""
    if len(points) < 2:
        return 0.0, 0.0
    xs, ys = zip(*points, strict=True)
    slope, _ = statistics.linear_regression(xs, ys)
    return slope, ys[-1] - ys[0]


def peak_overlap(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant; one ending when another starts
    does not count as overlapping it."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, change in events:  # at equal times the end (-1) sorts before the start (+1)
        open_now += change
        peak = max(peak, open_now)
    return peak
