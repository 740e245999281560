"""`diagnostic`: operations for tests and load runs (noop, sleep, fail, crash, crash_worker,
cpu). `crash` kills the operation's own process (the worker reports it failed and lives on);
`crash_worker` kills the worker running it, as a poison operation does (diagnostic only: it
finds its worker by WORKER_PID_ENV, which only a worker sets).

`sleep` and `cpu` last `seconds` on a worker of speed 1 and `seconds / speed` on a worker that
declares another speed (WORKFLEET_SPEED), so one machine can stand for slow and fast workers.
"""

import os
import signal
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workfleet.operations.context import WORKER_PID_ENV, OperationContext


class DiagnosticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["noop", "sleep", "fail", "crash", "crash_worker", "cpu"] = "noop"
    seconds: float = Field(0.0, ge=0, le=86_400, description="at speed 1: seconds / speed")
    steps: int = Field(1, ge=1, le=100_000)
    payload: Any = Field(None, description="echoed back in the result")
    ignore_cancel: bool = Field(False, description="keep going after a cancel (tests the kill)")


class DiagnosticFailure(RuntimeError):
    pass


def run(params: DiagnosticParams, ctx: OperationContext) -> dict[str, Any]:
    if params.action == "fail":
        raise DiagnosticFailure(f"diagnostic failure requested ({params.payload!r})")
    if params.action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no exception: a hard crash
    if params.action == "crash_worker":
        _crash_worker()
    if params.action in ("sleep", "cpu"):
        _spend(params, ctx, busy=params.action == "cpu")
    return {"action": params.action, "payload": params.payload}


def _crash_worker() -> None:
    worker_pid = os.environ.get(WORKER_PID_ENV)
    if not worker_pid:
        raise DiagnosticFailure(f"crash_worker runs only on a worker ({WORKER_PID_ENV} unset)")
    os.kill(int(worker_pid), signal.SIGKILL)
    # this process dies with its worker; should it outlive it, no success is reported
    raise DiagnosticFailure(f"killed the worker (pid {worker_pid})")


def _spend(params: DiagnosticParams, ctx: OperationContext, *, busy: bool) -> None:
    step_s = params.seconds / ctx.speed / params.steps
    for step in range(params.steps):
        deadline = time.monotonic() + step_s
        while (left := deadline - time.monotonic()) > 0:
            if not params.ignore_cancel:
                ctx.raise_if_cancelled()
            if busy:
                _burn(min(left, 0.05))
            else:
                time.sleep(min(left, 0.05))
        ctx.report(
            current_step=step + 1,
            total_steps=params.steps,
            percentage=100.0 * (step + 1) / params.steps,
        )


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    total = 0
    while time.monotonic() < end:
        total += sum(range(1000))
