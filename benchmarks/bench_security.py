"""What security costs and how fast it acts: mtls against token mode, on real processes.

    python benchmarks/bench_security.py [--requests N] [--out benchmarks/results/security.json]

- handshake: a new connection per request (GET /health): plain HTTP (token mode) vs mutual TLS
  with a client certificate; the difference is the handshake
- request: the same authenticated read (GET /api/v1/workers) on a kept-alive connection, token
  mode (API key) vs mtls (API key over TLS, and a client certificate)
- revocation: a worker certificate making requests back to back on one keep-alive connection;
  the time from the revocation list being written (what `workfleet certs revoke` does) to the
  first refused request, over several trials
Dispatch latency with and without mtls: `bench_core.py --only latency [--auth-mode mtls]`.
"""

import argparse
import asyncio
import json
import platform
import ssl
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench_core import summary
from workfleet.harness.cluster import DEFAULT, Cluster
from workfleet.security.cert_registry import read_issued, revoke
from workfleet.security.identity import Identity
from workfleet.security.pki import PkiLayout
from workfleet.security.tls import client_context

QUIET = {"WORKFLEET_LOG_LEVEL": "WARNING"}


async def timed(call: Any, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = await call()
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return samples


async def new_connection_each(url: str, verify: Any, count: int) -> list[float]:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(verify=verify, trust_env=False) as http:
            return await http.get(f"{url}/health")

    return await timed(call, count)


async def kept_alive(url: str, verify: Any, headers: dict[str, str], count: int) -> list[float]:
    async with httpx.AsyncClient(verify=verify, trust_env=False, headers=headers) as http:
        await http.get(f"{url}/api/v1/workers")  # the handshake, outside the timing
        return await timed(lambda: http.get(f"{url}/api/v1/workers"), count)


async def revocation_delay(cluster: Cluster, trial: int) -> float:
    worker = Identity("worker", f"r{trial}")
    paths = cluster.issue(worker)
    layout = PkiLayout.of(cluster.data_dir)
    record = next(c for c in read_issued(layout.registry) if c.identity.endswith(f"/r{trial}"))
    body = {
        "worker_id": f"r{trial}",
        "worker_type": "backtesting",
        "endpoint_url": "https://127.0.0.1:1",
        "operation_types": ["diagnostic"],
        "instance_id": f"i{trial}",
    }
    async with httpx.AsyncClient(
        base_url=cluster.url, verify=client_context(paths.ca, paths), trust_env=False
    ) as http:
        assert (await http.post("/api/v1/workers/register", json=body)).status_code == 200
        revoked_at = time.perf_counter()
        await asyncio.to_thread(revoke, layout.revoked, [record], at=datetime.now(UTC))
        while (await http.post("/api/v1/workers/register", json=body)).status_code == 200:
            pass
        return time.perf_counter() - revoked_at


async def run(root: Path, count: int, trials: int) -> dict[str, Any]:
    token = Cluster(root / "token", timing=DEFAULT, backend_env=QUIET)
    mtls = Cluster(root / "mtls", timing=DEFAULT, auth_mode="mtls", backend_env=QUIET)
    await token.start_backend()
    await mtls.start_backend()
    try:
        client_cert = mtls.issue(Identity("client", "bench"), role="viewer")
        mtls_ctx = client_context(mtls.ca_file, client_cert)
        key_only_ctx = client_context(mtls.ca_file)
        plain = ssl.create_default_context()  # built once; plain HTTP never uses it
        token_key = {"Authorization": f"Bearer {token.admin_key}"}
        mtls_key = {"Authorization": f"Bearer {mtls.admin_key}"}
        figures: dict[str, Any] = {
            "handshake_plain_http": summary(await new_connection_each(token.url, plain, count)),
            "handshake_mutual_tls": summary(await new_connection_each(mtls.url, mtls_ctx, count)),
            "request_token_api_key": summary(await kept_alive(token.url, plain, token_key, count)),
            "request_mtls_api_key": summary(
                await kept_alive(mtls.url, key_only_ctx, mtls_key, count)
            ),
            "request_mtls_client_cert": summary(await kept_alive(mtls.url, mtls_ctx, {}, count)),
            "revocation": summary([await revocation_delay(mtls, t) for t in range(trials)]),
        }
    finally:
        await token.stop()
        await mtls.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/security.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wf-bench-security-") as tmp:
        figures = asyncio.run(run(Path(tmp), args.requests, args.trials))
    for name, stats in figures.items():
        print(
            f"{name:28} n={stats['n']:4}  p50 {stats['p50_ms']:7.2f} ms  "
            f"p99 {stats['p99_ms']:7.2f} ms  max {stats['max_ms']:7.2f} ms"
        )
    figures |= {
        "when": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
