"""The explicit table of operation types; third-party types come in through the
`workfleet.operations` entry point group (each entry point names an OperationType)."""

import functools
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Final

import structlog
from pydantic import BaseModel, ValidationError

from workfleet.domain.errors import InvalidRequest
from workfleet.operations import diagnostic
from workfleet.operations.backtest.params import BacktestParams
from workfleet.operations.context import OperationContext
from workfleet.operations.training.params import TrainingParams
from workfleet.validation import problems

log = structlog.get_logger(__name__)
ENTRY_POINT_GROUP = "workfleet.operations"


Run = Callable[[Any, OperationContext], Any]


@dataclass(frozen=True, slots=True)
class OperationType:
    name: str
    params_model: type[BaseModel]
    # A "module:function" path is imported only where the operation runs (its executor
    # process), so the backend and the worker's main process stay free of heavy imports.
    run: Run | str
    worker_types: frozenset[str] = frozenset()  # empty: every worker type runs it
    # what a worker must have installed to run it, with the hint that installs it
    needs: tuple[str, ...] = ()
    install_hint: str = ""

    def missing_modules(self) -> list[str]:
        return [name for name in self.needs if importlib.util.find_spec(name) is None]

    def module(self) -> str | None:
        """The module its run function lives in, when named by path (to preload it)."""
        return self.run.partition(":")[0] if isinstance(self.run, str) else None


@functools.cache
def _import(path: str) -> Run:
    module, _, name = path.partition(":")
    function: Run = getattr(importlib.import_module(module), name)
    return function


def runner_of(operation_type: OperationType) -> Run:
    run = operation_type.run
    return _import(run) if isinstance(run, str) else run


BUILTIN: Final[Mapping[str, OperationType]] = {
    "diagnostic": OperationType("diagnostic", diagnostic.DiagnosticParams, diagnostic.run),
    "backtesting": OperationType(
        "backtesting",
        BacktestParams,
        "workfleet.operations.backtest.operation:run",
        worker_types=frozenset({"backtesting"}),
    ),
    "training": OperationType(
        "training",
        TrainingParams,
        "workfleet.operations.training.operation:run",
        worker_types=frozenset({"training"}),
        needs=("torch",),
        install_hint="pip install 'workfleet[training]'",
    ),
}


def load_operation_types() -> dict[str, OperationType]:
    types = dict(BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = entry.load()
        except Exception as exc:  # a broken plugin must not take the worker down
            log.error("operation_type_load_failed", entry_point=entry.name, error=str(exc))
            continue
        if not isinstance(plugin, OperationType) or plugin.name in BUILTIN:
            log.error("operation_type_rejected", entry_point=entry.name)
            continue
        types[plugin.name] = plugin
    return types


def types_for_worker(types: Mapping[str, OperationType], worker_type: str) -> list[str]:
    return sorted(
        t.name for t in types.values() if not t.worker_types or worker_type in t.worker_types
    )


def validate_params(
    types: Mapping[str, OperationType], operation_type: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Normalised params, or InvalidRequest naming what is wrong."""
    found = types.get(operation_type)
    if found is None:
        raise InvalidRequest(
            f"unknown operation type {operation_type!r}; known: {', '.join(sorted(types))}"
        )
    try:
        model = found.params_model.model_validate(params)
    except ValidationError as exc:
        raise InvalidRequest(
            f"invalid params for {operation_type}: {problems(exc, whole='params')}"
        ) from exc
    return model.model_dump(mode="json")
