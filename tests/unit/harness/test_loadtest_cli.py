"""`workfleet loadtest` turns a result into its summary, its JSON and its exit status (the
scenario itself is replaced here: no processes, no sockets)."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from workfleet.cli import loadtest as cli
from workfleet.cli.main import app
from workfleet.harness.cluster import FAST
from workfleet.harness.ledger import History, Record, reconcile
from workfleet.harness.run import Mark, Options, Result
from workfleet.harness.scenarios import links
from workfleet.settings import BackendSettings

pytestmark = pytest.mark.unit


def _result(*, lose_one: bool) -> Result:
    history = History()
    for n in range(2):
        history.invoke(f"k{n}")
        history.ok(f"k{n}", f"op{n}")
    runs = [
        {
            "event": e,
            "operation_id": "op0",
            "attempt": 1,
            "worker_id": "w1",
            "outcome": "completed",
            "ts": 1.0,
        }
        for e in ("started", "finished")
    ]
    records = [Record("op0", "completed", 1, "w1")]
    if not lose_one:
        records.append(Record("op1", "cancelled", 0, None))
    result = Result("cascading", {"workers": 2}, reconcile(history, runs, records))
    result.figures = {"wall_s": 1.0}
    result.checks = {"drained": True}
    result.marks = [Mark(0.5, "kill w1")]
    result.samples = [(0.0, {"w1": "busy"}), (0.5, None), (1.0, {"w1": "available"})]
    result.finished_at = [0.4, 0.9]
    return result


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state: dict[str, Any] = {"lose_one": False}

    async def run_scenario(name: str, opts: Options, root: Path, say: Any) -> Result:
        state["opts"] = opts
        return _result(lose_one=state["lose_one"])

    monkeypatch.setattr(cli, "run_scenario", run_scenario)
    return state


def test_a_clean_run_exits_0_with_the_ledger_in_the_json(fake_run: dict[str, Any]) -> None:
    done = CliRunner().invoke(app, ["loadtest", "cascading", "--workers", "2", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["passed"] and report["ledger"]["lost"] == 0
    assert report["faults"] == [{"t": 0.5, "label": "kill w1"}]
    assert fake_run["opts"].workers == 2


def test_a_lost_operation_exits_1_and_names_it(fake_run: dict[str, Any]) -> None:
    fake_run["lose_one"] = True
    done = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["loadtest", "cascading"])
    assert done.exit_code == 1
    assert "FAILED" in done.stdout and "lost=1" in done.stdout and "op1" in done.stdout


def test_the_report_directory_gets_the_json_and_both_charts(
    fake_run: dict[str, Any], tmp_path: Path
) -> None:
    done = CliRunner().invoke(app, ["loadtest", "cascading", "--report", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert json.loads((tmp_path / "report.json").read_text())["scenario"] == "cascading"
    for chart in ("throughput.png", "workers.png"):
        assert (tmp_path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_schedule_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "schedule.json"
    bad.write_text("{not json")
    done = CliRunner().invoke(app, ["loadtest", "nemesis", "--schedule", str(bad)])
    assert done.exit_code == 2
    assert "cannot read the schedule" in done.output


def test_the_link_fault_options_reach_the_scenario(fake_run: dict[str, Any]) -> None:
    args = ["--latency-ms", "50", "--jitter-ms", "0", "--flap-seconds", "5", "--loss-percent", "30"]
    done = CliRunner().invoke(app, ["loadtest", "jitter", *args])
    assert done.exit_code == 0, done.output
    opts = fake_run["opts"]
    assert (opts.latency_ms, opts.jitter_ms, opts.flap_s, opts.loss_percent) == (50, 0, 5, 30)


def test_the_link_fault_options_default_to_what_the_scenarios_always_ran(
    fake_run: dict[str, Any],
) -> None:
    done = CliRunner().invoke(app, ["loadtest", "jitter"])
    assert done.exit_code == 0, done.output
    opts = fake_run["opts"]
    assert (opts.latency_ms, opts.jitter_ms, opts.flap_s, opts.loss_percent) == (200, 100, 20, 10)


@pytest.mark.parametrize(
    "option",
    [
        ["--latency-ms", "-1"],
        ["--jitter-ms", "-1"],
        ["--flap-seconds", "0.5"],
        ["--loss-percent", "-1"],
        ["--loss-percent", "101"],
    ],
)
def test_a_link_fault_option_out_of_range_is_refused(
    fake_run: dict[str, Any], option: list[str]
) -> None:
    done = CliRunner().invoke(app, ["loadtest", "jitter", *option])
    assert done.exit_code == 2 and option[0] in done.output
    assert "opts" not in fake_run  # refused before anything ran


def test_the_jitter_scenarios_health_timeout_follows_its_latency() -> None:
    assert links.health_timeout_s(0.2, 0.1) == 1.2  # twice the worst round trip
    env = links.SCENARIOS["jitter"].backend_env(Options(latency_ms=100, jitter_ms=50))
    assert env == {"WORKFLEET_HEALTH_TIMEOUT_S": "0.6", "WORKFLEET_HEALTH_INTERVAL_S": "0.25"}
    # a long latency stretches the interval, so the backend accepts the timeout (<= 10 of them)
    slow = links.SCENARIOS["jitter"].backend_env(Options(latency_ms=800, jitter_ms=200))
    assert slow == {"WORKFLEET_HEALTH_TIMEOUT_S": "4.0", "WORKFLEET_HEALTH_INTERVAL_S": "0.4"}
    BackendSettings(
        health_timeout_s=float(slow["WORKFLEET_HEALTH_TIMEOUT_S"]),
        health_interval_s=float(slow["WORKFLEET_HEALTH_INTERVAL_S"]),
    )
    # little or no latency: the usual timeout, not less
    assert (
        links.health_timeout_s(0.05, 0.0)
        == links.health_timeout_s(0.0, 0.0)
        == FAST.health_timeout_s
    )
