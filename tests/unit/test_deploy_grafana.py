"""deploy/grafana: dashboard JSON structure, unique ids, the datasource variable, no hard-coded
hosts, every query parses (promtool, after Grafana's variables are substituted), every metric is
in the catalogue, provisioning files. Whether each query returns data is
tests/integration/test_prometheus_dashboards.py."""

import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from observability_assets import (
    CATALOGUE,
    DASHBOARD_FILES,
    PROVISIONING_DIR,
    QUESTIONS,
    all_panels,
    binary,
    dashboards,
    metric_names,
    needed_metrics,
    panel_queries,
    recorded,
    recording_names,
    substitute,
    variable_queries,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ALLOWED_WINDOWS = {"$__rate_interval", "$__range", "1h"}
HOST_PATTERNS = [
    re.compile(r"://"),
    re.compile(r"\blocalhost\b"),
    re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"),
    re.compile(r"\b[a-z][\w.-]*:\d{2,5}\b"),  # host:port
]
BOARDS = sorted(dashboards().items())


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *_strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def test_the_three_dashboards_exist() -> None:
    assert {path.stem for path in DASHBOARD_FILES} == {
        "system-overview",
        "worker-health",
        "operations",
    }


def test_dashboard_uids_and_titles_are_unique() -> None:
    uids = [board["uid"] for board in dashboards().values()]
    titles = [board["title"] for board in dashboards().values()]
    assert len(set(uids)) == len(uids) and len(set(titles)) == len(titles)


@pytest.mark.parametrize(("name", "board"), BOARDS, ids=[name for name, _ in BOARDS])
def test_dashboard_structure(name: str, board: dict[str, Any]) -> None:
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time", "tags"):
        assert key in board, key
    assert board["uid"] == f"workfleet-{name}"
    assert isinstance(board["schemaVersion"], int)
    panels = all_panels(board)
    assert panels
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), "unique panel ids"
    for panel in panels:
        assert panel["title"] and panel["type"], panel["id"]
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['id']} is wider than the grid"
        assert panel.get("description"), f"panel {panel['id']} says what it answers"
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert panel["targets"] and len(set(ref_ids)) == len(ref_ids)


@pytest.mark.parametrize(("name", "board"), BOARDS, ids=[name for name, _ in BOARDS])
def test_panels_do_not_overlap(name: str, board: dict[str, Any]) -> None:
    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        return {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }

    for a, b in itertools.combinations(all_panels(board), 2):
        assert not cells(a) & cells(b), f"panels {a['id']} and {b['id']} overlap"


@pytest.mark.parametrize(("name", "board"), BOARDS, ids=[name for name, _ in BOARDS])
def test_a_datasource_variable_that_every_panel_and_query_uses(
    name: str, board: dict[str, Any]
) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
            assert variable.get("includeAll") and variable.get("allValue") == ".*"
    for panel in all_panels(board):
        assert panel["datasource"] == DATASOURCE, panel["id"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["id"], target["refId"])


def test_no_hard_coded_hosts() -> None:
    files = [*DASHBOARD_FILES, *PROVISIONING_DIR.rglob("*.yml")]
    for path in files:
        text = path.read_text()
        document = yaml.safe_load(text)  # JSON is YAML
        for string in _strings(document):
            for pattern in HOST_PATTERNS:
                assert not pattern.search(string), f"{path.name}: {string!r} names a host"


def test_range_windows_are_grafana_variables_or_long_fixed_ones() -> None:
    for query in panel_queries():
        for window in re.findall(r"\[([^\]]+)\]", query.expr):
            assert window in ALLOWED_WINDOWS, f"{query.case_id}: [{window}]"


def test_every_query_uses_catalogue_metrics_and_defined_recordings() -> None:
    for query in panel_queries():
        assert needed_metrics(query.expr), f"{query.case_id} selects no metric of ours"
        assert metric_names(query.expr) <= CATALOGUE, query.case_id
        assert recording_names(query.expr) <= recorded(), query.case_id
    for variable in variable_queries():
        assert metric_names(variable.selector) <= CATALOGUE, variable.case_id


def test_variables_used_by_queries_are_defined() -> None:
    for board in dashboards().values():
        defined = {v["name"] for v in board["templating"]["list"]}
        texts = [t["expr"] for p in all_panels(board) for t in p["targets"]]
        texts += [v.selector for v in variable_queries() if v.dashboard == board["uid"]]
        for text in texts:
            for used in re.findall(r"\$\{?(\w+)", text):
                assert used.startswith("__") or used in defined, f"{board['uid']}: ${used}"


def test_every_query_parses_after_variable_substitution(tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule (`promtool check rules`); Grafana's
    `$__rate_interval` and friends would not parse, so they are substituted first."""
    records = [
        {"record": f"panel_{i}", "expr": query.promql} for i, query in enumerate(panel_queries())
    ]
    records += [
        {"record": f"variable_{i}", "expr": substitute(variable.selector)}
        for i, variable in enumerate(variable_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": records}]}))
    done = subprocess.run(
        [binary("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    named = {f"panel_{i}": q.case_id for i, q in enumerate(panel_queries())}
    output = re.sub(r"\bpanel_\d+\b", lambda m: named[m[0]], done.stdout + done.stderr)
    assert done.returncode == 0, output
    assert f"SUCCESS: {len(records)} rules found" in output


def test_substitution_leaves_no_grafana_syntax() -> None:
    for query in panel_queries():
        assert "$" not in query.promql and "[[" not in query.promql, query.case_id


def test_every_question_of_the_brief_has_a_panel() -> None:
    titles = {
        (board["uid"], panel["title"])
        for board in dashboards().values()
        for panel in all_panels(board)
    }
    missing = {q: where for q, where in QUESTIONS.items() if where not in titles}
    assert not missing


# Issue 6: the scheduling panels, each with the metric it reads and the labels its legend shows.
SCHEDULING_PANELS = {
    "Queue depth by priority": ("workfleet_queue_depth", {"priority"}),
    "Queue depth by submitter": ("workfleet_queue_depth_by_submitter", {"submitter"}),
    "Placement decisions by policy and outcome": (
        "workfleet_placement_decisions_total",
        {"policy", "outcome"},
    ),
    "Placement time p95": ("workfleet_placement_seconds_bucket", set()),
    "Queue wait p95 by priority": ("workfleet_operation_queue_wait_seconds_bucket", {"priority"}),
}


def test_the_operations_dashboard_has_the_scheduling_panels() -> None:
    queries = {q.panel_title: q for q in panel_queries() if q.dashboard == "workfleet-operations"}
    for title, (metric, legend) in SCHEDULING_PANELS.items():
        query = queries[title]
        assert metric_names(query.expr) == {metric}, title
        assert query.expected_labels == legend, title
        assert not query.instant, f"{title}: a time series, not one value"
    panels = {p["title"]: p for p in all_panels(dashboards()["operations"])}
    for title in SCHEDULING_PANELS:
        assert panels[title]["description"].startswith("Scheduling: "), title
        assert "?" in panels[title]["description"], f"{title}: names the question it answers"


def test_datasource_provisioning() -> None:
    (path,) = (PROVISIONING_DIR / "datasources").glob("*.yml")
    config = yaml.safe_load(path.read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert source["type"] == "prometheus" and source["uid"] and source["access"] == "proxy"
    assert re.fullmatch(r"\$\{?\w+\}?", source["url"]), "the address comes from the environment"
    assert source["jsonData"]["timeInterval"] == "15s"


def test_dashboard_provisioning() -> None:
    (path,) = (PROVISIONING_DIR / "dashboards").glob("*.yml")
    config = yaml.safe_load(path.read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
