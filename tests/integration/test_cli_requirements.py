"""`workfleet submit ... --gpu/--min-memory-gb/--min-cores/--worker-type/--require-label`: bad
values stop before anything is sent, with one line naming the flag; an unsatisfiable requirement
gets the backend's 422 naming what nobody meets; a satisfiable one runs where it may."""

import pytest
from typer.testing import CliRunner

from workfleet.cli.main import app as cli
from workfleet.harness.cluster import Cluster, free_port

NOWHERE = f"http://127.0.0.1:{free_port()}"  # nothing listens: a bad flag must fail before


@pytest.mark.parametrize(
    ("command", "flags", "expected"),
    [
        ("diagnostic", ["--gpu", "maybe"], "--gpu 'maybe': Input should be 'required', 'pref"),
        ("diagnostic", ["--min-memory-gb", "lots"], "--min-memory-gb 'lots': Input should be a"),
        ("diagnostic", ["--min-memory-gb", "-1"], "--min-memory-gb '-1': Input should be greater"),
        ("diagnostic", ["--min-memory-gb", "nan"], "--min-memory-gb"),
        ("diagnostic", ["--min-memory-gb", "inf"], "--min-memory-gb 'inf': must be a finite"),
        ("diagnostic", ["--min-cores", "1.5"], "--min-cores '1.5': Input should be a valid int"),
        ("diagnostic", ["--min-cores", "-2"], "--min-cores '-2': Input should be greater"),
        ("diagnostic", ["--worker-type", " "], "--worker-type: must not be empty"),
        ("diagnostic", ["--require-label", "zone"], "--require-label: bad label 'zone'"),
        (
            "diagnostic",
            ["--require-label", "zone=eu", "--require-label", "zone=us"],
            "--require-label: label 'zone' given twice",
        ),
        (
            "backtest",
            [
                *("--symbol", "BTCUSDT", "--timeframe", "1h", "--strategy", "sma_crossover"),
                *("--min-cores", "many"),
            ],
            "--min-cores 'many'",
        ),
        (
            "training",
            ["--symbol", "BTCUSDT", "--timeframe", "1h", "--gpu", "always"],
            "--gpu 'always'",
        ),
    ],
)
def test_a_bad_requirement_fails_before_submit_with_one_line(
    command: str, flags: list[str], expected: str
) -> None:
    result = CliRunner(env={"COLUMNS": "300"}).invoke(
        cli, ["submit", command, *flags, "--backend-url", NOWHERE, "--api-key", "wf_a.b"]
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "cannot reach" not in result.stderr  # nothing was sent


async def test_requirements_from_the_command_line_reach_the_backend(cluster: Cluster) -> None:
    await cluster.start_worker(
        "w1", env={"WORKFLEET_CORES": "2", "WORKFLEET_LABELS": "zone=eu,disk=nvme"}
    )
    await cluster.wait_workers("w1")

    refused = cluster.cli("submit", "diagnostic", "--min-cores", "64", "--gpu", "required")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "(HTTP 422)" in refused.stderr and "Traceback" not in refused.stderr
    assert "no registered worker can ever run this diagnostic operation" in refused.stderr
    assert "none meets gpu required, min_cores 64" in refused.stderr
    assert refused.stderr.count("\n") == 1

    elsewhere = cluster.cli("submit", "diagnostic", "--require-label", "zone=us")
    assert elsewhere.returncode == 1 and "none meets label zone=us" in elsewhere.stderr

    ran = cluster.cli(
        "submit",
        "diagnostic",
        "--gpu",
        "preferred",
        "--min-memory-gb",
        "0.25",
        "--min-cores",
        "2",
        "--worker-type",
        "backtesting",
        "--require-label",
        "zone=eu",
        "--require-label",
        "disk=nvme",
        "--priority",
        "3",
        "--wait",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "completed" in ran.stdout and "w1" in ran.stdout
    assert (
        "gpu preferred, min_memory_gb 0.25, min_cores 2, worker_type backtesting, "
        "label disk=nvme, label zone=eu"
    ) in ran.stdout
