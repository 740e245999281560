"""A worker whose operation types need something missing refuses to start, saying what."""

import pytest

from workfleet.operations import registry
from workfleet.operations.registry import OperationType
from workfleet.operations.training.params import TrainingParams
from workfleet.settings import ConfigurationError
from workfleet.worker import app


def test_the_training_type_needs_torch_and_finds_it_here() -> None:
    training = registry.BUILTIN["training"]
    assert training.needs == ("torch",)
    assert training.missing_modules() == []
    assert training.module() == "workfleet.operations.training.operation"


def test_a_worker_refuses_types_whose_needs_are_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    needy = OperationType(
        "training",
        TrainingParams,
        "workfleet.operations.training.operation:run",
        worker_types=frozenset({"training"}),
        needs=("workfleet_module_that_is_not_installed",),
        install_hint="pip install the-thing",
    )
    monkeypatch.setattr(app, "load_operation_types", lambda: {"training": needy})
    with pytest.raises(ConfigurationError) as refused:
        app.offered_operation_types("training")
    message = str(refused.value)
    assert "workfleet_module_that_is_not_installed" in message
    assert "pip install the-thing" in message
    assert app.offered_operation_types("backtesting") == {}
