"""deploy/grafana against the code: every PromQL expression of the dashboards names only metrics that
the API (service/api/telemetry.py) or a joiner (consumers/joiner.py) exports, as their Prometheus
registries name them; the provisioning and docker-compose.yml wire Grafana to the Prometheus service."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from consumers.joiner import JoinerMetrics
from service.api.telemetry import Telemetry
from tests.deploy.test_compose import COMPOSE_DATA, SERVICES

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

# What a registry's collectors expose, by family type (the samples prometheus_client writes).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}
KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*\()?")


def exported(registry: CollectorRegistry) -> set[str]:
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]}


EXPORTED = exported(Telemetry().registry) | exported(JoinerMetrics().registry)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label names (in matchers and label lists), strings, durations or Grafana variables."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "1", text)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = LABEL_LISTS.sub(" ", text)
    names = set()
    for name, call in IDENTIFIER.findall(text):
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def expressions(node: Any) -> Iterator[str]:
    """Every `expr` of every panel and target, however deep (rows hold panels)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def variable_queries(dashboard: dict[str, Any]) -> Iterator[str]:
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        yield query["query"] if isinstance(query, dict) else str(query or "")


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def test_the_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, event_type) (rate(labelloop_feedback_delay_seconds_bucket{use_case=~"$uc",'
        ' job="x"}[$__rate_interval]))) / on (instance) group_left(kind) up offset 5m > bool 1e3'
    )
    assert metric_names(expr) == {"labelloop_feedback_delay_seconds_bucket", "up"}
    assert metric_names("sum(rate(a_total[5m])) and b or max_over_time(c[1h:5m])") == {"a_total", "b", "c"}


def test_the_registries_are_read_from_the_code() -> None:
    assert "labelloop_feedback_delay_seconds_bucket" in EXPORTED
    assert "labelloop_pending_windows" in EXPORTED
    assert "labelloop_joiner_consumer_lag_records" in EXPORTED
    assert "labelloop_labels_total" in EXPORTED


def test_there_is_a_dashboard() -> None:
    assert [p.name for p in DASHBOARDS] == ["labelloop.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_expression_names_only_exported_metrics(path: Path) -> None:
    dashboard = load(path)
    exprs = list(expressions(dashboard["panels"]))
    assert exprs, "no PromQL in the dashboard"
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"{expr!r} selects no metric"
        unknown = names - EXPORTED
        assert not unknown, f"{expr!r} names {sorted(unknown)}, not exported; exported: {sorted(EXPORTED)}"
        used |= names
    for query in variable_queries(dashboard):
        found = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][\w:]*)\s*(?:\{[^}]*\})?\s*,\s*\w+\s*\)\s*", query)
        assert found, f"variable query {query!r}"
        assert found.group(1) in EXPORTED
    # The figures operators watch are all on it: delays, label mix, pending, lag, dead letters.
    for needed in (
        "labelloop_feedback_delay_seconds_bucket",
        "labelloop_labels_total",
        "labelloop_event_outcomes_total",
        "labelloop_pending_windows",
        "labelloop_watermark_lag_seconds",
        "labelloop_dead_letters",
        "labelloop_joiner_consumer_lag_records",
    ):
        assert needed in used, needed


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_use_the_provisioned_datasource(path: Path) -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    uids = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("datasource"), dict):
                uids.add((node["datasource"]["type"], node["datasource"]["uid"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(load(path))
    assert uids == {("prometheus", source["uid"])}
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in SERVICES
    assert SERVICES[host]["image"].split(":")[0] == "prom/prometheus"
    assert any(p.endswith(f":{port}") for p in SERVICES[host]["ports"])
    ids = [panel["id"] for panel in load(path)["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_compose_provisions_grafana_from_deploy() -> None:
    grafana = SERVICES["grafana"]
    assert grafana["image"].split(":")[0] in ("grafana/grafana", "grafana/grafana-oss")
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "labelloop.yml").read_text())["providers"]
    (provider,) = providers
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    for volume, path in mounts.items():
        if not path.startswith("./"):
            assert path in COMPOSE_DATA["volumes"], volume
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_started"
