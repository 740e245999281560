"""The `workfleet` command as a user runs it: real processes, real output."""

import os
import subprocess
import sys
from pathlib import Path

from workfleet.harness.cluster import Cluster, free_port


def workfleet(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "workfleet", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def test_up_runs_the_demo_on_the_embedded_default_and_stops(tmp_path: Path) -> None:
    done = workfleet(
        "up", "--demo", "--once", "--port", str(free_port()), cwd=tmp_path, env={"COLUMNS": "200"}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "workfleet is up" in done.stdout
    assert "admin key: wf_" in done.stdout
    for expected in (
        "noop",
        "sleep",
        "completed",
        "failed",
        "crashed",
        "DiagnosticFailure",
        "total_return",  # the backtests
        "test_accuracy",  # the training
        "baseline_accuracy",
    ):
        assert expected in done.stdout, expected
    data = tmp_path / ".workfleet"
    assert (data / "workfleet.db").is_file()
    assert oct((data / "cluster.token").stat().st_mode & 0o777) == "0o600"
    assert oct((data / "admin.key").stat().st_mode & 0o777) == "0o600"
    again = workfleet("up", "--once", "--port", str(free_port()), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (data / "admin.key").read_text().strip() in again.stdout  # same key, not a new one


def test_keys_create_prints_only_the_key(tmp_path: Path) -> None:
    done = workfleet(
        "keys",
        "create",
        "--role",
        "operator",
        "--name",
        "ci",
        env={"WORKFLEET_DATA_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith("wf_")
    listed = workfleet("keys", "list", env={"WORKFLEET_DATA_DIR": str(tmp_path), "COLUMNS": "200"})
    assert "ci" in listed.stdout and "operator" in listed.stdout
    assert done.stdout.strip().split(".", 1)[1] not in listed.stdout


def test_errors_are_one_clear_line_never_a_traceback(tmp_path: Path) -> None:
    port = free_port()
    cases = [
        (
            ["ops", "list", "--backend-url", f"http://127.0.0.1:{port}", "--api-key", "wf_x.y"],
            "cannot reach the backend",
        ),
        (["submit", "diagnostic", "--action", "explode"], "explode"),
        (["worker", "--slots", "0"], "slots"),
        (["backend", "--port", "99999"], "port"),
        (["keys", "revoke", "nope", "--data-dir", str(tmp_path)], "no key nope"),
    ]
    for args, expected in cases:
        done = workfleet(*args, env={"WORKFLEET_CLUSTER_TOKEN": "x" * 40})
        assert done.returncode != 0, args
        assert "Traceback" not in done.stderr + done.stdout, args
        assert expected in done.stderr + done.stdout, (args, done.stderr)


async def test_cli_against_a_running_fleet(cluster: Cluster) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    submitted = cluster.cli(
        "submit", "diagnostic", "--action", "sleep", "--seconds", "0.5", "--steps", "2", "--wait"
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "completed" in submitted.stdout
    operation_id = submitted.stdout.split()[1]
    assert operation_id in cluster.cli("ops", "list").stdout
    assert "completed" in cluster.cli("ops", "show", operation_id).stdout
    assert "w1" in cluster.cli("workers", "list").stdout
    assert "draining" in cluster.cli("workers", "drain", "w1").stdout
    assert "available" in cluster.cli("workers", "drain", "w1", "--undo").stdout
    failed = cluster.cli("submit", "diagnostic", "--action", "fail", "--wait")
    assert failed.returncode == 1 and "DiagnosticFailure" in failed.stdout
    refused = workfleet(
        "ops", "list", env={"WORKFLEET_BACKEND_URL": cluster.url, "WORKFLEET_API_KEY": "wf_abc.def"}
    )
    assert refused.returncode == 1
    assert "invalid credential" in refused.stderr and "Traceback" not in refused.stderr


async def test_a_worker_with_a_wrong_secret_stops_with_one_clear_line(cluster: Cluster) -> None:
    done = workfleet(
        "worker",
        "--port",
        "0",
        "--backend-url",
        cluster.url,
        env={"WORKFLEET_CLUSTER_TOKEN": "w" * 40, "WORKFLEET_LOG_LEVEL": "WARNING"},
        timeout=60,
    )
    assert done.returncode == 1
    assert "refused this worker's credentials" in done.stderr
    assert "Traceback" not in done.stderr
