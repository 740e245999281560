"""`diagnostic`: operations for tests and load runs (noop, sleep, fail, crash, cpu).

`sleep` and `cpu` last `seconds` on a worker of speed 1 and `seconds / speed` on a worker that
declares another speed (WORKFLEET_SPEED), so one machine can stand for slow and fast workers.
"""

import os
import signal
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workfleet.operations.context import OperationContext


class DiagnosticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["noop", "sleep", "fail", "crash", "cpu"] = "noop"
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
    if params.action in ("sleep", "cpu"):
        _spend(params, ctx, busy=params.action == "cpu")
    return {"action": params.action, "payload": params.payload}


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
