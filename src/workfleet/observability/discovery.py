"""Prometheus HTTP service discovery of the workers, from the backend's registry.

Prometheus (`http_sd_configs`) reads the list and attaches each target's labels to every series
it scrapes there (`up`, `process_*`, `workfleet_worker_*`), so worker metrics need no worker_id
label of their own. Every registered worker is listed, unavailable ones too, until the registry
removes them: an unreachable worker must stay a target for `up == 0` to alert on.
"""

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from workfleet.domain.workers import Worker

DEFAULT_PORTS = {"http": 80, "https": 443}


def prometheus_targets(workers: Iterable[Worker]) -> list[dict[str, Any]]:
    """One target group per worker: `host:port` of the URL it registered with, its
    worker_id and worker_type, and the scheme and metrics path to scrape it with."""
    groups = []
    for worker in sorted(workers, key=lambda w: w.worker_id):
        url = urlsplit(worker.endpoint_url)
        if url.hostname is None:
            continue  # registration validates the URL; nothing to scrape without a host
        scheme = url.scheme or "http"
        port = url.port or DEFAULT_PORTS.get(scheme, 80)
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        groups.append(
            {
                "targets": [f"{host}:{port}"],
                "labels": {
                    "worker_id": worker.worker_id,
                    "worker_type": worker.worker_type,
                    "__scheme__": scheme,
                    "__metrics_path__": url.path.rstrip("/") + "/metrics",
                },
            }
        )
    return groups
