"""deploy/ observability assets as the tests see them: the Grafana dashboards and their queries
(Grafana's variables substituted), the Prometheus rules, the metric catalogue they are written
against (reference anchors-observability §2, `workfleet_` prefix) and what of it the code does
not export yet (GAPS).

Shared by tests/unit/test_deploy_*.py (static checks) and
tests/integration/test_prometheus_*.py (a real Prometheus scraping a real cluster).
"""

import json
import os
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TEST_FILES = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
SCRAPE_CONFIGS = sorted(PROMETHEUS_DIR.glob("prometheus*.yml"))
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD_FILES = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PROVISIONING_DIR = DEPLOY / "grafana" / "provisioning"

BACKEND_JOB = "workfleet-backend"
WORKERS_JOB = "workfleet-workers"
SD_PATH = "/api/v1/prometheus/targets"

DEBIAN_PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "amtool": "prometheus-alertmanager",
}


def binary(name: str) -> str:
    """The path of a Debian-packaged tool; skips without it, except in CI (.ci/run installs
    it), where a missing tool is a failure."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} is not installed (Debian package {DEBIAN_PACKAGES.get(name, name)})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: .ci/run installs it")
    pytest.skip(message)


# ------------------------------------------------------------------------------------------------
# The catalogue: every series name the rules and dashboards may use. A name outside it is a typo.

_COUNTERS = (
    # worker
    "workfleet_worker_operations",
    "workfleet_worker_operation_errors",
    "workfleet_worker_callback_failures",
    # backend
    "workfleet_operations_dispatched",
    "workfleet_operations_completed",
    "workfleet_operation_dispatch_failures",
    "workfleet_worker_registrations",
    "workfleet_worker_deregistrations",
    "workfleet_worker_health_checks",
    "workfleet_http_requests",
    # scheduling (issue 6)
    "workfleet_placement_decisions",
)
_HISTOGRAMS = (
    "workfleet_worker_operation_duration_seconds",
    "workfleet_operation_queue_wait_seconds",
    "workfleet_operation_duration_seconds",
    "workfleet_http_request_duration_seconds",
    "workfleet_placement_seconds",
)
_GAUGES = (
    # worker
    "workfleet_worker_operations_in_progress",
    "workfleet_worker_max_concurrent_operations",
    "workfleet_worker_state",
    "workfleet_worker_operation_last_progress_timestamp_seconds",
    "workfleet_worker_cpu_usage_ratio",
    "workfleet_worker_memory_usage_ratio",
    "workfleet_worker_build_info",
    # backend
    "workfleet_workers",
    "workfleet_registry_worker_state",
    "workfleet_worker_last_seen_timestamp_seconds",
    "workfleet_operations_running",
    "workfleet_operations_pending",
    "workfleet_registry_collect_duration_seconds",
    "workfleet_build_info",
    "workfleet_queue_depth",
    "workfleet_queue_depth_by_submitter",
    # not in the reference catalogue (which has no certificate metric): proposed here, exported
    # by every process in mtls mode, certificate="identity" (its own) or "ca" (its trust anchor)
    "workfleet_tls_certificate_not_before_timestamp_seconds",
    "workfleet_tls_certificate_not_after_timestamp_seconds",
    # Prometheus and the default client collectors
    "up",
    "process_resident_memory_bytes",
)
CATALOGUE: frozenset[str] = frozenset(
    [f"{name}_total" for name in _COUNTERS]
    + [f"{name}{suffix}" for name in _HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")]
    + list(_GAUGES)
)

# What the rules and dashboards need that the code does not export yet, as selectors that must
# match at least one series of a cluster that ran operations (label!="": the label must exist).
# Each entry makes the live checks that need it xfail(strict): when the code exports it, those
# cases pass, pytest reports XPASS(strict) as a failure, and the entry must go.


@dataclass(frozen=True)
class Gap:
    selector: str
    why: str
    label_only: bool = False  # the metric exists; only queries that show the label need this

    @property
    def metric(self) -> str:
        return self.selector.split("{", 1)[0]

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(re.findall(r'(\w+)!=""', self.selector))


GAPS: tuple[Gap, ...] = ()  # every metric of the catalogue is exported (issue 5)
# Exported in mtls mode only: the token-mode live test skips what needs them, and
# tests/integration/test_metrics_catalogue.py scrapes them from an mtls backend and worker.
MTLS_ONLY: frozenset[str] = frozenset(
    {
        "workfleet_tls_certificate_not_after_timestamp_seconds",
        "workfleet_tls_certificate_not_before_timestamp_seconds",
    }
)


# ------------------------------------------------------------------------------------------------
# PromQL as text: metric names, recording rule names, Grafana variables

_RECORDING_NAME = re.compile(r"\b[a-z_]+:[a-z0-9_:]+\b")
_METRIC_NAME = re.compile(r"\b(?:workfleet_[a-z0-9_]+|process_[a-z0-9_]+)\b|\bup\b(?=\s*\{)")
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")

GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
    "__range_s": "3600",
}


def recording_names(expr: str) -> set[str]:
    return set(_RECORDING_NAME.findall(_strip_strings(expr)))


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (recording rule names excluded)."""
    without_recorded = _RECORDING_NAME.sub(" ", _strip_strings(expr))
    return {match.group(0) for match in _METRIC_NAME.finditer(without_recorded)}


def _strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def legend_labels(legend: str) -> set[str]:
    return set(_LEGEND_LABEL.findall(legend))


def substitute(text: str, values: dict[str, str] | None = None) -> str:
    """Grafana's variables replaced as Grafana would with every variable at "All" (`.*`)."""
    known = {**GRAFANA_BUILTINS, **(values or {})}

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        return known.get(name, ".*")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, text)


# ------------------------------------------------------------------------------------------------
# Dashboards


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str  # uid
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    legend: str
    instant: bool

    @property
    def case_id(self) -> str:
        return f"{self.dashboard.removeprefix('workfleet-')}:{self.panel_id}{self.ref_id}"

    @property
    def promql(self) -> str:
        return substitute(self.expr)

    @property
    def expected_labels(self) -> set[str]:
        return legend_labels(self.legend)

    def gaps(self) -> list[Gap]:
        """The GAPS this query needs: it selects the metric and, for a label gap, shows the
        label in its legend."""
        names = needed_metrics(self.expr)
        return [
            gap
            for gap in GAPS
            if gap.metric in names and (not gap.label_only or gap.labels & self.expected_labels)
        ]


@cache
def dashboards() -> dict[str, dict[str, Any]]:
    """File stem -> dashboard JSON."""
    return {path.stem: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in board.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold their panels
    return panels


def panel_queries() -> list[PanelQuery]:
    queries = []
    for board in dashboards().values():
        for panel in all_panels(board):
            for target in panel.get("targets", []):
                queries.append(
                    PanelQuery(
                        dashboard=board["uid"],
                        panel_id=panel["id"],
                        panel_title=panel["title"],
                        ref_id=target["refId"],
                        expr=target["expr"],
                        legend=target.get("legendFormat", ""),
                        instant=bool(target.get("instant")),
                    )
                )
    return queries


@dataclass(frozen=True)
class VariableQuery:
    dashboard: str
    name: str
    selector: str
    label: str

    @property
    def case_id(self) -> str:
        return f"{self.dashboard.removeprefix('workfleet-')}:{self.name}"


def variable_queries() -> list[VariableQuery]:
    found = []
    for board in dashboards().values():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", text.strip())
            assert match, f"{board['uid']} ${variable['name']}: not label_values(selector, label)"
            found.append(VariableQuery(board["uid"], variable["name"], match[1], match[2]))
    return found


# ------------------------------------------------------------------------------------------------
# Rules


@cache
def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in RULE_FILES:
        groups.extend(yaml.safe_load(path.read_text())["groups"])
    return groups


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def needed_metrics(expr: str) -> set[str]:
    """Series names an expression needs, through the recording rules it uses."""
    sources = {rule["record"]: str(rule["expr"]) for rule in rules() if "record" in rule}
    names = metric_names(expr)
    for name in recording_names(expr):
        names |= needed_metrics(sources[name]) if name in sources else set()
    return names


def expressions() -> list[str]:
    """Every PromQL expression of the assets (dashboard ones substituted)."""
    return [str(rule["expr"]) for rule in rules()] + [q.promql for q in panel_queries()]


# Which panel answers each question of the brief (the operator guide points at these).
QUESTIONS: dict[str, tuple[str, str]] = {
    "How many workers are running?": ("workfleet-system-overview", "Workers registered"),
    "Capacity utilisation": ("workfleet-system-overview", "Capacity utilisation"),
    "Which workers are healthy?": ("workfleet-worker-health", "Workers as the backend sees them"),
    "What runs now?": ("workfleet-system-overview", "Operations running"),
    "Average duration": ("workfleet-operations", "Average run time by type"),
    "Throughput in operations per hour": (
        "workfleet-operations",
        "Throughput by type (operations/hour)",
    ),
    "Fastest and slowest workers": ("workfleet-operations", "Slowest workers (average run time)"),
    "Bottlenecks": ("workfleet-system-overview", "Queue wait p95"),
    "Why did an operation fail?": ("workfleet-operations", "Failures by error type"),
    "What was a worker doing when it died?": (
        "workfleet-worker-health",
        "What each worker ran before its scrapes stopped",
    ),
    "How long has a worker been unavailable?": (
        "workfleet-worker-health",
        "Time since last healthy",
    ),
    "Error rate over time": ("workfleet-operations", "Failure ratio by type"),
}
