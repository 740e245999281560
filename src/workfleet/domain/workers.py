"""Workers as the backend sees them, and the liveness rules applied to health results.

A worker's status is derived, never stored: draining and unavailability are facts recorded on
the worker; busy means the backend's own slot reservations fill every slot.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from workfleet.domain.labels import Labels, as_labels

WorkerStatus = Literal["available", "busy", "draining", "temporarily_unavailable"]
WORKER_STATUSES: tuple[WorkerStatus, ...] = (
    "available",
    "busy",
    "draining",
    "temporarily_unavailable",
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    cores: int = 1
    memory_gb: float = 1.0
    gpu: bool = False
    gpu_type: str | None = None
    gpu_count: int = 0
    gpu_memory_gb: float = 0.0
    slots: int = 1
    labels: Labels = ()  # what operations may select on (zone=eu, disk=nvme)
    speed: float = 1.0  # test workloads (diagnostic sleep, cpu) take seconds / speed here

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", as_labels(self.labels))


@dataclass(frozen=True, slots=True)
class Load:
    """What the worker last said about itself in /health."""

    current_load: float = 0.0
    cpu_usage_ratio: float = 0.0
    memory_usage_ratio: float = 0.0


@dataclass(frozen=True, slots=True)
class Worker:
    worker_id: str
    worker_type: str
    endpoint_url: str
    capabilities: Capabilities
    operation_types: frozenset[str]
    registered_at: datetime
    instance_id: str = ""
    last_healthy_at: datetime | None = None
    unavailable_since: datetime | None = None
    consecutive_failures: int = 0
    draining: bool = False
    last_dispatch_seq: int = 0  # order of the last dispatch here (0: never); round robin uses it
    load: Load = field(default_factory=Load)
    reserved: frozenset[str] = frozenset()  # operation ids holding a slot here

    @property
    def status(self) -> WorkerStatus:
        if self.unavailable_since is not None:
            return "temporarily_unavailable"
        if self.draining:
            return "draining"
        if len(self.reserved) >= self.capabilities.slots:
            return "busy"
        return "available"

    @property
    def free_slots(self) -> int:
        return max(0, self.capabilities.slots - len(self.reserved))


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    failure_threshold: int = 3
    removal_s: float = 300.0


def health_succeeded(worker: Worker, *, load: Load, at: datetime) -> Worker:
    """One success is enough to bring a worker back."""
    return replace(
        worker, consecutive_failures=0, unavailable_since=None, last_healthy_at=at, load=load
    )


def health_failed(worker: Worker, policy: LivenessPolicy, *, at: datetime) -> Worker:
    failures = worker.consecutive_failures + 1
    unavailable_since = worker.unavailable_since
    if unavailable_since is None and failures >= policy.failure_threshold:
        unavailable_since = at
    return replace(worker, consecutive_failures=failures, unavailable_since=unavailable_since)


def declare_unreachable(worker: Worker, policy: LivenessPolicy, *, at: datetime) -> Worker:
    """Skip the remaining checks: a refused connection after a dropped session is conclusive."""
    return replace(
        worker,
        consecutive_failures=max(worker.consecutive_failures, policy.failure_threshold),
        unavailable_since=worker.unavailable_since or at,
    )


def removal_due(worker: Worker, policy: LivenessPolicy, *, now: datetime) -> bool:
    since = worker.unavailable_since
    return since is not None and now - since >= timedelta(seconds=policy.removal_s)
