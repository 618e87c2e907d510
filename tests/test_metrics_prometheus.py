"""A real Prometheus (Debian's package) scrapes a real server on 127.0.0.1 while calls run; the test reads the values
back through Prometheus' HTTP API, and checks that the shipped alert rules load and every dashboard query runs."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from .helpers import RunningServer, free_port, running_server
from .observability_helpers import OBSERVABILITY_DIR, classify, prometheus_binary

pytestmark = pytest.mark.slow  # a real Prometheus scraping a server for several seconds

CALLERS, CALLS_PER_CALLER = 4, 15
TEXTS = ["markets rallied after the report", "rain stopped play", "a third text, longer than the other two by far"]


class Prometheus:
    """`prometheus` on 127.0.0.1 scraping one target every second, with the shipped alert rules."""

    def __init__(self, binary: str, work: Path, target: str, scrape_settings: str = ""):
        """`scrape_settings`: more keys of the scrape config, as YAML flow entries (`scheme: https, ...`)."""
        self.port = free_port()
        config = work / "prometheus.yml"
        extra = f", {scrape_settings}" if scrape_settings else ""
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(OBSERVABILITY_DIR / 'alerts.yml'))}]\n"
            "scrape_configs:\n"
            f"  - {{job_name: ortserve, static_configs: [{{targets: [{json.dumps(target)}]}}]{extra}}}\n"
        )
        self.log = work / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)

    def query(self, expression: str) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query", query=expression)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready after {timeout}s: {self.log.read_text()[-2000:]}")

    def wait_for(self, expression: str, expected: float, timeout: float = 60) -> list[dict[str, Any]]:
        """Query until the single result of `expression` equals `expected` (scrapes are 1 s apart)."""
        end = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < end:
            result = self.query(expression)
            if len(result) == 1 and float(result[0]["value"][1]) == expected:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expression} never became {expected}: {result}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def scraped(
    artifacts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, Prometheus]]:
    binary = prometheus_binary("prometheus")
    with running_server(models=[f"bert={artifacts['bert']}"], metrics_port=0) as server:
        assert server.server is not None and server.server.metrics_endpoint is not None
        target = f"127.0.0.1:{server.server.metrics_endpoint.port}"
        prometheus = Prometheus(binary, tmp_path_factory.mktemp("prometheus"), target)
        try:
            prometheus.wait_ready()
            yield server, prometheus
        finally:
            prometheus.stop()


def test_prometheus_scrapes_the_calls_while_they_run(scraped: tuple[RunningServer, Prometheus]) -> None:
    server, prometheus = scraped
    prometheus.wait_for('up{job="ortserve"}', 1)
    codes: list[grpc.StatusCode] = []

    def caller(index: int) -> None:
        for call in range(CALLS_PER_CALLER):
            codes.append(classify(server.target, "bert", TEXTS[: 1 + (index + call) % 3]))
            time.sleep(0.2)  # spread the calls over several scrapes (1 s apart)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    # While the calls run, a scrape already sees some of them.
    prometheus_saw_running = False
    while any(thread.is_alive() for thread in threads):
        seen = prometheus.query('sum(ortserve_requests_total{model="bert", code="OK"})')
        prometheus_saw_running |= bool(seen) and 0 < float(seen[0]["value"][1]) < CALLERS * CALLS_PER_CALLER
        time.sleep(0.3)
    for thread in threads:
        thread.join()
    for _ in range(3):
        classify(server.target, "no-such-model", ["x"])
    assert codes == [grpc.StatusCode.OK] * CALLERS * CALLS_PER_CALLER
    total = CALLERS * CALLS_PER_CALLER
    texts = sum(1 + (i + c) % 3 for i in range(CALLERS) for c in range(CALLS_PER_CALLER))
    prometheus.wait_for('sum(ortserve_requests_total{model="bert", rpc="Classify", code="OK"})', total)
    prometheus.wait_for('sum(ortserve_requests_total{model="_unknown", code="NOT_FOUND"})', 3)
    assert prometheus_saw_running, "no scrape happened while the calls ran"
    # Values read back through Prometheus agree with what was sent.
    assert float(prometheus.query('sum(ortserve_batch_size_texts_sum{model="bert"})')[0]["value"][1]) == texts
    assert float(prometheus.query('sum(ortserve_queue_wait_seconds_count{model="bert"})')[0]["value"][1]) == total
    batches = float(prometheus.query('sum(ortserve_batch_size_texts_count{model="bert"})')[0]["value"][1])
    assert 1 <= batches <= total
    assert prometheus.query('count({model="no-such-model"})') == []  # no series for a caller's unknown name
    assert server.server is not None
    version = server.server.table.get("bert").current.version  # type: ignore[union-attr]
    (info,) = prometheus.query('ortserve_model_version_info{model="bert"}')
    assert info["metric"]["version"] == version
    assert float(prometheus.query('process_resident_memory_bytes{job="ortserve"}')[0]["value"][1]) > 0
    p99 = prometheus.query(
        'histogram_quantile(0.99, sum by (le) (rate(ortserve_request_duration_seconds_bucket{model="bert"}[1m])))'
    )
    assert float(p99[0]["value"][1]) > 0


def test_the_shipped_alert_rules_load_and_evaluate(scraped: tuple[RunningServer, Prometheus]) -> None:
    _, prometheus = scraped
    end = time.monotonic() + 30
    while True:
        groups = prometheus.get("/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(rule.get("lastEvaluation", "").startswith("2") for rule in rules) or time.monotonic() > end:
            break
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} >= {
        "OrtserveModelFailed",
        "OrtserveModelUpdateFailed",
        "OrtserveHighLatencyP99",
        "OrtserveOverloaded",
        "OrtserveRegistryUnreachable",
    }
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    firing = prometheus.get("/api/v1/alerts")["data"]["alerts"]
    assert [alert["labels"]["alertname"] for alert in firing if alert["state"] == "firing"] == []


def test_every_dashboard_query_runs(scraped: tuple[RunningServer, Prometheus]) -> None:
    _, prometheus = scraped
    dashboard = json.loads((OBSERVABILITY_DIR / "grafana-dashboard.json").read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 10
    answered = 0
    for expression in expressions:
        concrete = (
            expression.replace("$__rate_interval", "1m")
            .replace('"$instance"', '".*"')
            .replace('"$model"', '".*"')
            .replace('"$job"', '".*"')
        )
        answered += bool(prometheus.query(concrete))  # raises on a query Prometheus rejects
    assert answered >= len(expressions) // 2  # most panels have data after the calls above
