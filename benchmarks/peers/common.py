"""Helpers shared by every side of the peers benchmark.

Standard library only: this module is imported by the workfleet side (the project's venv) and by
the Celery and Dask sides (benchmarks/results/peers-venv). `percentile` and `summary` come from
benchmarks/stats.py, as in bench_core.py, so every column is computed the same way.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: stats.py
from stats import percentile, summary  # noqa: F401 - the sides use both


def burst_figures(count: int, submitted_s: float, total_s: float, **extra: Any) -> dict[str, Any]:
    return {
        "n": count,
        "submit_s": submitted_s,
        "total_s": total_s,
        "ops_per_s": count / total_s,
        "submits_per_s": count / submitted_s,
        **extra,
    }


def kill_figures(trials: list[dict[str, Any]], what: str) -> dict[str, Any]:
    """Seconds from the SIGKILL to the task's first line running again, per trial."""
    seen = [t["rerun_after_s"] for t in trials if t["rerun_after_s"] is not None]
    return {
        "what": what,
        "n": len(trials),
        "never": len(trials) - len(seen),
        "p50_s": percentile(seen, 50) if seen else None,
        "max_s": max(seen) if seen else None,
        "trials": trials,
    }


def read_starts(log_path: Path, tag: str) -> list[dict[str, Any]]:
    """Start records written by the long task's first line (one JSON object a line)."""
    try:
        lines = log_path.read_text().splitlines()
    except FileNotFoundError:
        return []
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if r.get("tag") == tag]


def wait_starts(log_path: Path, tag: str, count: int, timeout_s: float) -> list[dict[str, Any]]:
    """Poll (every 2 ms) until `count` starts of `tag` are recorded; fewer on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        starts = read_starts(log_path, tag)
        if len(starts) >= count or time.monotonic() > deadline:
            return starts
        time.sleep(0.002)


def loadavg() -> list[float]:
    return list(os.getloadavg())


def progress(system: str, text: str) -> None:
    print(f"[{system}] {text}", flush=True)


def describe(name: str, figures: dict[str, Any]) -> str:
    """One progress line for a step's figures."""
    if "p50_ms" in figures:
        return f"{name}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
    if "ops_per_s" in figures:
        return (
            f"{name}: {figures['ops_per_s']:.0f} ops/s ({figures['submits_per_s']:.0f} submits/s)"
        )
    p50 = figures.get("p50_s")
    shown = "never" if p50 is None else f"p50 {p50:.3f} s, max {figures['max_s']:.3f} s"
    return f"{name}: {shown} ({figures['never']} of {figures['n']} never re-ran)"


def side_parser(description: str) -> argparse.ArgumentParser:
    """The options run.py gives every side; a side adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--latency", type=int, default=600)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--round-trip", type=int, default=300)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--kill-trials", type=int, default=5)
    return parser
