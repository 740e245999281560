"""The load scenarios of `workfleet loadtest` as a user runs them (a subprocess starting its own
fleet, one JSON object on stdout). Behaviour only: everything completes, the ledger is clean,
the figures are there with the right counts, the charts are written. Timing thresholds are the
scenarios' own checks and benchmarks' business, never asserted here (this machine is shared).
The short latency run and the concurrent burst run by default; health-overhead and soak are
behind `slow`: `./scripts/test -m slow tests/integration/test_loadtest_load.py`."""

from pathlib import Path
from typing import Any

import pytest
from test_loadtest import INVARIANTS, loadtest  # the subprocess and the invariants it checks

TIMING_CHECKS = {"submit_to_start_p99_under_100ms", "overhead_under_5pct"}
LATENCY_FIGURES = ("p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")


def assert_behaved(report: dict[str, Any], log: str) -> dict[str, Any]:
    """The ledger is clean and every check that is not about timing passed."""
    ledger: dict[str, Any] = report["ledger"]
    failed = {name for name, ok in report["checks"].items() if not ok} - TIMING_CHECKS
    assert not failed, f"{failed}: {report['figures']}\n{log[-3000:]}"
    assert all(ledger[name] == 0 for name in INVARIANTS), ledger
    assert ledger["acknowledged"] == ledger["terminal"] > 0
    assert ledger["metrics_checked"] and ledger["metrics_mismatch"] == 0
    return ledger


def assert_distribution(figure: dict[str, Any], n: int) -> None:
    assert figure["n"] == n, figure
    assert all(figure[name] >= 0 for name in LATENCY_FIGURES), figure


def test_open_loop_latency_reports_percentiles_of_every_submit(tmp_path: Path) -> None:
    """20 submits at 5/s: each of the three latencies has 20 samples, a slot was always idle,
    and the report has the latency chart."""
    _, report, log = loadtest(
        "latency", "--operations", "20", "--workers", "2", "--report", str(tmp_path)
    )
    ledger = assert_behaved(report, log)
    assert ledger["outcomes"] == {"completed": 20}
    figures = report["figures"]
    for name in ("submit_latency", "submit_to_start_backend", "submit_to_start_client"):
        assert_distribution(figures[name], 20)
    assert figures["rate_per_s"] == 5.0 and figures["peak_running"] < figures["slots"]
    assert (tmp_path / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_a_hundred_concurrent_submits_all_end_once_with_no_worker_unavailable() -> None:
    _, report, log = loadtest("concurrent", "--op-seconds", "0.2")
    ledger = assert_behaved(report, log)
    assert ledger["outcomes"] == {"completed": 100}
    assert report["figures"]["workers_seen_unavailable"] == []
    assert report["figures"]["submits_not_answered_first_time"] == []
    assert_distribution(report["figures"]["submit_latency"], 100)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_health_overhead_is_measured_on_both_sides_and_extrapolated(tmp_path: Path) -> None:
    _, report, log = loadtest("health-overhead", "--report", str(tmp_path), timeout=400)
    assert_behaved(report, log)
    figures = report["figures"]
    fast, off = figures["checks_every_0.1s"], figures["checks_off"]
    assert fast["completed"] == off["completed"] == 100
    assert fast["health_checks"] > 0 and off["health_checks"] == 0
    assert isinstance(figures["overhead_pct_at_10s"], float)
    assert (tmp_path / "cluster" / "checks-off" / "backend.log").exists()


@pytest.mark.slow
@pytest.mark.timeout(620)
def test_a_soak_of_2000_mixed_operations_fails_only_the_designed_ones(tmp_path: Path) -> None:
    _, report, log = loadtest("soak", "--report", str(tmp_path), timeout=600)
    ledger = assert_behaved(report, log)
    figures = report["figures"]
    assert ledger["outcomes"]["failed"] == figures["designed_failures"] == 100
    assert ledger["outcomes"]["completed"] == 1900
    assert len(figures["rss_mb"]) == len(figures["fds"]) == 20
    assert figures["rss_fitted_from_op"] == 1000
    assert_distribution(figures["submit_to_start_backend"], 2000)
    assert (tmp_path / "latency.png").exists()
