"""Real processes for tests and benchmarks: a backend and workers started with the
`workfleet` command on free ports, with a timing profile scaled down so faults resolve in
seconds, and the means to hurt them (SIGKILL, SIGSTOP/SIGCONT, partitions via Proxy).

network="netns" (root): the backend listens on a bridge and each worker runs in a network
namespace of its own (harness/netns.py), so partitions are nftables rules, not proxies."""

import asyncio
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from workfleet.client import Client
from workfleet.harness.netns import Fabric
from workfleet.harness.proxy import Proxy
from workfleet.security.identity import Identity
from workfleet.security.pki import issue_locally
from workfleet.security.tls import client_context
from workfleet.settings import TlsPaths, sqlite_url


@dataclass(frozen=True, slots=True)
class Timing:
    """Production defaults are 10 s / 5 s / 3 / 300 s; tests run the same rules faster."""

    health_interval_s: float = 0.25
    health_timeout_s: float = 0.5
    failure_threshold: int = 3
    worker_removal_s: float = 10.0
    probe_timeout_s: float = 0.5
    dispatch_timeout_s: float = 3.0
    cancel_grace_s: float = 1.0
    shutdown_grace_s: float = 5.0
    progress_report_interval_s: float = 0.1
    register_backoff_max_s: float = 0.5
    backend_timeout_s: float = 3.0

    def backend_env(self) -> dict[str, str]:
        return {
            "WORKFLEET_HEALTH_INTERVAL_S": str(self.health_interval_s),
            "WORKFLEET_HEALTH_TIMEOUT_S": str(self.health_timeout_s),
            "WORKFLEET_HEALTH_FAILURE_THRESHOLD": str(self.failure_threshold),
            "WORKFLEET_WORKER_REMOVAL_S": str(self.worker_removal_s),
            "WORKFLEET_PROBE_TIMEOUT_S": str(self.probe_timeout_s),
            "WORKFLEET_DISPATCH_TIMEOUT_S": str(self.dispatch_timeout_s),
        }

    def worker_env(self) -> dict[str, str]:
        return {
            "WORKFLEET_CANCEL_GRACE_S": str(self.cancel_grace_s),
            "WORKFLEET_SHUTDOWN_GRACE_S": str(self.shutdown_grace_s),
            "WORKFLEET_PROGRESS_REPORT_INTERVAL_S": str(self.progress_report_interval_s),
            "WORKFLEET_REGISTER_BACKOFF_MAX_S": str(self.register_backoff_max_s),
            "WORKFLEET_BACKEND_TIMEOUT_S": str(self.backend_timeout_s),
        }


FAST = Timing()
DEFAULT = Timing(10.0, 5.0, 3, 300.0, 1.0, 10.0, 5.0, 30.0, 0.5, 5.0, 10.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout_s: float = 15.0,
    interval_s: float = 0.02,
    what: str = "condition",
) -> Any:
    """Poll until `check()` returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(interval_s)


@dataclass
class Process:
    name: str
    popen: "subprocess.Popen[bytes]"
    log_path: Path
    port: int
    extra: dict[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where it listens

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Cluster:
    def __init__(
        self,
        root: Path,
        *,
        timing: Timing = FAST,
        auth_mode: str = "token",
        backend_env: dict[str, str] | None = None,
        network: Literal["loopback", "netns"] = "loopback",
    ) -> None:
        if network == "netns" and auth_mode != "token":
            raise ValueError("network netns runs token mode only (certificates name loopback)")
        self.root = root
        self.timing = timing
        self.auth_mode = auth_mode
        self.token = secrets.token_urlsafe(32)
        self.data_dir = root / "data"
        self.backend_port = free_port()
        self.backend: Process | None = None
        self.workers: dict[str, Process] = {}
        self.proxies: list[Proxy] = []
        self._backend_env = backend_env or {}
        self.admin_key = ""
        self.fabric = Fabric() if network == "netns" else None  # checks root, ip and nft

    @property
    def host(self) -> str:
        """Where the backend listens: loopback, or the bridge all namespaces reach."""
        return self.fabric.backend_address if self.fabric is not None else "127.0.0.1"

    @property
    def scheme(self) -> str:
        return "https" if self.auth_mode == "mtls" else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.backend_port}"

    @property
    def ca_file(self) -> Path:
        return self.data_dir / "pki" / "ca-bundle.crt"

    def tls(self, identity: TlsPaths | None = None) -> ssl.SSLContext | None:
        """mtls: a client context trusting the cluster's CA, presenting `identity` if given."""
        return client_context(self.ca_file, identity) if self.auth_mode == "mtls" else None

    def issue(self, identity: Identity, **options: Any) -> TlsPaths:
        """mtls: a certificate from the cluster's CA (made on first use), as `certs issue`
        writes it into `<data>/pki/issued/`; servers get loopback names unless told."""
        if identity.kind in ("backend", "worker"):
            options = {"dns": ["localhost"], "ips": ["127.0.0.1"], **options}
        return TlsPaths(*issue_locally(self.data_dir, identity, **options))

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
        env.update(
            {
                "WORKFLEET_AUTH_MODE": self.auth_mode,
                "WORKFLEET_DATA_DIR": str(self.data_dir),
                "WORKFLEET_LOG_LEVEL": "INFO",
            }
        )
        if self.auth_mode == "token":
            env["WORKFLEET_CLUSTER_TOKEN"] = self.token
        env.update(extra)
        return env

    def _spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        port: int,
        *,
        host: str = "127.0.0.1",
        wrapper: list[str] | None = None,
    ) -> Process:
        """`wrapper`: a command that runs ours in place, keeping its pid (`ip netns exec`)."""
        self.root.mkdir(parents=True, exist_ok=True)
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(  # noqa: S603 - our own command
                [*(wrapper or []), sys.executable, "-m", "workfleet", *args],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return Process(name, popen, log_path, port, host=host)

    def cli(self, *args: str, timeout_s: float = 120) -> "subprocess.CompletedProcess[str]":
        """`workfleet ARGS` as a user runs it against this cluster: its URL and admin key (and
        in mtls mode its CA, found in the data dir), on a terminal wide enough for tables."""
        env = self._env(
            {
                "WORKFLEET_BACKEND_URL": self.url,
                "WORKFLEET_API_KEY": self.admin_key,
                "COLUMNS": "300",
            }
        )
        return subprocess.run(  # noqa: S603 - our own command
            [sys.executable, "-m", "workfleet", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def bootstrap_token(self, worker_id: str) -> str:
        """mtls: a one-time enrollment token for `worker_id`, as `certs bootstrap-token` prints
        it (the operator's step before a worker enrolls on its own)."""
        done = self.cli("certs", "bootstrap-token", "--worker-id", worker_id, timeout_s=60)
        if done.returncode != 0:
            raise RuntimeError(f"certs bootstrap-token failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_key(self, role: str = "admin", name: str = "admin") -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "workfleet", "keys", "create", "--role", role, "--name", name],
            env=self._env({}),
            capture_output=True,
            check=True,
            timeout=60,
        )
        return done.stdout.decode().strip()

    async def start_backend(self) -> Process:
        if self.fabric is not None:
            self.fabric.up()
        if not self.admin_key:  # in-process: a `keys create` process per cluster costs a second
            # imported here: simulated-worker processes import this module, not the backend
            from workfleet.backend.auth import create_key_offline
            from workfleet.backend.orchestrator import utc_now

            self.data_dir.mkdir(parents=True, exist_ok=True)
            url = sqlite_url(self.data_dir)
            self.admin_key = await create_key_offline(url, "admin", "admin", utc_now)
        if (
            self.auth_mode == "mtls"
            and not (self.data_dir / "pki" / "issued" / "backend.crt").exists()
        ):
            self.issue(Identity("backend"))
        env = self._env(
            {
                **self.timing.backend_env(),
                **self._backend_env,
                "WORKFLEET_HOST": self.host,
                "WORKFLEET_PORT": str(self.backend_port),
            }
        )
        self.backend = self._spawn("backend", ["backend"], env, self.backend_port, host=self.host)
        await wait_for(self._backend_up, timeout_s=30, what="the backend to answer /health")
        return self.backend

    async def _backend_up(self) -> bool:
        assert self.backend is not None
        if not self.backend.alive():
            raise RuntimeError(f"backend exited:\n{self.backend.log()[-3000:]}")
        try:
            async with httpx.AsyncClient(trust_env=False, verify=self.tls() or True) as http:
                return (await http.get(f"{self.url}/health", timeout=1)).status_code == 200
        except httpx.HTTPError:
            return False

    async def start_worker(
        self,
        worker_id: str,
        *,
        slots: int = 1,
        worker_type: str = "backtesting",
        proxied: bool = False,
        env: dict[str, str] | None = None,
        backend_url: str | None = None,
        issue_certificate: bool = True,
    ) -> Process:
        """proxied: backend<->worker traffic, both ways, goes through two Proxies (extra);
        under netns there are none (partitions are nftables rules) and the worker runs in its
        namespace, listening on its own address.
        issue_certificate=False (mtls): the worker must enroll (WORKFLEET_BOOTSTRAP_TOKEN)."""
        port = free_port()
        backend_url = backend_url or self.url
        host = self.fabric.add(worker_id) if self.fabric is not None else "127.0.0.1"
        advertise = f"{self.scheme}://{host}:{port}"
        if self.auth_mode == "mtls" and issue_certificate:  # else: it enrolls by itself
            self.issue(Identity("worker", worker_id))
        proxies: list[Proxy] = []
        if proxied and self.fabric is None:
            inbound = await Proxy("127.0.0.1", port).start()
            outbound = await Proxy("127.0.0.1", self.backend_port).start()
            proxies = [inbound, outbound]
            self.proxies += proxies
            advertise = f"{self.scheme}://127.0.0.1:{inbound.port}"
            backend_url = f"{self.scheme}://127.0.0.1:{outbound.port}"
        args = [
            "worker",
            "--type",
            worker_type,
            "--worker-id",
            worker_id,
            "--slots",
            str(slots),
            "--host",
            host,
            "--port",
            str(port),
            "--backend-url",
            backend_url,
            "--advertise-url",
            advertise,
        ]
        log = self.root / f"executions-{worker_id}.jsonl"
        extra = {**self.timing.worker_env(), "WORKFLEET_EXECUTION_LOG": str(log), **(env or {})}
        wrapper = self.fabric.exec_prefix(worker_id) if self.fabric is not None else None
        name = f"worker-{worker_id}"
        process = self._spawn(name, args, self._env(extra), port, host=host, wrapper=wrapper)
        process.extra["proxies"] = proxies
        self.workers[worker_id] = process
        return process

    def client(self, api_key: str | None = None, identity: TlsPaths | None = None) -> Client:
        key = api_key if api_key is not None else self.admin_key
        return Client(self.url, api_key=key or None, tls=self.tls(identity))

    async def wait_workers(
        self, *worker_ids: str, status: str = "available", timeout_s: float = 30.0
    ) -> None:
        async with self.client() as client:

            async def ready() -> bool:
                found = {w.worker_id: w.status for w in (await client.workers()).items}
                return all(found.get(w) == status for w in worker_ids)

            await wait_for(
                ready, timeout_s=timeout_s, what=f"workers {', '.join(worker_ids)} to be {status}"
            )

    async def restart_backend(self) -> Process:
        if self.backend is not None:
            self.backend.signal(signal.SIGKILL)
            self.backend.popen.wait(timeout=10)
        return await self.start_backend()

    def execution_logs(self) -> list[Path]:
        return sorted(self.root.glob("executions-*.jsonl"))

    async def stop(self) -> None:
        """Workers first (they drain and deregister), then the backend; then the links (the
        namespaces and their rules go whatever happened before)."""
        try:
            for proxy in self.proxies:
                proxy.heal()
            if self.fabric is not None:
                self.fabric.heal_all()
            await _terminate(list(self.workers.values()))
            await _terminate([self.backend] if self.backend else [])
            for proxy in self.proxies:
                await proxy.close()
        finally:
            if self.fabric is not None:
                self.fabric.close()


async def _terminate(processes: list[Process], timeout_s: float = 10.0) -> None:
    for process in processes:
        process.signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        process.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        while process.popen.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # the proxies of this loop must keep pumping meanwhile
        if process.popen.poll() is None:
            process.signal(signal.SIGKILL)
            process.popen.wait(timeout=5)
