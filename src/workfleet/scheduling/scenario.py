"""Simulation scenarios: a fleet and a workload, read from YAML and made concrete from a seed.

Fleet file::

    workers:
      - name: strong          # ids are the name, or name-1, name-2... when count > 1
        count: 1              # identical workers (default 1)
        cores: 16             # declared capabilities, as a worker registers them
        memory_gb: 64
        gpu: false
        slots: 1              # operations at once
        speed: 4.0            # units of work per second per slot: a number for every type,
                              # or per type: {backtesting: 4.0, training: 1.0} (default 1.0)
        types: [backtesting]  # operation types it runs (default: every type in the workload)
        worker_type: cpu      # default: gpu when gpu is true, else cpu

Workload file::

    seed: 7                   # default seed (--seed overrides)
    jitter: 0.1               # each operation's work is its size x uniform(1 - j, 1 + j)
    aging_interval_s: 300     # one priority level per interval waited
    groups:
      - count: 500
        type: backtesting     # size is in the type's size-hint unit (bars, samples x epochs...)
        size: {min: 1, max: 20, distribution: loguniform}  # or a number; default uniform
        submitter: alice
        priority: 0
        arrival: {at: 0}      # all at once; or {start: 0, rate: 2.0} (Poisson, per second)
                              # or {start: 0, end: 600} (uniform over the span)
        requirements: {gpu: preferred, min_memory_gb: 8, worker_type: null}

An operation runs on a worker for work / speed(worker, type) seconds. The simulated operations
carry params from which `size_hint` gives back their size, so placement sees what it would
see in the backend.
"""

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workfleet.domain.operations import GpuRequirement, Operation, Requirements
from workfleet.domain.placement import can_ever_run
from workfleet.domain.workers import Capabilities, Worker
from workfleet.validation import problems

EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)  # simulated time 0
NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
S = TypeVar("S", bound=BaseModel)


class ScenarioError(ValueError):
    """A fleet or workload that cannot be simulated; the message says why, in one line."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerSpec(_Spec):
    name: str = Field(pattern=NAME_PATTERN)
    count: int = Field(1, ge=1, le=100_000)
    cores: int = Field(1, ge=1, le=100_000)
    memory_gb: float = Field(1.0, gt=0)
    gpu: bool = False
    slots: int = Field(1, ge=1, le=10_000)
    speed: float | dict[str, float] = 1.0
    types: list[str] | None = Field(None, min_length=1)
    worker_type: str | None = None

    @model_validator(mode="after")
    def _positive_speeds(self) -> Self:
        speeds = self.speed.values() if isinstance(self.speed, dict) else [self.speed]
        if not all(math.isfinite(s) and s > 0 for s in speeds):
            raise ValueError("speeds must be positive numbers")
        return self


class FleetSpec(_Spec):
    workers: list[WorkerSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [w.name for w in self.workers]
        if len(set(names)) != len(names):
            raise ValueError("worker names must be unique")
        return self


class SizeRange(_Spec):
    min: float = Field(gt=0)
    max: float = Field(gt=0)
    distribution: Literal["uniform", "loguniform"] = "uniform"

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Burst(_Spec):
    at: float = Field(0.0, ge=0)


class Poisson(_Spec):
    start: float = Field(0.0, ge=0)
    rate: float = Field(gt=0, description="operations per second")


class Spread(_Spec):
    start: float = Field(0.0, ge=0)
    end: float = Field(gt=0)


class RequirementsSpec(_Spec):
    gpu: GpuRequirement = "none"
    min_memory_gb: float = Field(0.0, ge=0)
    worker_type: str | None = None


class GroupSpec(_Spec):
    count: int = Field(ge=1, le=1_000_000)
    type: str = Field(pattern=NAME_PATTERN)
    size: float | SizeRange = 1.0
    submitter: str = Field("default", pattern=NAME_PATTERN)
    priority: int = Field(0, ge=-1_000, le=1_000)
    arrival: Burst | Poisson | Spread = Burst()
    requirements: RequirementsSpec = RequirementsSpec()


class WorkloadSpec(_Spec):
    seed: int = 0
    jitter: float = Field(0.0, ge=0, lt=1)
    aging_interval_s: float = Field(300.0, gt=0)
    groups: list[GroupSpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class SimWorker:
    worker: Worker
    speeds: Mapping[str, float]  # units of work per second per slot, by operation type

    def seconds(self, operation_type: str, work: float) -> float:
        return work / self.speeds[operation_type]


@dataclass(frozen=True, slots=True)
class SimOperation:
    operation: Operation
    submit_s: float
    size: float  # what the size hint says
    work: float  # what it really takes: size x jitter


@dataclass(frozen=True, slots=True)
class Scenario:
    workers: tuple[SimWorker, ...]
    operations: tuple[SimOperation, ...]  # by submit time
    aging_interval_s: float


def load_fleet(path: Path) -> FleetSpec:
    return _load(path, FleetSpec, "fleet")


def load_workload(path: Path) -> WorkloadSpec:
    return _load(path, WorkloadSpec, "workload")


def _load(path: Path, model: type[S], what: str) -> S:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path} is not valid YAML: {_one_line(str(exc))}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a {what} file is a mapping (see `workfleet simulate --help`)")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = problems(exc, whole="(top)", limit=3)
        raise ScenarioError(f"{path}: not a {what} file: {found}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build(fleet: FleetSpec, workload: WorkloadSpec, *, seed: int | None = None) -> Scenario:
    """The concrete workers and operations; the same seed gives the same scenario."""
    rng = random.Random(workload.seed if seed is None else seed)
    types = sorted({group.type for group in workload.groups})
    workers = tuple(sim for spec in fleet.workers for sim in _workers(spec, types))
    raw: list[tuple[float, int, GroupSpec, float, float]] = []
    for index, group in enumerate(workload.groups):
        for submit_s in _arrivals(group.arrival, group.count, rng):
            size = _size(group.size, rng)
            work = size * rng.uniform(1 - workload.jitter, 1 + workload.jitter)
            raw.append((submit_s, index, group, size, work))
    raw.sort(key=lambda item: (item[0], item[1]))
    operations = tuple(
        _operation(number, submit_s, group, size, work)
        for number, (submit_s, _, group, size, work) in enumerate(raw)
    )
    _check_runnable(workers, operations)
    return Scenario(workers, operations, workload.aging_interval_s)


def _workers(spec: WorkerSpec, types: Sequence[str]) -> list[SimWorker]:
    runs = frozenset(spec.types if spec.types is not None else types)
    if isinstance(spec.speed, dict):
        speeds = {t: spec.speed[t] for t in runs if t in spec.speed}
        missing = sorted(runs.intersection(types) - set(speeds))
        if missing:
            raise ScenarioError(f"worker {spec.name}: no speed for {', '.join(missing)}")
    else:
        speeds = dict.fromkeys(runs, spec.speed)
    capabilities = Capabilities(
        cores=spec.cores,
        memory_gb=spec.memory_gb,
        gpu=spec.gpu,
        gpu_count=1 if spec.gpu else 0,
        slots=spec.slots,
    )
    worker_type = spec.worker_type or ("gpu" if spec.gpu else "cpu")
    ids = [spec.name] if spec.count == 1 else [f"{spec.name}-{i}" for i in range(1, spec.count + 1)]
    return [
        SimWorker(
            Worker(
                worker_id=worker_id,
                worker_type=worker_type,
                endpoint_url=f"sim://{worker_id}",
                capabilities=capabilities,
                operation_types=runs,
                registered_at=EPOCH,
            ),
            speeds,
        )
        for worker_id in ids
    ]


def _arrivals(arrival: Burst | Poisson | Spread, count: int, rng: random.Random) -> list[float]:
    if isinstance(arrival, Burst):
        return [arrival.at] * count
    if isinstance(arrival, Spread):
        return sorted(rng.uniform(arrival.start, arrival.end) for _ in range(count))
    times, t = [], arrival.start
    for _ in range(count):
        t += rng.expovariate(arrival.rate)
        times.append(t)
    return times


def _size(size: float | SizeRange, rng: random.Random) -> float:
    if not isinstance(size, SizeRange):
        return size
    if size.distribution == "loguniform":
        return math.exp(rng.uniform(math.log(size.min), math.log(size.max)))
    return rng.uniform(size.min, size.max)


def params_for(operation_type: str, size: float) -> dict[str, Any]:
    """Params whose size hint is `size` (see domain.runtime.size_hint)."""
    if operation_type == "backtesting":
        return {"bars": size}
    if operation_type == "training":
        return {"samples": size, "epochs": 1}
    if operation_type == "diagnostic":
        return {"action": "sleep", "seconds": size}
    return {"size": size}


def _operation(
    number: int, submit_s: float, group: GroupSpec, size: float, work: float
) -> SimOperation:
    req = group.requirements
    op = Operation(
        operation_id=f"op-{number:06d}",
        operation_type=group.type,
        params=params_for(group.type, size),
        owner=group.submitter,
        created_at=EPOCH + timedelta(seconds=submit_s),
        priority=group.priority,
        requirements=Requirements(
            gpu=req.gpu, min_memory_gb=req.min_memory_gb, worker_type=req.worker_type
        ),
    )
    return SimOperation(op, submit_s, size, work)


def _check_runnable(workers: Sequence[SimWorker], operations: Sequence[SimOperation]) -> None:
    first_of_class: dict[tuple[str, Requirements], Operation] = {}
    for sim in operations:
        op = sim.operation
        first_of_class.setdefault((op.operation_type, op.requirements), op)
    for (operation_type, req), op in first_of_class.items():
        if not any(can_ever_run(op, w.worker) for w in workers):
            raise ScenarioError(
                f"no worker of the fleet can run {operation_type} operations needing "
                f"gpu: {req.gpu}, min_memory_gb: {req.min_memory_gb:g}, "
                f"worker_type: {req.worker_type or 'any'}"
            )
