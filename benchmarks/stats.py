"""Latency summaries for every benchmark (and every side of benchmarks/peers, whichever venv runs
it). `percentile` is the one of the loadtest scenarios (workfleet/harness/stats.py, standard
library only); src/ goes on the path because the peers' venv does not install workfleet."""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from workfleet.harness.stats import percentile


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
    }
