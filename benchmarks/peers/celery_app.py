"""The Celery app of the peers benchmark: imported by the client (celery_side.py) and by every
`celery worker` it starts (cwd benchmarks/peers). Configured from the environment that
celery_side.py sets, in Celery's *safe* configuration (anchors-task-systems.md §6):

- broker and result backend: the Redis server run.py started (db 0 and db 1)
- task_acks_late, worker_prefetch_multiplier=1, task_reject_on_worker_lost
- broker_transport_options: visibility_timeout (PEERS_VISIBILITY_TIMEOUT_S, default 10 s; Celery's
  default is 3,600 s) and a restore sweep every second (unacked_restore_interval=1,
  unacked_restore_throttle=1; kombu's default sweeps every 10 s x 10 = 100 s)
"""

import json
import os
import time
from typing import Any

from celery import Celery

REDIS_URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379")
VISIBILITY_TIMEOUT_S = float(os.environ.get("PEERS_VISIBILITY_TIMEOUT_S", "10"))

CONFIG = {
    "broker_url": f"{REDIS_URL}/0",
    "result_backend": f"{REDIS_URL}/1",
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "broker_transport_options": {
        "visibility_timeout": VISIBILITY_TIMEOUT_S,
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
    },
    "task_serializer": "json",
    "result_serializer": "json",
    "result_expires": 3600,
    "broker_connection_retry_on_startup": True,
}

app = Celery("peers")
app.conf.update(CONFIG)


@app.task(name="peers.noop")
def noop(t0: float) -> float:
    """The no-op: its first line is the start timestamp, returned through the result backend."""
    started = time.time()
    return started


@app.task(name="peers.hold", bind=True)
def hold(self: Any, tag: str, log_path: str, stop_path: str, max_s: float) -> float:
    """A long task for the SIGKILL step: records its start (first line), then waits for the stop
    file (so the benchmark can end every copy at once) or max_s."""
    started = time.time()
    record = {"tag": tag, "t": started, "pid": os.getpid(), "node": self.request.hostname}
    with open(log_path, "a") as log:
        log.write(json.dumps(record) + "\n")
    while time.time() < started + max_s and not os.path.exists(stop_path):
        time.sleep(0.01)
    return started
