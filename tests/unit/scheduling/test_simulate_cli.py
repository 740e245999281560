"""`workfleet simulate`, run as a user runs it: `python -m workfleet simulate ...`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[3] / "examples" / "scheduling"
KEYS = {"makespan", "lower_bound", "ratio", "wait_mean", "wait_p95", "utilisation", "jain"}


def simulate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workfleet", "simulate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("fleet", "workload"),
    [
        ("brief-weak-strong", "backtests-burst"),
        ("mixed-gpu", "mixed-training"),
        ("mixed-gpu", "two-submitters"),
    ],
)
def test_the_shipped_examples_print_every_figure_per_policy_as_json(
    fleet: str, workload: str
) -> None:
    done = simulate(
        "--fleet", EXAMPLES / f"{fleet}.yaml", "--workload", EXAMPLES / f"{workload}.yaml", "--json"
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert list(figures) == ["round_robin", "capacity", "fastest"]
    for policy in figures.values():
        assert set(policy) == KEYS
        assert policy["ratio"] >= 1 - 1e-9
        assert policy["ratio"] == pytest.approx(policy["makespan"] / policy["lower_bound"])


def test_the_table_names_each_policy_asked_for_and_draws_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "compare.png"
    done = simulate(
        "--fleet",
        EXAMPLES / "brief-weak-strong.yaml",
        "--workload",
        EXAMPLES / "backtests-burst.yaml",
        "--policy",
        "fastest",
        "--policy",
        "round_robin",
        "--seed",
        "3",
        "--plot",
        plot,
    )
    assert done.returncode == 0, done.stderr
    assert "fastest" in done.stdout and "round_robin" in done.stdout
    assert "capacity" not in done.stdout
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_a_bad_file_is_one_error_line_and_exit_code_2(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("workers:\n  - {name: w, cores: lots}\n")
    done = simulate("--fleet", fleet, "--workload", EXAMPLES / "backtests-burst.yaml")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "workers.0.cores" in lines[0]


def test_an_unknown_policy_is_refused_with_exit_code_2() -> None:
    done = simulate(
        "--fleet",
        EXAMPLES / "mixed-gpu.yaml",
        "--workload",
        EXAMPLES / "two-submitters.yaml",
        "--policy",
        "random",
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert "unknown policy 'random'" in done.stderr
