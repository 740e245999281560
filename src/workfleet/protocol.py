"""The wire contract: pydantic models of every request and response body.

Backend and worker meet only through these models. Unknown fields are refused on requests
(`extra="forbid"`), so a typo in a client payload is an error rather than a silent default.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from workfleet.domain.labels import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, MAX_LABELS
from workfleet.domain.operations import GpuRequirement, OperationStatus, Outcome
from workfleet.domain.workers import WorkerStatus

MAX_PRIORITY = 9


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN)]
LabelMap = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]


# ---- operations (client <-> backend) ----------------------------------------------------------


class RequirementsModel(Request):
    gpu: GpuRequirement = "none"
    min_memory_gb: float = Field(0.0, ge=0)
    worker_type: str | None = None
    min_cores: int = Field(0, ge=0, le=100_000)
    labels: LabelMap = Field(
        default_factory=dict, description="selector: the worker must carry every one of these"
    )


class OperationCreate(Request):
    operation_type: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(0, ge=0, le=MAX_PRIORITY, description="0 (lowest) to 9 (highest)")
    requirements: RequirementsModel = Field(default_factory=RequirementsModel)


class OperationBatchItem(OperationCreate):
    idempotency_key: str | None = Field(None, max_length=256)


class OperationBatchCreate(Request):
    operations: list[OperationBatchItem] = Field(min_length=1, max_length=1000)


class Progress(BaseModel):
    """Common progress fields; operation types add their own (epoch, loss, running P&L...)."""

    model_config = ConfigDict(extra="allow")

    percentage: float | None = Field(None, ge=0, le=100)
    message: str | None = None
    current_step: int | None = None
    total_steps: int | None = None
    items_done: int | None = None
    items_total: int | None = None
    updated_at: datetime | None = None


class ErrorView(BaseModel):
    type: str
    message: str
    traceback: str | None = None


class OperationView(BaseModel):
    operation_id: str
    operation_type: str
    status: OperationStatus
    params: dict[str, Any]
    priority: int
    requirements: RequirementsModel
    owner: str
    worker_id: str | None
    attempt: int
    progress: Progress | None
    result: Any
    error: ErrorView | None
    created_at: datetime
    dispatched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    trace_id: str | None


class OperationsPage(BaseModel):
    items: list[OperationView]
    next_cursor: str | None


class OperationsAccepted(BaseModel):
    items: list[OperationView]


class LegacyStartResponse(BaseModel):
    """Seed-compatible body of /backtests/start and /training/start."""

    success: bool
    operation_id: str
    status: str
    message: str


# ---- workers (worker <-> backend) -------------------------------------------------------------


class CapabilitiesModel(Request):
    cores: int = Field(1, ge=1)
    memory_gb: float = Field(1.0, ge=0)
    gpu: bool = False
    gpu_type: str | None = None
    gpu_count: int = Field(0, ge=0)
    gpu_memory_gb: float = Field(0.0, ge=0)
    slots: int = Field(1, ge=1, le=1024)
    labels: LabelMap = Field(default_factory=dict, description="what operations may select on")
    speed: float = Field(
        1.0, gt=0, le=1000, description="test workloads (diagnostic sleep, cpu) take seconds/speed"
    )


class LeaseModel(Request):
    attempt: int = Field(ge=1)
    token: str = Field(min_length=8, max_length=128)


class RunningOperation(Request):
    operation_id: str
    lease: LeaseModel
    progress: Progress | None = None


class WorkerRegistration(Request):
    worker_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
    worker_type: str = Field(min_length=1, max_length=64)
    endpoint_url: str = Field(pattern=r"^https?://", max_length=512)
    capabilities: CapabilitiesModel = Field(default_factory=CapabilitiesModel)
    operation_types: list[str]
    instance_id: str = Field(min_length=1, max_length=64)
    accepted_seq: int = Field(0, ge=0)
    running_operations: list[RunningOperation] = Field(default_factory=list)

    @field_validator("endpoint_url")
    @classmethod
    def _reachable_form(cls, url: str) -> str:
        """A URL the backend can call later: a host, and a port if one is given."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a usable URL: {exc}") from exc
        if not parsed.host:
            raise ValueError("the URL has no host")
        return url


class RegistrationAccepted(BaseModel):
    worker_id: str
    status: WorkerStatus
    stop_operations: list[RunningOperation] = Field(
        description="attempts the worker reported that it must stop (lease not current, or a "
        "cancel was requested); only those exact leases"
    )


class LoadView(BaseModel):
    current_load: float
    cpu_usage_ratio: float
    memory_usage_ratio: float


class WorkerView(BaseModel):
    worker_id: str
    worker_type: str
    endpoint_url: str
    status: WorkerStatus
    capabilities: CapabilitiesModel
    operation_types: list[str]
    load: LoadView
    running_operations: list[str]
    registered_at: datetime
    last_healthy_at: datetime | None
    unavailable_since: datetime | None
    consecutive_failures: int


class WorkersPage(BaseModel):
    items: list[WorkerView]


class ProgressReport(Request):
    lease: LeaseModel
    progress: Progress | None = None
    started_at: datetime | None = None


class CompletionReport(Request):
    lease: LeaseModel
    outcome: Outcome
    result: Any = None
    error: ErrorView | None = None
    started_at: datetime | None = None
    progress: Progress | None = None


class ReportItem(Request):
    """One operation's news: progress, or (with `outcome`) its final result."""

    operation_id: str
    lease: LeaseModel
    progress: Progress | None = None
    started_at: datetime | None = None
    outcome: Outcome | None = None
    result: Any = None
    error: ErrorView | None = None


class ReportBatch(Request):
    reports: list[ReportItem] = Field(min_length=1, max_length=1000)


class ReportOutcome(BaseModel):
    operation_id: str
    status: int = Field(description="200 recorded, 404 unknown operation, 409 stale lease")


class ReportResults(BaseModel):
    results: list[ReportOutcome]


class Ack(BaseModel):
    status: Literal["ok"] = "ok"


# ---- backend -> worker ------------------------------------------------------------------------


class DispatchRequest(Request):
    operation_id: str
    operation_type: str
    params: dict[str, Any]
    lease: LeaseModel
    # W3C trace context of this attempt's dispatch span (tracing on): the worker's spans for
    # the operation continue it, batched or not
    traceparent: str | None = Field(None, max_length=128)


class DispatchAccepted(BaseModel):
    operation_id: str
    accepted_seq: int


class DispatchBatch(Request):
    operations: list[DispatchRequest] = Field(min_length=1, max_length=1024)


class DispatchOutcome(BaseModel):
    operation_id: str
    status: int = Field(description="202 accepted, else the status a single dispatch would get")
    accepted_seq: int | None = None
    detail: str | None = None


class DispatchResults(BaseModel):
    results: list[DispatchOutcome]


class CancelRequest(Request):
    lease: LeaseModel | None = None


class WorkerHealth(BaseModel):
    healthy: bool
    worker_id: str
    worker_type: str
    instance_id: str
    worker_status: Literal["idle", "busy", "draining"]
    current_load: float
    active_operations: int
    slots: int
    accepted_seq: int
    running: list[RunningOperation]
    cpu_usage_ratio: float
    memory_usage_ratio: float
    uptime_seconds: float


class WorkerOperationView(BaseModel):
    operation_id: str
    lease: LeaseModel
    state: Literal["running", "cancelling", "finished"]
    progress: Progress | None


# ---- datasets ---------------------------------------------------------------------------------


class DatasetView(BaseModel):
    symbol: str
    timeframe: str
    sha256: str
    bars: int
    first_at: datetime
    last_at: datetime
    size_bytes: int
    created_at: datetime


class DatasetsPage(BaseModel):
    items: list[DatasetView]


# ---- artifacts --------------------------------------------------------------------------------


class ArtifactView(BaseModel):
    name: str
    attempt: int
    sha256: str
    size_bytes: int
    created_at: datetime


class ArtifactsPage(BaseModel):
    items: list[ArtifactView]


# ---- keys and misc ----------------------------------------------------------------------------


class KeyCreate(Request):
    role: Literal["viewer", "operator", "admin"]
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")


class KeyView(BaseModel):
    key_id: str
    name: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyView):
    key: str = Field(description="the raw key: shown once, stored only as a hash")


class KeysPage(BaseModel):
    items: list[KeyView]


class BackendHealth(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


# ---- audit log --------------------------------------------------------------------------------


class AuditRecordView(BaseModel):
    seq: int
    ts: datetime
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditRecordView]
    next_after_seq: int | None = Field(
        description="pass as after_seq for the next page; null: none"
    )


# ---- certificates (mtls enrollment and renewal) ----------------------------------------------

MAX_PEM = 16_384


class CertificateRequest(Request):
    """A CSR for the worker's key; only the key is used. `dns`/`ips` are the names the worker
    is reached by (its advertised URL's host), put in the certificate for hostname checks."""

    csr_pem: str = Field(max_length=MAX_PEM)
    dns: list[str] = Field(default_factory=list, max_length=8)
    ips: list[str] = Field(default_factory=list, max_length=8)


class EnrollmentRequest(CertificateRequest):
    worker_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    bootstrap_token: str = Field(max_length=256)


class CertificateIssued(BaseModel):
    certificate_pem: str
    ca_pem: str
    not_after: datetime


# ---- dashboard (GET /api/v1/stats) ------------------------------------------------------------


class MinuteStats(BaseModel):
    at: datetime = Field(description="start of the minute (UTC)")
    finished: int = Field(description="operations that reached a final state in this minute")
    failed: int = Field(description="...of which failed")
    queue_depth: int = Field(description="the most operations waiting at once in this minute")


class PriorityDepth(BaseModel):
    priority: int = Field(description="as submitted, 0 (lowest) to 9 (highest)")
    queued: int = Field(description="operations of this priority waiting for a worker")


class SubmitterDepth(BaseModel):
    submitter: str = Field(description="the name of the API key that submitted them")
    queued: int = Field(description="operations of this submitter waiting for a worker")


class FleetStats(BaseModel):
    at: datetime = Field(description="the backend's time of these figures")
    placement: str = Field(description="the placement policy in use (--placement)")
    workers: dict[WorkerStatus, int] = Field(description="registered workers by state")
    slots_used: int
    slots_total: int = Field(description="slots of every registered worker, whatever its state")
    queue_depth: int = Field(description="operations waiting for a worker now")
    queue_by_priority: list[PriorityDepth] = Field(
        description="the waiting operations per priority, highest first; empty ones left out"
    )
    queue_by_submitter: list[SubmitterDepth] = Field(
        description="the waiting operations of the submitters with most waiting, most first"
    )
    queue_other_submitters: int = Field(
        description="the waiting operations of the submitters not listed in queue_by_submitter"
    )
    running: int
    finished_last_hour: int
    failed_last_hour: int
    minutes: list[MinuteStats] = Field(
        description="the last hour, oldest first; kept in memory since the backend started"
    )
