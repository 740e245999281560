"""deploy/prometheus and deploy/alertmanager: promtool and amtool checks, rule unit tests, and the
structure the issue asks for (alerts, firing and silent cases, scrape auth, label values)."""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from observability_assets import (
    ALERTMANAGER_CONFIG,
    BACKEND_JOB,
    CATALOGUE,
    GAPS,
    PROMETHEUS_DIR,
    RULE_FILES,
    RULE_TEST_FILES,
    SCRAPE_CONFIGS,
    SD_PATH,
    WORKERS_JOB,
    alerts,
    binary,
    dashboards,
    expressions,
    metric_names,
    needed_metrics,
    recorded,
    recording_names,
    rules,
)
from workfleet.domain.operations import TERMINAL
from workfleet.domain.workers import WORKER_STATUSES

# the issue's list, each with the alert that covers it
REQUIRED_ALERTS = {
    "worker down": "WorkfleetWorkerDown",
    "worker unavailable": "WorkfleetWorkerUnavailable",
    "worker unavailable for long": "WorkfleetWorkerUnavailableLong",
    "no worker of a type available": "WorkfleetNoWorkerAvailable",
    "fleet saturated": "WorkfleetFleetSaturated",
    "queue backlog growing": "WorkfleetQueueBacklogGrowing",
    "operation failure ratio": "WorkfleetHighOperationFailureRate",
    "operation stalled without progress": "WorkfleetOperationStalled",
    "backend down": "WorkfleetBackendDown",
    "certificate expiring soon": "WorkfleetCertificateExpiringSoon",
    "Prometheus and backend disagree on live workers": "WorkfleetWorkerCountMismatch",
    "always-firing watchdog": "Watchdog",
}
ALWAYS_FIRING = {"Watchdog"}
SEVERITIES = {"critical", "warning", "none"}
SELF_REPORTED_WORKER_STATES = {"idle", "busy", "draining"}


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_rule_files_pass_promtool_check_rules(path: Path) -> None:
    done = run(binary("promtool"), "check", "rules", path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TEST_FILES
    done = run(binary("promtool"), "test", "rules", *RULE_TEST_FILES)
    assert done.returncode == 0, done.stdout + done.stderr


def _alert_cases() -> dict[str, dict[str, int]]:
    """alertname -> {"firing": n, "silent": n} over every promtool test file."""
    cases: dict[str, dict[str, int]] = {}
    for path in RULE_TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "firing" if case.get("exp_alerts") else "silent"
                counts = cases.setdefault(case["alertname"], {"firing": 0, "silent": 0})
                counts[kind] += 1
    return cases


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    cases = _alert_cases()
    missing = []
    for name in alerts():
        counts = cases.get(name, {"firing": 0, "silent": 0})
        if counts["firing"] == 0 or (counts["silent"] == 0 and name not in ALWAYS_FIRING):
            missing.append(f"{name}: {counts}")
    assert not missing, "alerts without both a firing and a silent promtool case: " + str(missing)
    assert set(cases) <= set(alerts()), "promtool cases for alerts that do not exist"


def test_the_alerts_the_issue_asks_for_exist() -> None:
    absent = {need: name for need, name in REQUIRED_ALERTS.items() if name not in alerts()}
    assert not absent


def test_the_rule_files_are_loaded_by_the_unit_tests() -> None:
    for path in RULE_TEST_FILES:
        listed = yaml.safe_load(path.read_text())["rule_files"]
        resolved = {(path.parent / name).resolve() for name in listed}
        assert resolved == {p.resolve() for p in RULE_FILES}, path.name


@pytest.mark.parametrize("name", sorted(alerts()))
def test_alerts_are_named_labelled_and_annotated(name: str) -> None:
    rule = alerts()[name]
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), "alert names are CamelCase"
    assert name in ALWAYS_FIRING or name.startswith("Workfleet")
    assert rule["labels"]["severity"] in SEVERITIES
    assert {"summary", "description"} <= set(rule["annotations"])
    if name not in ALWAYS_FIRING:
        assert "for" in rule, "every symptom gets some slack"
        uids = {board["uid"] for board in dashboards().values()}
        assert rule["annotations"]["dashboard"] in uids


def test_rules_use_catalogue_metrics_and_defined_recordings() -> None:
    for rule in rules():
        expr = str(rule["expr"])
        unknown = metric_names(expr) - CATALOGUE
        assert not unknown, f"{rule.get('alert') or rule.get('record')}: not in the catalogue"
        assert recording_names(expr) <= recorded()


def _label_values(label: str) -> set[str]:
    values: set[str] = set()
    for expr in expressions():
        for match in re.finditer(rf'\b{label}\s*(?:=|!=|=~|!~)\s*"([^"]*)"', expr):
            values.update(v for v in match[1].split("|") if v)
    return values


def test_label_values_are_the_domain_words() -> None:
    """Worker states and operation outcomes as the code names them (so a dashboard's
    `state="temporarily_unavailable"` matches what the collector emits)."""
    assert _label_values("state") <= set(WORKER_STATUSES) | SELF_REPORTED_WORKER_STATES
    assert _label_values("status") <= set(TERMINAL)
    assert _label_values("job") <= {BACKEND_JOB, WORKERS_JOB}


def _scrape_jobs(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in config["scrape_configs"]}


def _checkable_copy(path: Path, tmp_path: Path) -> Path:
    """The config with its credential and certificate files pointed at stand-ins (promtool
    checks that they exist) and its rules next to it, as in deploy/prometheus."""
    stand_ins: dict[str, Path] = {}

    def stand_in(original: str) -> str:
        if original not in stand_ins:
            stand_ins[original] = tmp_path / f"file-{len(stand_ins)}{Path(original).suffix}"
            stand_ins[original].write_text("stand-in\n")
        return str(stand_ins[original])

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: stand_in(value)
                if key in ("credentials_file", "cert_file", "key_file", "ca_file")
                else rewrite(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    config = rewrite(yaml.safe_load(path.read_text()))
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    copy = tmp_path / path.name
    copy.write_text(yaml.safe_dump(config))
    return copy


@pytest.mark.parametrize("path", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_scrape_configs_pass_promtool_check_config(path: Path, tmp_path: Path) -> None:
    done = run(binary("promtool"), "check", "config", _checkable_copy(path, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


@pytest.mark.parametrize("path", SCRAPE_CONFIGS, ids=lambda p: p.name)
def test_scrape_configs_find_workers_through_the_backend(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    jobs = _scrape_jobs(config)
    assert set(jobs) == {BACKEND_JOB, WORKERS_JOB}
    assert config["rule_files"] == ["rules/*.yml"]
    (sd,) = jobs[WORKERS_JOB]["http_sd_configs"]
    assert sd["url"].endswith(SD_PATH)
    backend_target = jobs[BACKEND_JOB]["static_configs"][0]["targets"][0]
    assert backend_target in sd["url"], "service discovery asks the backend that is scraped"


def test_token_mode_scrapes_send_the_credential_everywhere() -> None:
    jobs = _scrape_jobs(yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text()))
    clients = [
        jobs[BACKEND_JOB],
        jobs[WORKERS_JOB],
        jobs[WORKERS_JOB]["http_sd_configs"][0],
    ]
    for client in clients:
        assert client["authorization"]["credentials_file"], client
        assert "credentials" not in client["authorization"], "no secret in the config file"


def test_mtls_mode_scrapes_present_the_monitoring_certificate_everywhere() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-mtls.yml").read_text())
    jobs = _scrape_jobs(config)
    for job in jobs.values():
        assert job["scheme"] == "https"
    clients = [jobs[BACKEND_JOB], jobs[WORKERS_JOB], jobs[WORKERS_JOB]["http_sd_configs"][0]]
    for client in clients:
        tls = client["tls_config"]
        assert Path(tls["cert_file"]).name == "monitoring.crt"
        assert Path(tls["key_file"]).name == "monitoring.key"
        assert tls["ca_file"], "only the cluster's CA is trusted"
        assert not tls.get("insecure_skip_verify")
    assert jobs[WORKERS_JOB]["http_sd_configs"][0]["url"].startswith("https://")


def test_alertmanager_config_passes_amtool_check_config() -> None:
    done = run(binary("amtool"), "check-config", ALERTMANAGER_CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=WorkfleetBackendDown", "severity=critical"], "pager"),
        (["alertname=WorkfleetNoWorkerAvailable", "severity=critical"], "pager"),
        (["alertname=WorkfleetWorkerDown", "severity=warning", "worker_type=backtesting"], "chat"),
        (["alertname=Watchdog", "severity=none"], "deadmansswitch"),
    ],
)
def test_alertmanager_routes(labels: list[str], receiver: str) -> None:
    done = run(
        binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_alertmanager_inhibitions_name_existing_alerts() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    names = set(alerts())
    for rule in config["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            match = re.fullmatch(r'alertname\s*(=~|=)\s*"([^"]+)"', matcher)
            assert match, matcher
            pattern = match[2] if match[1] == "=~" else re.escape(match[2])
            assert any(re.fullmatch(pattern, name) for name in names), matcher


def test_every_gap_is_a_catalogue_metric_the_assets_use() -> None:
    """GAPS (what the code does not export yet) lists only what rules or dashboards need."""
    used = set().union(*(needed_metrics(expr) for expr in expressions()))
    for gap in GAPS:
        assert gap.metric in CATALOGUE and gap.metric in used, gap.selector
