"""What an operation sees of the world: the only interface workloads use."""

from typing import Any, Protocol

# The pid of the worker process running an operation, in its executors' environment: only for
# the diagnostic `crash_worker` (a test's poison operation), never for real workloads.
WORKER_PID_ENV = "WORKFLEET_WORKER_PID"


class Cancelled(Exception):
    """Raise (or let `ctx.raise_if_cancelled()` raise) to stop after a cancel request."""


class OperationContext(Protocol):
    operation_id: str
    speed: float  # the worker's declared speed (1.0 unless set): test workloads scale by it

    def report(self, **progress: Any) -> None:
        """Progress: percentage, message, current_step, total_steps, items_done, items_total,
        plus any type-specific fields (epoch, loss, running P&L)."""

    def cancelled(self) -> bool:
        """True once a cancel was requested: stop soon, the process is killed after a grace."""

    def raise_if_cancelled(self) -> None: ...

    def write_artifact(self, name: str, data: bytes) -> None:
        """Keep a file with the operation (equity curve, trade list, model), under its lease."""

    def dataset(self, symbol: str, timeframe: str) -> Any:
        """The bars of a market dataset (a pandas DataFrame indexed by UTC timestamp)."""

    def save_checkpoint(self, data: bytes) -> None:
        """Keep the operation's state under its lease: an attempt that replaces a lost one gets
        the latest checkpoint from `load_checkpoint()` and resumes from it."""

    def load_checkpoint(self) -> bytes | None:
        """The latest checkpoint of this operation (from any attempt), or None."""

    def artifact(self, operation_id: str, name: str) -> bytes:
        """An artifact of a finished operation (a trained model), checked against the SHA-256
        the backend recorded for it."""
