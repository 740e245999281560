"""Settings for every role: flags > WORKFLEET_* environment > defaults.

Only the CLI builds these (and tests, explicitly); nothing reads the environment elsewhere.
"""

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from workfleet.domain.labels import parse_labels

AuthMode = Literal["none", "token", "mtls"]
DbSync = Literal["full", "normal"]
Placement = Literal["round_robin", "capacity", "fastest"]  # domain.placement.POLICY_NAMES
LogFormat = Literal["json", "console"]
MIN_SECRET_BYTES = 32
PLACEHOLDER_SECRETS = frozenset({"changeme", "secret", "password", "token", "workfleet"})
DEFAULT_WORKER_PORTS = {"backtesting": 5003, "training": 5002}
TRUST_DOMAIN_PATTERN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"


@dataclass(frozen=True, slots=True)
class TlsPaths:
    """This process's certificate, its key, and the CA bundle it trusts (nothing else)."""

    cert: Path
    key: Path
    ca: Path


def default_ca(data_dir: Path) -> Path:
    """The CA bundle: the one `certs init` keeps (on the backend host, it follows CA rotation),
    else the copy `certs issue` writes next to issued certificates (copied to other hosts)."""
    bundle = data_dir / "pki" / "ca-bundle.crt"
    return bundle if bundle.exists() else data_dir / "pki" / "issued" / "ca.crt"


class ConfigurationError(ValueError):
    """A setting is missing or unsafe; the message says which and how to fix it."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_secrets(raw: SecretStr | None) -> tuple[bytes, ...]:
    if raw is None:
        return ()
    return tuple(
        part.strip().encode() for part in raw.get_secret_value().split(",") if part.strip()
    )


class _Common(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKFLEET_", extra="ignore")

    data_dir: Path = Path(".workfleet")
    auth_mode: AuthMode = "token"
    cluster_token: SecretStr | None = Field(
        None, description="cluster secret(s), comma-separated; the first is used to call out"
    )
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    tls_cert: Path | None = Field(None, description="mtls: this process's certificate (PEM)")
    tls_key: Path | None = Field(None, description="mtls: its private key (PEM, mode 0600)")
    tls_ca: Path | None = Field(None, description="mtls: the CA bundle to trust (only it)")
    trust_domain: str = Field("workfleet.local", pattern=TRUST_DOMAIN_PATTERN)
    tls_reload_interval_s: float = Field(
        5.0, gt=0, description="mtls: how often certificate files are checked for a change"
    )

    @property
    def cluster_secrets(self) -> tuple[bytes, ...]:
        return split_secrets(self.cluster_token)

    def tls_paths(self, name: str) -> TlsPaths:
        """Flags, else `<data-dir>/pki/issued/<name>.crt|.key` as `certs issue` writes them."""
        issued = self.data_dir / "pki" / "issued"
        return TlsPaths(
            cert=self.tls_cert or issued / f"{name}.crt",
            key=self.tls_key or issued / f"{name}.key",
            ca=self.tls_ca or default_ca(self.data_dir),
        )

    def check_security(self, host: str) -> None:
        """Refuse to start with an unsafe configuration (fail closed)."""
        if self.auth_mode == "none":
            if not is_loopback(host):
                raise ConfigurationError(
                    f"--auth-mode none only binds loopback; refusing to listen on {host}"
                )
            return
        if self.auth_mode == "mtls":
            return  # the certificate files are checked when the TLS contexts are built
        secrets = self.cluster_secrets
        if not secrets:
            raise ConfigurationError(
                "token mode needs a cluster secret: set WORKFLEET_CLUSTER_TOKEN "
                '(make one with: python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        for secret in secrets:
            if len(secret) < MIN_SECRET_BYTES or secret.decode().lower() in PLACEHOLDER_SECRETS:
                raise ConfigurationError(
                    f"each cluster secret must be at least {MIN_SECRET_BYTES} random bytes"
                )


class BackendSettings(_Common):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    database_url: str | None = None
    db_sync: DbSync = Field(
        "full",
        description="SQLite: full fsyncs every commit; normal survives a crash of the backend "
        "process but may lose the last commits on a power loss or an OS crash",
    )
    health_interval_s: float = Field(10.0, gt=0)
    health_timeout_s: float = Field(5.0, gt=0)
    health_failure_threshold: int = Field(3, ge=1)
    health_concurrency: int = Field(64, ge=1)
    worker_removal_s: float = Field(300.0, gt=0)
    probe_timeout_s: float = Field(1.0, gt=0, description="check after a worker's session drops")
    dispatch_timeout_s: float = Field(10.0, gt=0)
    max_losses: int = Field(3, ge=1, description="lost attempts before an operation fails")
    max_pending: int = Field(10_000, ge=1, description="queue bound; beyond it submit gets 429")
    max_unfinished_per_owner: int = Field(
        10_000, ge=1, description="unfinished operations one API key (owner) may have; then 429"
    )
    progress_persist_interval_s: float = Field(2.0, gt=0)
    placement: Placement = Field(
        "round_robin", description="round_robin, capacity or fastest (see domain/placement.py)"
    )
    aging_interval_s: float = Field(
        300.0, gt=0, description="a queued operation gains one priority level per interval"
    )
    auth_failure_limit: int = Field(
        30, ge=1, description="failed authentications from one address before it gets 429"
    )
    auth_failure_window_s: float = Field(60.0, gt=0, description="...counted over this window")
    audit_checkpoint_every: int = Field(
        100, ge=1, le=100_000, description="audit records between signed checkpoints"
    )
    worker_cert_lifetime_s: float = Field(
        86_400.0, ge=10, le=30 * 86_400, description="mtls: certificates issued to workers"
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return sqlite_url(self.data_dir)

    @model_validator(mode="after")
    def _timeouts_fit(self) -> Self:
        if self.health_timeout_s > self.health_interval_s * 10:
            raise ValueError("health_timeout_s is far above health_interval_s")
        return self


class WorkerSettings(_Common):
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=0, le=65535)
    worker_id: str | None = None
    worker_type: Literal["backtesting", "training"] = "backtesting"
    slots: int = Field(1, ge=1, le=1024)
    backend_url: str = "http://127.0.0.1:8000"
    advertise_url: str | None = Field(
        None, description="URL the backend uses to reach this worker (default: http://host:port)"
    )
    cancel_grace_s: float = Field(5.0, ge=0)
    shutdown_grace_s: float = Field(30.0, ge=0)
    progress_report_interval_s: float = Field(0.5, gt=0)
    register_backoff_max_s: float = Field(5.0, gt=0)
    backend_timeout_s: float = Field(
        10.0, gt=0, description="wait for the backend's answer; a lost one holds reports this long"
    )
    memory_gb: float | None = None
    cores: int | None = None
    labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="k=v,k=v: what operations may select on"
    )
    speed: float = Field(
        1.0, gt=0, le=1000, description="test workloads (diagnostic sleep, cpu) take seconds/speed"
    )
    execution_log: Path | None = Field(
        None, description="test runs: append a JSON line per operation start and end here"
    )
    bootstrap_token: SecretStr | None = Field(
        None, description="mtls: enroll with this one-time token when there is no certificate"
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _parse_labels(cls, given: Any) -> Any:
        if isinstance(given, str):
            return parse_labels(given)
        if isinstance(given, dict):
            return parse_labels(f"{key}={value}" for key, value in given.items())
        return given

    def resolved_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_WORKER_PORTS[self.worker_type]

    def resolved_worker_id(self) -> str:
        return self.worker_id or f"{socket.gethostname()}-{self.worker_type}"


class ClientSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WORKFLEET_", extra="ignore")

    backend_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None
    data_dir: Path = Path(".workfleet")
    tls_ca: Path | None = Field(None, description="https: the CA bundle to trust (only it)")
    tls_cert: Path | None = Field(None, description="https: a client certificate, if any")
    tls_key: Path | None = None

    def resolved_tls_ca(self) -> Path:
        return self.tls_ca or default_ca(self.data_dir)


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def sqlite_url(data_dir: Path) -> str:
    """The embedded default database: one SQLite file in the data directory."""
    return f"sqlite:///{(data_dir / 'workfleet.db').resolve()}"
