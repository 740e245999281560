"""mtls mode over real TLS sockets: per-worker identity bound to every worker route, workers
that answer only the backend, revocation on open connections, reload without restart.

Where each line of the anchors' checklist (reference/anchors-security.md §3) is tested:
- here: REG-05/06/09, WAPI-01..04, WAPI-06 (reports and uploads), WAPI-07, MITM-01/02/05/06,
  REV-01/04/05/07, CFG-01/03, and the backend verifying the identity of the worker it calls
  (instead of REG-15's address/SAN matching: whatever URL a worker registers, the backend only
  talks to a server proving that worker's CA-set name);
- test_tls_edges.py: REG-10, MITM-03/04/06/07; test_mtls_enrollment.py: REG-11/12/13, REV-08;
  test_auth_token_mode.py: REG-01..04, REG-16, REV-09, CFG-02; test_role_matrix.py and
  tests/unit/security/test_route_inventory.py, test_openapi_fuzz.py: AUTHZ-01..04/07;
  test_audit_log.py and tests/unit/test_audit_*.py: AUD-01..06; tests/unit/security/test_pki_*:
  REG-07/08/12/14, REV-06; test_worker_certificate_renewal.py: REV-08/10; test_training.py:
  MITM-08; test_failures.py and the orchestrator unit tests: RPL-04; RPL-03 is REG-11.
Lines that do not apply, and why:
- WAPI-05, RPL-01/02, RPL-05's envelope half: there are no signed dispatch envelopes (an idea
  in the anchors, not built); RPL-05's binding half (TLS identity = worker id) is REG-05 here.
- WAPI-08: dispatches are not metered per client; submits are (per-owner limit, 429).
- MITM-09: our CA signs leaves directly (no intermediate), so there is no chain to send.
- REV-02/03: no CRLs by design: short lifetimes plus the per-request serial deny-list.
- AUTHZ-05: keys carry roles, not scopes; a revoked key's 401 is in the token-mode tests.
- AUTHZ-06's per-identity body limits: one global limit (32 MiB, 413) for every caller.
- AUD-02's handshake half: TLS handshake failures never reach the app, so they are not counted.
- CFG-04: no sslyze job; TLS ≤ 1.1 and foreign CAs are refused here instead.
"""

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from workfleet.harness.cluster import Cluster, free_port, wait_for
from workfleet.protocol import WorkerRegistration
from workfleet.security.identity import Identity
from workfleet.security.tls import client_context
from workfleet.settings import TlsPaths


@pytest.fixture
async def fleet(tmp_path: Path):  # type: ignore[no-untyped-def]
    cluster = Cluster(tmp_path / "cluster", auth_mode="mtls")
    try:
        await cluster.start_backend()
        yield cluster
    finally:
        await cluster.stop()


def registration(worker_id: str, port: int = 1) -> dict[str, object]:
    return WorkerRegistration(
        worker_id=worker_id,
        worker_type="backtesting",
        endpoint_url=f"https://127.0.0.1:{port}",
        operation_types=["diagnostic"],
        instance_id="i-" + worker_id,
    ).model_dump(mode="json")


def as_identity(cluster: Cluster, identity: TlsPaths) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cluster.url, verify=client_context(identity.ca, identity), trust_env=False
    )


def rejected(call_status: int | None) -> bool:
    return call_status is None or 400 <= call_status < 500


async def status_of(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: object
) -> int | None:
    """The status, or None when TLS refused the connection (TLS 1.3 reports a rejected client
    certificate as a dropped connection, not a handshake error)."""
    try:
        return (await client.request(method, url, **kwargs)).status_code  # type: ignore[arg-type]
    except httpx.TransportError:
        return None


def certs(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "workfleet", "certs", *args, "--data-dir", str(cluster.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def served_serial(port: int, ca: Path) -> int:
    """The serial of the certificate a server presents to a new connection."""
    context = client_context(ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_fleet_runs_end_to_end_over_mutual_tls(fleet: Cluster) -> None:
    await fleet.start_worker("w1")
    await fleet.wait_workers("w1")
    async with fleet.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 0.2, "steps": 2})
        done = await client.wait(op.operation_id, timeout_s=30)
        worker = await client.worker("w1")
    assert done.status == "completed" and done.worker_id == "w1"
    assert worker.endpoint_url.startswith("https://")


async def test_a_worker_certificate_speaks_only_for_its_own_worker_id(fleet: Cluster) -> None:
    """REG-05, WAPI-06: worker-1's certificate cannot register, hold a session, report or
    deregister as worker-2."""
    w1 = fleet.issue(Identity("worker", "w1"))
    async with as_identity(fleet, w1) as http:
        own = await http.post("/api/v1/workers/register", json=registration("w1"))
        other = await http.post("/api/v1/workers/register", json=registration("w2"))
        session = await http.get("/api/v1/workers/w2/session", timeout=2)
        reports = await http.post(
            "/api/v1/workers/w2/reports",
            json={
                "reports": [{"operation_id": "op_x", "lease": {"attempt": 1, "token": "t" * 16}}]
            },
        )
        gone = await http.delete("/api/v1/workers/w2")
    async with fleet.client() as client:
        listed = {w.worker_id for w in (await client.workers()).items}
    assert own.status_code == 200
    assert other.status_code == 403 and "cannot act as worker w2" in other.json()["detail"]
    assert session.status_code == reports.status_code == gone.status_code == 403
    assert listed == {"w1"}  # worker-2's record was never made


async def test_a_second_key_for_an_active_worker_id_is_refused(fleet: Cluster) -> None:
    """REG-06: re-registering with the same key is idempotent; another key for the same id is
    refused while the first registration stands."""
    first = fleet.issue(Identity("worker", "w1"))
    async with as_identity(fleet, first) as http:
        assert (
            await http.post("/api/v1/workers/register", json=registration("w1"))
        ).status_code == 200
        again = await http.post("/api/v1/workers/register", json=registration("w1"))
    impostor = fleet.issue(Identity("worker", "w1"))  # a new key pair, same identity
    async with as_identity(fleet, impostor) as http:
        refused = await http.post("/api/v1/workers/register", json=registration("w1"))
    assert again.status_code == 200
    assert refused.status_code == 403 and "another certificate key" in refused.json()["detail"]


async def test_worker_and_monitoring_identities_stay_on_their_routes(fleet: Cluster) -> None:
    """WAPI-07 and REG-09: a worker cannot submit or read operations; monitoring only scrapes;
    the backend's own identity is no caller at all."""
    worker = fleet.issue(Identity("worker", "w1"))
    monitoring = fleet.issue(Identity("monitoring"))
    backend = TlsPaths(
        fleet.data_dir / "pki/issued/backend.crt",
        fleet.data_dir / "pki/issued/backend.key",
        fleet.ca_file,
    )
    async with as_identity(fleet, worker) as http:
        submit = await http.post(
            "/api/v1/operations", json={"operation_type": "diagnostic", "params": {}}
        )
        listing = await http.get("/api/v1/operations")
    async with as_identity(fleet, monitoring) as http:
        scrape = await http.get("/metrics")
        register = await http.post("/api/v1/workers/register", json=registration("w9"))
    async with as_identity(fleet, backend) as http:
        as_backend = await http.get("/api/v1/operations")
    assert submit.status_code == listing.status_code == 403
    assert scrape.status_code == 200 and "workfleet_" in scrape.text
    assert register.status_code == 403
    assert as_backend.status_code == 401


async def test_a_client_certificate_carries_the_role_it_was_issued_with(fleet: Cluster) -> None:
    operator = fleet.issue(Identity("client", "ops-bot"), role="operator")
    viewer = fleet.issue(Identity("client", "dash"), role="viewer")
    async with fleet.client(api_key="", identity=operator) as client:
        op = await client.submit("diagnostic", {"action": "noop"})
    async with as_identity(fleet, viewer) as http:
        read = await http.get(f"/api/v1/operations/{op.operation_id}")
        refused = await http.post(
            "/api/v1/operations", json={"operation_type": "diagnostic", "params": {}}
        )
    assert op.owner == "ops-bot"
    assert read.status_code == 200 and refused.status_code == 403


async def test_a_worker_answers_only_the_backend(fleet: Cluster) -> None:
    """WAPI-01..04: no certificate, another worker's, a client's, a rogue CA's or plain HTTP:
    nothing reaches the worker's handlers; the backend's certificate does."""
    process = await fleet.start_worker("w1")
    await fleet.wait_workers("w1")
    url = f"https://127.0.0.1:{process.port}"
    other_worker = fleet.issue(Identity("worker", "w2"))
    a_client = fleet.issue(Identity("client", "alice"), role="admin")
    backend = TlsPaths(
        fleet.data_dir / "pki/issued/backend.crt",
        fleet.data_dir / "pki/issued/backend.key",
        fleet.ca_file,
    )
    rogue = Cluster(fleet.root / "rogue", auth_mode="mtls").issue(Identity("backend"))
    statuses = {}
    for name, identity in (
        ("none", None),
        ("other worker", other_worker),
        ("client", a_client),
        ("backend", backend),
    ):
        async with httpx.AsyncClient(
            verify=client_context(fleet.ca_file, identity), trust_env=False
        ) as http:
            statuses[name] = await status_of(http, "GET", f"{url}/health")
    # a rogue CA's "backend": our worker's server certificate is foreign to it as well
    async with httpx.AsyncClient(
        verify=client_context(fleet.ca_file, TlsPaths(rogue.cert, rogue.key, fleet.ca_file)),
        trust_env=False,
    ) as http:
        statuses["rogue CA"] = await status_of(http, "GET", f"{url}/health")
    async with httpx.AsyncClient(trust_env=False) as http:
        statuses["plain http"] = await status_of(
            http, "GET", f"http://127.0.0.1:{process.port}/health"
        )
    assert statuses["backend"] == 200
    assert statuses["none"] is None and statuses["rogue CA"] is None  # refused by TLS itself
    assert statuses["other worker"] == statuses["client"] == 403
    assert rejected(statuses["plain http"])


async def test_the_backend_refuses_certificates_of_another_ca_and_old_tls(fleet: Cluster) -> None:
    """MITM-01/05/06: a foreign CA's certificate is refused; a client trusting the system
    roots cannot verify the backend; TLS 1.1 cannot connect."""
    rogue = Cluster(fleet.root / "rogue", auth_mode="mtls").issue(Identity("worker", "w1"))
    async with httpx.AsyncClient(
        base_url=fleet.url,
        verify=client_context(fleet.ca_file, TlsPaths(rogue.cert, rogue.key, fleet.ca_file)),
        trust_env=False,
    ) as http:
        foreign = await status_of(http, "POST", "/api/v1/workers/register", json=registration("w1"))
    async with httpx.AsyncClient(base_url=fleet.url, trust_env=False) as http:  # certifi roots
        system_roots = await status_of(http, "GET", "/health")
    with warnings.catch_warnings():  # Python itself deprecates what this client tries
        warnings.simplefilter("ignore", DeprecationWarning)
        old = client_context(fleet.ca_file)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    async with httpx.AsyncClient(base_url=fleet.url, verify=old, trust_env=False) as http:
        tls11 = await status_of(http, "GET", "/health")
    assert foreign is None and system_roots is None and tls11 is None


async def test_a_backend_certificate_for_another_name_is_refused_by_workers(
    tmp_path: Path,
) -> None:
    """MITM-02: the worker checks the backend's name against the certificate's SANs."""
    cluster = Cluster(tmp_path / "c", auth_mode="mtls")
    cluster.issue(Identity("backend"), dns=[], ips=["127.0.0.1"])  # not "localhost"
    try:
        await cluster.start_backend()
        process = await cluster.start_worker(
            "w1", backend_url=f"https://localhost:{cluster.backend_port}"
        )
        await wait_for(
            lambda: _logged(process.log_path, "CERTIFICATE_VERIFY_FAILED"),
            timeout_s=20,
            what="the worker to report that it cannot verify the backend",
        )
        async with cluster.client() as client:
            assert (await client.workers()).items == []
    finally:
        await cluster.stop()


async def _logged(path: Path, event: str) -> bool:
    return path.exists() and event in path.read_text(errors="replace")


async def test_a_revoked_worker_is_refused_on_its_open_connection_and_new_ones(
    fleet: Cluster,
) -> None:
    """REV-01: the deny-list is checked on every request, not only at the handshake."""
    w1 = fleet.issue(Identity("worker", "w1"))
    async with as_identity(fleet, w1) as http:
        before = await http.post("/api/v1/workers/register", json=registration("w1"))
        revoked = certs(fleet, "revoke", "--identity", "worker-w1")
        assert revoked.returncode == 0, revoked.stderr
        on_open_connection = await http.post("/api/v1/workers/register", json=registration("w1"))
    async with as_identity(fleet, w1) as http:
        on_new_connection = await http.post("/api/v1/workers/register", json=registration("w1"))
    assert before.status_code == 200
    assert on_open_connection.status_code == on_new_connection.status_code == 401


async def test_an_expired_client_certificate_is_refused(fleet: Cluster) -> None:
    """REV-04."""
    expired = fleet.issue(
        Identity("worker", "w1"),
        lifetime=timedelta(hours=1),
        now=datetime.now(UTC) - timedelta(hours=2),
    )
    async with as_identity(fleet, expired) as http:
        status = await status_of(http, "POST", "/api/v1/workers/register", json=registration("w1"))
    assert status is None


async def test_the_backend_certificate_reloads_without_a_restart(tmp_path: Path) -> None:
    """REV-05 and REV-07: new connections get the new certificate, the PID stays the same, and
    a broken replacement leaves the old one serving."""
    cluster = Cluster(
        tmp_path / "c", auth_mode="mtls", backend_env={"WORKFLEET_TLS_RELOAD_INTERVAL_S": "0.1"}
    )
    try:
        await cluster.start_backend()
        assert cluster.backend is not None
        pid = cluster.backend.pid
        first = served_serial(cluster.backend_port, cluster.ca_file)
        renewed = cluster.issue(Identity("backend"))
        second = await wait_for(
            _serial_changed(cluster, first), timeout_s=10, what="the new certificate"
        )
        renewed.key.write_text("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n")
        still = await _after_a_reload_round(cluster)
        async with cluster.client() as client:
            assert (await client.workers()).items == []  # and it still answers requests
        assert cluster.backend.pid == pid and cluster.backend.alive()
    finally:
        await cluster.stop()
    assert second != first
    assert still == second
    assert "tls_reload_failed" in cluster.backend.log()


def _serial_changed(cluster: Cluster, old: int):  # type: ignore[no-untyped-def]
    async def check() -> int | None:
        serial = served_serial(cluster.backend_port, cluster.ca_file)
        return serial if serial != old else None

    return check


async def _after_a_reload_round(cluster: Cluster) -> int:
    await wait_for(
        lambda: _logged(cluster.backend.log_path, "tls_reload_failed"),  # type: ignore[union-attr]
        timeout_s=10,
        what="the broken files to be noticed",
    )
    return served_serial(cluster.backend_port, cluster.ca_file)


def test_startup_refuses_a_private_key_others_can_read(tmp_path: Path) -> None:
    """CFG-03 and CFG-01: one clear line, nothing listening."""
    cluster = Cluster(tmp_path / "c", auth_mode="mtls")
    paths = cluster.issue(Identity("backend"))
    paths.key.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    env |= {"WORKFLEET_DATA_DIR": str(cluster.data_dir), "WORKFLEET_AUTH_MODE": "mtls"}
    done = subprocess.run(
        [sys.executable, "-m", "workfleet", "backend", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "readable by others" in done.stderr and "Traceback" not in done.stderr
    paths.key.chmod(0o600)
    paths.ca.write_text("")
    env["WORKFLEET_TLS_CA"] = str(paths.ca)
    done = subprocess.run(
        [sys.executable, "-m", "workfleet", "backend", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "holds no certificate" in done.stderr


async def test_a_worker_url_cannot_lead_the_backend_to_another_worker(fleet: Cluster) -> None:
    """The backend verifies the identity of the worker it calls (the DNS name our CA puts in
    each worker certificate), not only the address: w1 registering w2's address gets nothing
    run there, and nothing is sent to a server that cannot prove it is w1."""
    real = await fleet.start_worker("w2")
    await fleet.wait_workers("w2")
    async with fleet.client() as client:
        await client.drain("w2")
        w1 = fleet.issue(Identity("worker", "w1"))
        async with as_identity(fleet, w1) as http:
            fake = registration("w1", port=real.port)
            assert (await http.post("/api/v1/workers/register", json=fake)).status_code == 200
        op = await client.submit("diagnostic", {"action": "noop"})
        await asyncio.sleep(1.5)  # dispatch rounds to the impostor address come and go
        waiting = await client.get(op.operation_id)
        await client.drain("w2", undo=True)
        done = await client.wait(op.operation_id, timeout_s=30)
    assert waiting.status == "pending"
    assert done.status == "completed" and done.worker_id == "w2"
    assert "CERTIFICATE_VERIFY_FAILED" in fleet.backend.log()  # type: ignore[union-attr]
