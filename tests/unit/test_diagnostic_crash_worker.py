"""diagnostic `crash_worker`: the poison operation of fault tests kills the worker that runs it
(found by the pid the worker puts in its executors' environment), never reports a success,
and off a worker is a plain failure."""

import signal
import subprocess
import sys
from typing import cast

import pytest

from workfleet.operations.context import WORKER_PID_ENV, OperationContext
from workfleet.operations.diagnostic import DiagnosticFailure, DiagnosticParams, run

NO_CONTEXT = cast(OperationContext, None)  # crash_worker never touches it


def test_it_kills_the_worker_named_in_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setenv(WORKER_PID_ENV, str(worker.pid))
        with pytest.raises(DiagnosticFailure, match="killed the worker"):
            run(DiagnosticParams(action="crash_worker"), NO_CONTEXT)
        assert worker.wait(timeout=10) == -signal.SIGKILL
    finally:
        worker.kill()
        worker.wait()


def test_off_a_worker_it_is_a_plain_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_PID_ENV, raising=False)
    with pytest.raises(DiagnosticFailure, match="runs only on a worker"):
        run(DiagnosticParams(action="crash_worker"), NO_CONTEXT)
