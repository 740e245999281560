"""Requirements a worker must meet (domain/placement.py can_ever_run, unmet_requirements), the
labels workers advertise and operations select on (domain/labels.py), and where they are set:
the wire models, the worker's settings and flags, the diagnostic speed."""

import time
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from typer.testing import CliRunner

from workfleet.cli.main import app as cli
from workfleet.domain.labels import as_labels, format_labels, parse_labels, selects
from workfleet.domain.operations import Operation, Requirements
from workfleet.domain.placement import POLICY_NAMES, can_ever_run, unmet_requirements
from workfleet.domain.workers import Capabilities, Worker
from workfleet.operations.diagnostic import DiagnosticParams
from workfleet.operations.diagnostic import run as run_diagnostic
from workfleet.protocol import CapabilitiesModel, RequirementsModel
from workfleet.settings import BackendSettings, Placement, WorkerSettings

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_worker(**capabilities: Any) -> Worker:
    return Worker(
        worker_id="w1",
        worker_type="cpu",
        endpoint_url="http://w1.invalid:5003",
        capabilities=Capabilities(**capabilities),
        operation_types=frozenset({"diagnostic"}),
        registered_at=T0,
    )


def make_op(**requirements: Any) -> Operation:
    return Operation(
        operation_id="op_1",
        operation_type="diagnostic",
        params={},
        owner="alice",
        created_at=T0,
        requirements=Requirements(**requirements),
    )


# ---- labels ------------------------------------------------------------------------------------


def test_labels_are_kept_as_sorted_pairs_whatever_form_they_come_in() -> None:
    expected = (("disk", "nvme"), ("zone", "eu"))
    assert as_labels({"zone": "eu", "disk": "nvme"}) == expected
    assert as_labels([["zone", "eu"], ["disk", "nvme"]]) == expected  # as JSON gives pairs back
    assert Requirements(labels={"zone": "eu", "disk": "nvme"}).labels == expected  # type: ignore[arg-type]


def test_requirements_with_labels_are_hashable_and_equal_by_value() -> None:
    one = Requirements(labels=as_labels({"a": "1", "b": "2"}))
    other = Requirements(labels=as_labels({"b": "2", "a": "1"}))
    assert (one == other, hash(one) == hash(other)) == (True, True)


def test_a_selector_selects_the_workers_carrying_every_one_of_its_labels() -> None:
    worker = as_labels({"zone": "eu", "disk": "nvme"})
    assert selects((), worker)
    assert selects(as_labels({"zone": "eu"}), worker)
    assert not selects(as_labels({"zone": "us"}), worker)
    assert not selects(as_labels({"zone": "eu", "gpu": "a100"}), worker)


def test_labels_parse_from_k_equals_v_lists() -> None:
    assert parse_labels("zone=eu, disk=nvme") == {"zone": "eu", "disk": "nvme"}
    assert parse_labels(["zone=eu", "disk=nvme,rack=r7"]) == {
        "zone": "eu",
        "disk": "nvme",
        "rack": "r7",
    }
    assert parse_labels("") == {}
    assert format_labels(as_labels({"zone": "eu", "disk": "nvme"})) == "disk=nvme,zone=eu"


@pytest.mark.parametrize("bad", ["zone", "=eu", "zone=e u", "zone=eu,zone=us", "-x=1"])
def test_a_malformed_label_is_refused_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match="label"):
        parse_labels(bad)


# ---- matching ----------------------------------------------------------------------------------


def test_a_worker_with_too_few_cores_can_never_run_the_operation() -> None:
    assert can_ever_run(make_op(min_cores=8), make_worker(cores=8))
    assert not can_ever_run(make_op(min_cores=8), make_worker(cores=4))


def test_a_worker_without_a_selected_label_can_never_run_the_operation() -> None:
    selector = as_labels({"zone": "eu"})
    assert can_ever_run(make_op(labels=selector), make_worker(labels=as_labels({"zone": "eu"})))
    assert not can_ever_run(make_op(labels=selector), make_worker(labels=as_labels({"zone": "us"})))
    assert not can_ever_run(make_op(labels=selector), make_worker())


def test_unmet_requirements_names_each_one_as_the_submitter_wrote_it() -> None:
    req = Requirements(
        gpu="required",
        min_memory_gb=64,
        worker_type="gpu-box",
        min_cores=32,
        labels=as_labels({"zone": "eu"}),
    )
    assert unmet_requirements(req, make_worker(cores=4)) == [
        "worker_type 'gpu-box'",
        "gpu required",
        "min_memory_gb 64",
        "min_cores 32",
        "label zone=eu",
    ]


label_sets = st.dictionaries(
    st.sampled_from(["zone", "disk", "rack"]), st.sampled_from(["a", "b"]), max_size=3
)


@given(
    gpu=st.sampled_from(["required", "preferred", "none"]),
    worker_gpu=st.booleans(),
    min_memory_gb=st.sampled_from([0.0, 4.0, 16.0]),
    memory_gb=st.sampled_from([1.0, 8.0, 32.0]),
    min_cores=st.integers(0, 16),
    cores=st.integers(1, 16),
    worker_type=st.sampled_from([None, "cpu", "gpu"]),
    selector=label_sets,
    labels=label_sets,
)
def test_unmet_requirements_is_empty_exactly_when_the_worker_can_ever_run_the_operation(
    gpu: Any,
    worker_gpu: bool,
    min_memory_gb: float,
    memory_gb: float,
    min_cores: int,
    cores: int,
    worker_type: str | None,
    selector: dict[str, str],
    labels: dict[str, str],
) -> None:
    op = make_op(
        gpu=gpu,
        min_memory_gb=min_memory_gb,
        min_cores=min_cores,
        worker_type=worker_type,
        labels=as_labels(selector),
    )
    worker = make_worker(gpu=worker_gpu, memory_gb=memory_gb, cores=cores, labels=as_labels(labels))
    assert (unmet_requirements(op.requirements, worker) == []) == can_ever_run(op, worker)


# ---- the wire and the settings -----------------------------------------------------------------


def test_the_wire_takes_cores_and_a_label_selector_and_refuses_bad_labels() -> None:
    model = RequirementsModel(min_cores=4, labels={"zone": "eu-west"})
    assert Requirements(**model.model_dump()).labels == (("zone", "eu-west"),)
    with pytest.raises(ValidationError):
        RequirementsModel(labels={"zone": "not ok"})
    with pytest.raises(ValidationError):
        RequirementsModel(min_cores=-1)
    with pytest.raises(ValidationError):
        CapabilitiesModel(speed=0)


def test_the_placement_setting_offers_exactly_the_policies() -> None:
    assert get_args(Placement) == POLICY_NAMES


def test_the_backend_reads_its_placement_and_aging_interval_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLEET_PLACEMENT", "fastest")
    monkeypatch.setenv("WORKFLEET_AGING_INTERVAL_S", "60")
    settings = BackendSettings()
    assert (settings.placement, settings.aging_interval_s) == ("fastest", 60.0)
    monkeypatch.setenv("WORKFLEET_PLACEMENT", "random")
    with pytest.raises(ValidationError):
        BackendSettings()


def test_a_worker_reads_its_labels_and_speed_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WORKFLEET_LABELS", "zone=eu,disk=nvme")
    monkeypatch.setenv("WORKFLEET_SPEED", "4")
    settings = WorkerSettings()
    assert (settings.labels, settings.speed) == ({"zone": "eu", "disk": "nvme"}, 4.0)
    monkeypatch.setenv("WORKFLEET_LABELS", "zone")
    with pytest.raises(ValidationError, match="bad label"):
        WorkerSettings()


def test_a_bad_label_flag_is_one_clear_line() -> None:
    result = CliRunner().invoke(cli, ["worker", "--label", "zone=eu", "--label", "oops"])
    assert result.exit_code == 2
    assert "bad label 'oops'" in result.output


# ---- the diagnostic speed ----------------------------------------------------------------------


class _Context:
    operation_id = "op_1"

    def __init__(self, speed: float) -> None:
        self.speed = speed

    def report(self, **progress: Any) -> None:
        return None

    def raise_if_cancelled(self) -> None:
        return None


def test_a_diagnostic_sleep_lasts_its_seconds_divided_by_the_workers_speed() -> None:
    params = DiagnosticParams(action="sleep", seconds=0.4, steps=2)
    began = time.monotonic()
    run_diagnostic(params, _Context(speed=4.0))  # type: ignore[arg-type]
    assert 0.1 <= time.monotonic() - began < 0.3
