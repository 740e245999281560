"""The worker's state and decisions, shared by its routes and its background tasks."""

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import psutil
import structlog

from workfleet.domain.errors import Conflict, InvalidRequest, NotFound
from workfleet.domain.operations import Lease
from workfleet.observability import tracing
from workfleet.operations.registry import OperationType
from workfleet.protocol import (
    CapabilitiesModel,
    DispatchAccepted,
    DispatchRequest,
    LeaseModel,
    Progress,
    RunningOperation,
    WorkerHealth,
    WorkerOperationView,
    WorkerRegistration,
)
from workfleet.worker.execution_log import ExecutionLog
from workfleet.worker.reporter import Reporter
from workfleet.worker.runner import Job, JobEvent, Runner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Identity:
    worker_id: str
    worker_type: str
    capabilities: CapabilitiesModel
    operation_types: list[str]


class WorkerService:
    def __init__(
        self, identity: Identity, runner: Runner, operation_types: dict[str, OperationType]
    ) -> None:
        self.identity = identity
        self.runner = runner
        self.operation_types = operation_types
        self.reporter: Reporter | None = None
        self.execution_log: ExecutionLog | None = None
        self.instance_id = uuid.uuid4().hex
        # mtls: why this worker's certificate is about to fail it (see worker/certificates.py)
        self.certificate_problem: Callable[[], str | None] = lambda: None
        self.endpoint_url: str | None = None
        self.draining = False
        self.accepted_seq = 0
        self._started = time.monotonic()
        self._process = psutil.Process(os.getpid())
        psutil.cpu_percent(interval=None)  # prime: the first reading is meaningless

    # ---- dispatch -----------------------------------------------------------------------------

    def accept(self, request: DispatchRequest) -> DispatchAccepted:
        lease = Lease(request.lease.attempt, request.lease.token)
        existing = self.runner.jobs.get(request.operation_id)
        if existing is not None or self._reporting(request.operation_id, lease):
            if existing is None or existing.lease == lease:  # a retried dispatch: same answer
                return DispatchAccepted(
                    operation_id=request.operation_id, accepted_seq=self.accepted_seq
                )
            raise Conflict(f"{request.operation_id} already runs here under another lease")
        if self.draining:
            raise Conflict("draining: this worker accepts no new operations")
        if request.operation_type not in self.operation_types:
            raise InvalidRequest(f"this worker does not run {request.operation_type!r}")
        if self.runner.free_slots <= 0:
            raise Conflict(f"no free slot ({self.runner.slots} in use)")
        self.accepted_seq += 1
        assert self.reporter is not None
        job = Job(request.operation_id, request.operation_type, request.params, lease)
        job.trace = tracing.start(  # this attempt here, from acceptance to its end
            "execute",
            parent=request.traceparent,
            attributes={
                "operation_id": request.operation_id,
                "worker_id": self.identity.worker_id,
                "attempt": lease.attempt,
            },
        )
        self.reporter.track(request.operation_id, lease, trace=job.trace)
        self.runner.run(job)
        with tracing.activate(job.trace):
            log.info("operation_accepted", operation_id=request.operation_id, attempt=lease.attempt)
        return DispatchAccepted(operation_id=request.operation_id, accepted_seq=self.accepted_seq)

    def cancel(self, operation_id: str, lease: LeaseModel | None) -> None:
        job = self.runner.jobs.get(operation_id)
        if job is None or (lease is not None and job.lease != Lease(lease.attempt, lease.token)):
            raise NotFound(f"{operation_id} does not run here")
        self.runner.cancel(operation_id)

    def stop_operations(self, stops: list[RunningOperation]) -> None:
        """The backend says these attempts do not stand (or were cancelled): stop exactly
        those, never a newer attempt of the same operation."""
        for stop in stops:
            lease = Lease(stop.lease.attempt, stop.lease.token)
            if self.runner.cancel(stop.operation_id, lease):
                log.info("operation_stopped_on_request", operation_id=stop.operation_id)

    def abandon(self, operation_id: str, lease: Lease) -> None:
        self.runner.cancel(operation_id, lease)

    def on_job_event(self, event: JobEvent) -> None:
        reporter = self.reporter
        assert reporter is not None
        job = event.job
        if self.execution_log is not None and event.kind != "progress":
            self.execution_log.write(
                event.kind, job.operation_id, job.lease.attempt, outcome=event.outcome
            )
        if event.kind == "started" and job.started_at is not None:
            reporter.started(job.operation_id, job.started_at)
        elif event.kind == "progress":
            reporter.progress(job.operation_id, job.progress)
        elif event.kind == "finished":
            reporter.progress(job.operation_id, job.progress)
            reporter.finished(
                job.operation_id, event.outcome or "failed", event.result, event.error
            )

    # ---- views --------------------------------------------------------------------------------

    def operation(self, operation_id: str) -> WorkerOperationView:
        job = self.runner.jobs.get(operation_id)
        if job is None:
            raise NotFound(f"{operation_id} does not run here")
        return WorkerOperationView(
            operation_id=operation_id,
            lease=LeaseModel(attempt=job.lease.attempt, token=job.lease.token),
            state=job.state,
            progress=Progress.model_validate(job.progress) if job.progress else None,
        )

    def running(self) -> list[RunningOperation]:
        """Everything the backend must count as ours: running, and finished but unreported."""
        items = [
            RunningOperation(
                operation_id=job.operation_id,
                lease=LeaseModel(attempt=job.lease.attempt, token=job.lease.token),
                progress=Progress.model_validate(job.progress) if job.progress else None,
            )
            for job in self.runner.jobs.values()
        ]
        if self.reporter is not None:
            items += [
                RunningOperation(
                    operation_id=op_id, lease=LeaseModel(attempt=lease.attempt, token=lease.token)
                )
                for op_id, lease, _ in self.reporter.undelivered()
            ]
        return items

    def registration(self) -> WorkerRegistration:
        assert self.endpoint_url is not None
        return WorkerRegistration(
            worker_id=self.identity.worker_id,
            worker_type=self.identity.worker_type,
            endpoint_url=self.endpoint_url,
            capabilities=self.identity.capabilities,
            operation_types=self.identity.operation_types,
            instance_id=self.instance_id,
            accepted_seq=self.accepted_seq,
            running_operations=self.running(),
        )

    def health(self) -> WorkerHealth:
        slots = self.runner.slots
        active = len(self.runner.jobs)
        status = "draining" if self.draining else ("busy" if active >= slots else "idle")
        return WorkerHealth(
            # a 200 saying false still counts as a failure
            healthy=self.runner.broken is None and self.certificate_problem() is None,
            worker_id=self.identity.worker_id,
            worker_type=self.identity.worker_type,
            instance_id=self.instance_id,
            worker_status=status,
            current_load=active / slots,
            active_operations=active,
            slots=slots,
            accepted_seq=self.accepted_seq,
            running=self.running(),
            cpu_usage_ratio=self.cpu_ratio(),
            memory_usage_ratio=self.memory_ratio(),
            uptime_seconds=time.monotonic() - self._started,
        )

    def state(self) -> str:
        if self.draining:
            return "draining"
        return "busy" if self.runner.free_slots <= 0 else "idle"

    @staticmethod
    def cpu_ratio() -> float:
        return float(psutil.cpu_percent(interval=None)) / 100.0

    @staticmethod
    def memory_ratio() -> float:
        return float(psutil.virtual_memory().percent) / 100.0

    def _reporting(self, operation_id: str, lease: Lease) -> bool:
        return self.reporter is not None and self.reporter.is_tracking(operation_id, lease)
