"""The report of a load scenario: latency.png whenever the scenario recorded latencies (and
only then), and latency figures on one readable line of the summary."""

from pathlib import Path

import pytest

from workfleet.cli.loadtest import _figure
from workfleet.harness.ledger import History, reconcile
from workfleet.harness.report import write_report
from workfleet.harness.run import Mark, Result
from workfleet.harness.stats import distribution

pytestmark = pytest.mark.unit
PNG = b"\x89PNG\r\n\x1a\n"


def _result(latencies: dict[str, list[tuple[float, float]]]) -> Result:
    result = Result("latency", {}, reconcile(History(), [], []))
    result.marks = [Mark(2.0, "4 workers up")]
    result.samples = [(0.0, {"w01": "available"}), (1.0, {"w01": "busy"})]
    result.finished_at = [2.5, 3.0]
    result.latencies = latencies
    return result


def test_recorded_latencies_get_their_chart(tmp_path: Path) -> None:
    answers = [(2.0 + n / 5, 0.004 + n / 10_000) for n in range(40)]
    starts = [(t, 0.0) for t, _ in answers]  # a 0 ms sample must not break the log scale
    write_report(_result({"submit answered": answers, "submit -> start": starts}), tmp_path)
    assert (tmp_path / "latency.png").read_bytes()[:8] == PNG
    assert (tmp_path / "throughput.png").exists() and (tmp_path / "workers.png").exists()


def test_no_latencies_no_latency_chart(tmp_path: Path) -> None:
    write_report(_result({"submit answered": []}), tmp_path)
    assert (tmp_path / "report.json").exists() and not (tmp_path / "latency.png").exists()


def test_a_latency_figure_reads_count_first_then_percentiles() -> None:
    line = _figure(distribution([n / 1000 for n in range(1, 201)]))
    assert line == "N=200  p50=101.0 p90=180.0 p99=198.0 p99.9=200.0 max=200.0 ms"
    assert _figure({"count": 3}) == "{'count': 3}"
