"""The arithmetic of the load scenarios, without processes or sockets: percentiles from the
intended send times, the open-loop schedule, per-window percentiles, the RSS trend, peak
concurrency, the health-check overhead's extrapolation and the soak's mix."""

import asyncio
import time
from collections import Counter

import pytest

from workfleet.harness.scenarios.load import (
    LARGE_PAYLOAD,
    core_pct,
    extrapolated_overhead_pct,
    kind_of,
    open_loop,
    rss_figures,
    soak_mix,
)
from workfleet.harness.stats import distribution, peak_overlap, percentile, trend, windows

pytestmark = pytest.mark.unit


def test_a_percentile_is_a_measured_value_at_its_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 51.0  # rank round(0.5 * 99) = 50, counted from 0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0 and percentile(values, 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input


def test_a_distribution_states_its_count_and_is_in_milliseconds() -> None:
    figures = distribution([n / 1000 for n in range(1, 1001)])  # 1 .. 1000 ms
    assert figures["n"] == 1000
    assert figures["p50_ms"] == 501.0 and figures["p90_ms"] == 900.0
    assert figures["p99_ms"] == 990.0 and figures["p99_9_ms"] == 999.0
    assert figures["max_ms"] == 1000.0
    assert distribution([]) == {"n": 0}


def test_latency_runs_from_the_intended_send_time_so_a_late_send_counts() -> None:
    """Three submits meant for t = 0, 0.2, 0.4 s; the loop was stalled and sent the last at
    1.0 s, answered at 1.01 s: its latency is 1.01 - 0.4, not the 10 ms the wire saw."""
    intended = [0.0, 0.2, 0.4]
    answered = [0.005, 0.206, 1.01]
    figures = distribution([a - i for a, i in zip(answered, intended, strict=True)])
    assert figures["n"] == 3 and figures["max_ms"] == pytest.approx(610.0)


async def test_the_open_loop_sends_on_schedule_whatever_the_answers_do() -> None:
    """The first send does not return until the last one has been sent: a closed loop would
    wait for it forever; the open loop sends every one at its own time."""
    rate, count = 200.0, 5
    intended: list[float] = []
    last_sent = asyncio.Event()

    async def send(at: float) -> None:
        intended.append(at)
        if len(intended) == count:
            last_sent.set()
        if len(intended) == 1:
            await last_sent.wait()

    before = time.time()
    await asyncio.wait_for(open_loop(count, rate, send), timeout=5)
    assert len(intended) == count
    start = intended[0]
    assert before <= start
    assert [round((at - start) * rate, 3) for at in intended] == [0, 1, 2, 3, 4]


def test_windows_group_samples_by_time_and_give_each_its_percentiles() -> None:
    samples = [(0.1, 0.001), (0.5, 0.002), (0.9, 0.003), (1.5, 0.010), (3.2, 0.020), (3.9, 0.04)]
    grouped = windows(samples, 1.0)
    assert [start for start, _ in grouped] == [0.0, 1.0, 3.0]  # the empty window is left out
    assert [d["n"] for _, d in grouped] == [3, 1, 2]
    assert grouped[0][1]["p50_ms"] == 2.0 and grouped[2][1]["p99_ms"] == 40.0


def test_the_trend_is_the_least_squares_slope_and_the_growth_end_to_end() -> None:
    leak = [(n, 1000.0 + 2.0 * n) for n in range(0, 1000, 100)]
    assert trend(leak) == pytest.approx((2.0, 1800.0))
    flat_with_a_bump = [(0, 10.0), (100, 14.0), (200, 10.0), (300, 10.0)]
    slope, growth = trend(flat_with_a_bump)
    assert slope == pytest.approx(-0.004) and growth == 0.0
    assert trend([(0, 5.0)]) == (0.0, 0.0)


def test_rss_figures_fit_after_the_warm_up_only() -> None:
    mb = 2**20
    readings = [(100, 100 * mb, 40), (200, 150 * mb, 41)]  # warm-up: imports, pools
    readings += [(n, 150 * mb + n * 1024, 40 + n // 400) for n in range(300, 1100, 100)]
    figures = rss_figures(readings, warmup=200)
    assert figures["rss_slope_kb_per_op"] == pytest.approx(1.0, abs=0.2)
    assert figures["rss_growth_mb"] == pytest.approx(0.98, abs=0.01)  # 1,000 KB since op 200
    assert figures["rss_mb"][0] == 100.0 and len(figures["fds"]) == 10
    assert figures["rss_fitted_from_op"] == 200
    assert figures["fds_spread"] == 2  # 40 .. 42 after the warm-up


def test_peak_overlap_counts_the_most_running_at_one_instant() -> None:
    assert peak_overlap([(0, 1), (0.5, 2), (0.6, 0.7), (3, 4)]) == 3
    assert peak_overlap([(0, 1), (1, 2)]) == 1  # one ends as the next starts
    assert peak_overlap([]) == 0


def test_health_overhead_scales_with_the_check_rate() -> None:
    """10 ms of CPU per operation without checks, 12 ms with a check every 0.1 s: at 10 s the
    checks run 100 times less often, so they add 0.02 ms, 0.2 %."""
    assert extrapolated_overhead_pct(12.0, 10.0, 0.1, 10.0) == pytest.approx(0.2)
    assert extrapolated_overhead_pct(10.0, 10.0, 0.1, 10.0) == 0.0
    # 100 workers every 10 s: 10 checks a second; at 1 ms each, 1 % of a core
    assert core_pct(100, 1.0) == pytest.approx(1.0)


def test_the_soak_mix_is_seeded_and_holds_the_designed_kinds() -> None:
    mix = soak_mix(1000, seed=3)
    assert mix == soak_mix(1000, seed=3)
    kinds = Counter(map(kind_of, mix))
    assert kinds["fail"] == 50 and kinds["large"] == 4 and kinds["backtesting"] == 10
    assert kinds["sleep"] + kinds["cpu"] + kinds["noop"] == 1000 - 64
    sleeps = [p["seconds"] for kind, p in mix if p.get("action") == "sleep"]
    assert min(sleeps) >= 0.05 and max(sleeps) <= 0.3
    _, large = next(op for op in mix if kind_of(op) == "large")
    assert len(large["payload"]) == LARGE_PAYLOAD
