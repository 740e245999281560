"""`workfleet loadtest` turns a result into its summary, its JSON and its exit status (the
scenario itself is replaced here: no processes, no sockets)."""

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from workfleet.cli import loadtest as cli
from workfleet.cli.main import app
from workfleet.harness.ledger import History, Record, reconcile
from workfleet.harness.run import Mark, Options, Result

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
