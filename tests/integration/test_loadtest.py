"""`workfleet loadtest` as a user runs it: a subprocess that starts its own fleet, hurts it,
and prints one JSON object whose `ledger` must be clean. The fast tier runs by default
(cascading failures on 6 workers, the frozen worker's late result); the heavier scenarios
are behind the `slow` marker: `./scripts/test -m slow tests/integration/test_loadtest.py`."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

INVARIANTS = ("lost", "stuck", "double_terminal", "unexpected", "stale_accepted")


def loadtest(*args: str, timeout: float = 240) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    done = subprocess.run(
        [sys.executable, "-m", "workfleet", "loadtest", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no JSON on stdout (exit {done.returncode}):\n{done.stderr[-4000:]}"
    return done.returncode, json.loads(lines[-1]), done.stderr


def assert_clean(code: int, report: dict[str, Any], log: str) -> dict[str, Any]:
    ledger: dict[str, Any] = report["ledger"]
    assert code == 0 and report["passed"], f"{json.dumps(report, indent=1)}\n{log[-3000:]}"
    assert all(ledger[name] == 0 for name in INVARIANTS), ledger
    assert ledger["acknowledged"] == ledger["terminal"] > 0
    return ledger


def test_cascading_failures_of_half_the_fleet_lose_nothing(tmp_path: Path) -> None:
    """The report directory (logs, execution logs, charts) stays in tmp_path for a post-mortem."""
    code, report, log = loadtest(
        "cascading",
        "--workers",
        "6",
        "--operations",
        "40",
        "--seed",
        "7",
        "--report",
        str(tmp_path),
    )
    ledger = assert_clean(code, report, log)
    assert (tmp_path / "workers.png").exists() and (tmp_path / "cluster" / "backend.log").exists()
    assert report["options"]["max_losses"] == 4
    assert ledger["outcomes"] == {"completed": 40}
    assert len(report["figures"]["killed"]) == 3
    assert ledger["metrics_checked"] and ledger["metrics_mismatch"] == 0
    assert sum(1 for f in report["faults"] if f["label"].startswith("kill ")) == 3


def test_a_frozen_workers_late_report_is_refused_as_stale_and_counted() -> None:
    code, report, log = loadtest("frozen")
    ledger = assert_clean(code, report, log)
    assert sum(report["figures"]["stale_reports_by_kind"].values()) >= 1
    assert ledger["stale_rejected"] <= 1  # the result, unless its progress was refused first
    assert ledger["duplicate_executions"] == 1 and ledger["zombie_finishes"] == 1
    assert report["checks"]["late_report_refused"]


def test_an_unknown_scenario_or_a_missing_matplotlib_is_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    unknown = subprocess.run(
        [sys.executable, "-m", "workfleet", "loadtest", "chaos-monkey"],
        env=env | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2
    assert "unknown scenario 'chaos-monkey'" in unknown.stderr
    hide_matplotlib = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from workfleet.cli.entry import main; "
        f"sys.argv = ['workfleet', 'loadtest', 'frozen', '--report', {str(tmp_path)!r}]; main()"
    )
    missing = subprocess.run(
        [sys.executable, "-c", hide_matplotlib],
        env=env | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "pip install 'workfleet[plot]'" in missing.stderr
    assert missing.stderr.count("\n") == 1  # no traceback


@pytest.mark.slow
def test_baseline_throughput_of_ten_workers_is_near_the_ideal() -> None:
    code, report, log = loadtest("baseline", "--workers", "10", "--operations", "200")
    assert_clean(code, report, log)
    assert report["figures"]["efficiency"] >= 0.85, report["figures"]


@pytest.mark.slow
def test_cascading_kills_five_of_ten_workers_under_100_operations() -> None:
    code, report, log = loadtest("cascading", "--workers", "10", "--operations", "100")
    ledger = assert_clean(code, report, log)
    assert ledger["outcomes"] == {"completed": 100}


@pytest.mark.slow
def test_a_partitioned_worker_goes_unavailable_and_comes_back() -> None:
    code, report, log = loadtest("partition")
    assert_clean(code, report, log)
    figures = report["figures"]
    assert figures["unavailable_after_s"] >= figures["threshold_s"]
    labels = [f["label"] for f in report["faults"]]
    victim = figures["victim"]
    assert labels.index(f"{victim} unavailable") < labels.index(f"{victim} available")


@pytest.mark.slow
def test_a_poison_operation_fails_after_its_attempts_and_the_rest_complete() -> None:
    code, report, log = loadtest("poison", "--operations", "20")
    ledger = assert_clean(code, report, log)
    assert ledger["outcomes"] == {"completed": 20, "failed": 1}
    assert report["figures"]["workers_killed"] == 3


@pytest.mark.slow
def test_the_backend_killed_twice_under_load_loses_nothing() -> None:
    code, report, log = loadtest("backend-kill")
    ledger = assert_clean(code, report, log)
    assert report["figures"]["backend_restarts"] == 2
    assert ledger["outcomes"] == {"completed": 60}


@pytest.mark.slow
def test_a_nemesis_run_is_clean_writes_its_report_and_replays(tmp_path: Path) -> None:
    first = tmp_path / "first"
    code, report, log = loadtest(
        "nemesis", "--duration", "20", "--seed", "11", "--report", str(first)
    )
    assert_clean(code, report, log)
    assert {p.name for p in first.iterdir()} >= {
        "report.json",
        "schedule.json",
        "throughput.png",
        "workers.png",
    }
    code, again, log = loadtest("nemesis", "--schedule", str(first / "report.json"), "--seed", "99")
    assert_clean(code, again, log)
    assert again["schedule"] == report["schedule"]
