"""The link and lifecycle fault scenarios (harness/scenarios/links.py, lifecycle.py), run as
a user runs them: `workfleet loadtest NAME --json` in a subprocess, the ledger clean and the
scenario's own checks true. The lost answers run by default (shrunk); the rest are behind the
`slow` marker (`./scripts/test -m slow`): test_failures.py covers a restart under the same id
in the default tier. The poison operation that really kills its workers
is tested with the other fault scenarios in test_loadtest.py."""

from typing import Any

import pytest
from test_loadtest import assert_clean, loadtest


def passed(*args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report, ledger) of a scenario that must pass, every check of its own true."""
    code, report, log = loadtest(*args)
    ledger = assert_clean(code, report, log)
    assert all(report["checks"].values()), report["checks"]
    return report, ledger


def test_a_lost_dispatch_answer_is_confirmed_by_the_worker_not_run_again() -> None:
    report, ledger = passed("lost-dispatch-response", "--operations", "2", "--op-seconds", "0.5")
    assert report["figures"]["dispatches_unconfirmed"] >= 2  # the backend never heard back
    assert ledger["outcomes"] == {"completed": 2}
    assert ledger["executions"] == 2 and ledger["duplicate_executions"] == 0
    assert report["figures"]["ops"]["max_attempt"] == 1


def test_a_result_whose_answer_was_lost_is_sent_again_and_recorded_once() -> None:
    report, ledger = passed("lost-result-ack", "--operations", "1")
    assert report["figures"]["responses_lost"] >= 1
    assert ledger["outcomes"] == {"completed": 1} and ledger["double_terminal"] == 0
    assert report["figures"]["stale_reports_by_kind"].get("completion", 0) == 0


@pytest.mark.slow
def test_a_worker_restarted_under_its_id_supersedes_its_killed_attempt() -> None:
    report, ledger = passed("same-id-restart", "--operations", "2", "--op-seconds", "1")
    figures = report["figures"]
    assert figures["registry"] == ["w01", "w02"]  # one entry each, the new incarnation's
    assert figures["final_attempt"] > figures["killed_attempt"]
    assert ledger["outcomes"] == {"completed": 2}


@pytest.mark.slow
def test_a_worker_partitioned_past_its_removal_registers_anew_and_works_again() -> None:
    report, ledger = passed("long-partition")
    figures = report["figures"]
    assert figures["new_registrations"] == 2 and figures["started_after_heal"] >= 1
    labels = [f["label"] for f in report["faults"]]
    victim = figures["victim"]
    assert labels.index(f"{victim} removed") < labels.index(f"{victim} registered again")
    assert ledger["outcomes"] == {"completed": report["options"]["operations"]}


@pytest.mark.slow
def test_a_flapping_link_costs_at_most_one_unavailability_per_cut() -> None:
    report, ledger = passed("flapping")
    figures = report["figures"]
    assert figures["cuts"] >= 5 and figures["times_unavailable"] <= figures["cuts"]
    assert set(ledger["outcomes"]) == {"completed"}


@pytest.mark.slow
def test_latency_with_jitter_marks_no_worker_unavailable() -> None:
    report, ledger = passed(
        "jitter", "--operations", "15", "--latency-ms", "100", "--jitter-ms", "50"
    )
    figures = report["figures"]
    assert (report["options"]["delay_ms"], report["options"]["jitter_ms"]) == (100, 50)
    assert figures["health_timeout_s"] == 0.6 and figures["times_unavailable"] == 0
    assert figures["dispatch_ms_jittered"]["n"] == figures["dispatch_ms_reference"]["n"] == 15
    assert ledger["outcomes"] == {"completed": 30}


@pytest.mark.slow
def test_a_registration_storm_and_a_backend_restart_leave_one_entry_per_live_worker() -> None:
    report, ledger = passed("registration-storm")
    assert report["figures"]["backend_restarts"] == 1
    assert report["figures"]["registrations_after_restart"] >= 12
    assert ledger["outcomes"] == {"completed": report["options"]["operations"]}
