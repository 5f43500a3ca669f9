"""The Grafana dashboard and the alert rules, checked with the real tools: promtool (parse,
unit tests), tsc against Grafana's published schema types, and a real Prometheus server on
loopback scraping the running daemon. `make test` installs the tools (see Makefile `tools`)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import anyio
import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.conftest import make_settings
from tests.helpers import free_port, wait_for
from tests.test_deploy import kinds, render
from tests.test_http import aget
from worker.daemon.app import serve
from worker.emulator import create_function, create_queue
from worker.metrics import Metrics

pytestmark = pytest.mark.tools  # helm, promtool, prometheus, tsc (make tools)

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "retry-worker.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
GRAFANA = ROOT / "tests" / "grafana"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: `make test` installs it (Makefile target `tools`)"
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=300, check=False)


def dashboard_exprs() -> list[str]:
    data = json.loads(DASHBOARD.read_text())
    panels = [p for top in data["panels"] for p in [top, *top.get("panels", [])]]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def exported_names() -> set[str]:
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_alert_rules_pass_promtool_check():
    result = run(tool("promtool"), "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests():
    result = run(tool("promtool"), "test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_documented_and_annotated():
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    tested = {
        t["alertname"]
        for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    headings = set(re.findall(r"^## (\w+)$", RUNBOOK.read_text(), re.MULTILINE))
    assert len(rules) == 13
    for rule in rules:
        assert rule["alert"] in tested
        assert rule["alert"] in headings
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{rule['alert'].lower()}"
        names = set(re.findall(r"retry_worker_[a-z_]+", rule["expr"]))
        assert names <= exported_names(), names - exported_names()


def test_dashboard_queries_parse_and_name_only_exported_metrics(tmp_path):
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    variables = {"$queue": ".*", "$target": ".*", "$__rate_interval": "5m"}
    rules = []
    for index, expr in enumerate(exprs):
        for var, value in variables.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:check_{index}", "expr": expr})
        names = set(re.findall(r"retry_worker_[a-z_]+", expr))
        assert names, expr
        assert names <= exported_names(), names - exported_names()
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_has_the_variables_and_rows_operators_expect():
    data = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v["type"] for v in data["templating"]["list"]}
    assert variables == {
        "datasource": "datasource",
        "namespace": "query",
        "queue": "query",
        "target": "query",
    }
    rows = [p["title"] for p in data["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Targets", "Worker"]
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_type_checks_against_grafana_schema():
    tsc = GRAFANA / "node_modules" / ".bin" / "tsc"
    assert tsc.exists(), "`make test` installs the Grafana schema types (npm ci in tests/grafana)"
    # JSON cannot name TypeScript string enums: spell those values as the enum members.
    literal = DASHBOARD.read_text()
    for json_text, member in ENUM_VALUES.items():
        literal = literal.replace(json_text, member)
    check = GRAFANA / "dashboard.check.ts"
    check.write_text(
        'import { type Dashboard, MappingType, ThresholdsMode } from "@grafana/schema";\n'
        f"export const dashboard: Dashboard = {literal};\n"
    )
    result = run(
        str(tsc),
        "--noEmit",
        "--strict",
        "--skipLibCheck",
        "--target",
        "es2020",
        "--module",
        "esnext",
        "--moduleResolution",
        "bundler",
        check.name,
        cwd=GRAFANA,
    )
    assert result.returncode == 0, result.stdout + result.stderr


ENUM_VALUES = {
    '"mode": "absolute"': '"mode": ThresholdsMode.Absolute',
    '"mode": "percentage"': '"mode": ThresholdsMode.Percentage',
    '"type": "value"': '"type": MappingType.ValueToText',
    '"type": "range"': '"type": MappingType.RangeToText',
}


@pytest.mark.anyio
@pytest.mark.slow
async def test_a_real_prometheus_scrapes_the_daemon(aws, proxy, tmp_path):
    await create_function(aws.lambda_, "fn")
    await create_queue(aws.sqs, "fn-dlq")
    await create_queue(aws.sqs, "parked")
    settings = make_settings(
        proxy.url,
        {"fn": {"name": "fn-dlq", "target": {"kind": "lambda", "function": "fn"}}},
        http={"host": "127.0.0.1", "port": 0},
    )
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        runtime = await tg.start(
            functools.partial(serve, settings, stop, registry=CollectorRegistry())
        )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "retry-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{runtime.http_port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prometheus = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            query = urllib.parse.quote('retry_worker_receive_requests_total{queue="fn"}')
            url = f"http://127.0.0.1:{port}/api/v1/query?query={query}"

            async def has_series() -> bool:
                try:
                    status, body = await aget(url)
                except OSError:
                    return False
                return status == 200 and bool(json.loads(body)["data"]["result"])

            started = time.monotonic()
            await wait_for(has_series, timeout=60, interval=0.5)
            _, body = await aget(url)
            series = json.loads(body)["data"]["result"]
            assert {s["metric"]["job"] for s in series} == {"retry-worker"}
            assert time.monotonic() - started < 60
        finally:
            prometheus.terminate()
            prometheus.wait(10)
            stop.set()


@pytest.mark.parametrize("env", ["staging", "production"])
def test_prometheus_operator_picks_up_the_monitor_and_the_rules(env):
    """kube-prometheus-stack selects ServiceMonitors and PrometheusRules by `release`:
    staging's carried none, so its metrics and alerts were silently not there."""
    docs = kinds(render(env))
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert docs[kind]["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind


def test_the_dashboard_never_adds_up_what_every_replica_reports():
    """Each replica reports the same DLQ's depth: a sum over replicas shows it N times."""
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "retry-worker.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    depth = [e for e in exprs if "retry_worker_queue_messages" in e]
    assert depth
    assert all("max by (namespace, queue, state) (retry_worker_queue_messages" in e for e in depth)


def test_every_dashboard_query_is_scoped_to_the_chosen_namespace():
    """Two deployments in one cluster (or one Prometheus) must not merge on one dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["namespace"]["query"]["query"] == (
        "label_values(retry_worker_build_info, namespace)"
    )
    exprs = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    exprs += [variables[v]["query"]["query"] for v in ("queue", "target")]
    for expr in exprs:
        for selector in re.findall(r"retry_worker_[a-z_]+(\{[^}]*\})?", expr):
            assert 'namespace=~"$namespace"' in selector, expr


def _panels(panels: list) -> list:
    """Every panel, rows' panels included."""
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out
