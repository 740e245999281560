"""An append-only record of what this worker actually executed (start and end of every
attempt), for test and load runs: checkers compare it with the backend's records to count
duplicate executions and prove that no stale result was accepted."""

import json
import os
import time
from pathlib import Path
from typing import Any


class ExecutionLog:
    def __init__(self, path: Path, worker_id: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._worker_id = worker_id

    def write(self, event: str, operation_id: str, attempt: int, **fields: Any) -> None:
        record = {
            "event": event,
            "worker_id": self._worker_id,
            "operation_id": operation_id,
            "attempt": attempt,
            "ts": time.time(),
            **fields,
        }
        os.write(self._fd, (json.dumps(record) + "\n").encode())  # one write: lines never mix

    def close(self) -> None:
        os.close(self._fd)
