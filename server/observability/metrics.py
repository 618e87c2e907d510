"""Prometheus metrics of the server, served over HTTP on their own port by `metrics_endpoint` (the interceptor that
feeds them per RPC is `ortserve.server.interceptors.observing`).

Hot path: per call, one counter and one histogram observation (interceptor) plus one queue-wait observation
(batcher hook); per batch, four histogram observations. Everything else (queue depth, calls in flight, versions,
states, polls) is read from the model table when Prometheus scrapes, by `ModelTableCollector`.

Label values are bounded: `model` is a served model's name, `_unknown` for any other name a caller sends and `_none`
for RPCs without one (ListModels); `protocol` is `grpc` or `http`; `rpc` is a method of a registered service, or
over HTTP a route template (`POST /v2/models/{name}/infer`, `_unrouted` for paths no route has); `code` a gRPC
status name (over HTTP, the code of the same error in the shared error table: 429 is RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..stage_timings import BatchStages, width_band
from ..types import ModelState, PollStats

if TYPE_CHECKING:
    from ..challenger import Challenger
    from ..model_table import ModelTable, ServedModel

access_log = logging.getLogger("ortserve.access")

#: `model` label of calls naming a model this server does not serve (a caller's typo must not create a series).
UNKNOWN_MODEL = "_unknown"
#: `model` label of RPCs that name no model (ListModels).
NO_MODEL = "_none"
#: RPCs left unobserved: health checks (polled every few seconds by orchestrators) and reflection (streaming).
UNOBSERVED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_TEXTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
ESTIMATE_RATIO_BUCKETS = (0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0)
PADDED_TOKENS_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384)


class ServerMetrics:
    """The metrics of one server, in a registry of their own (several servers may share a process, as in tests)."""

    def __init__(
        self, table: ModelTable, registry: CollectorRegistry | None = None, challengers: Sequence[Challenger] = ()
    ):
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.in_flight: dict[str, int] = {}
        """Calls being handled, by `model` label; written by the interceptor, read at scrape time."""
        self.requests = Counter(
            "ortserve_requests",
            "Calls handled, by model, protocol (grpc, http), RPC or HTTP route, and gRPC status code.",
            ["model", "protocol", "rpc", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ortserve_request_duration_seconds",
            "Time from receiving a call to its answer (queue, tokenization, inference and the rest).",
            ["model", "protocol", "rpc"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue_wait_seconds = Histogram(
            "ortserve_queue_wait_seconds",
            "Time a call's texts waited in the model's queue before their batch ran.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.tokenization_seconds = Histogram(
            "ortserve_tokenization_duration_seconds",
            "Time tokenizing one batch.",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "ortserve_inference_duration_seconds",
            "Time in ONNX Runtime for one batch (all its length groups).",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "ortserve_batch_size_texts",
            "Texts per batch run by the model.",
            ["model"],
            buckets=BATCH_TEXTS_BUCKETS,
            registry=self.registry,
        )
        self.run_estimate_ratio = Histogram(
            "ortserve_run_estimate_ratio",
            "Estimated over measured duration of each model run, by run width band in tokens (upper bound; 0 past the "
            "widest): how far the cost model that admission trusts is off.",
            ["model", "width"],
            buckets=ESTIMATE_RATIO_BUCKETS,
            registry=self.registry,
        )
        self.batch_padded_tokens = Histogram(
            "ortserve_batch_padded_tokens",
            "Tokens computed per batch, padding included.",
            ["model"],
            buckets=PADDED_TOKENS_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(ModelTableCollector(table, self.in_flight))
        if challengers:
            self.registry.register(ChallengerCollector(challengers))
        # Children resolved once: `.labels()` takes a lock and builds a key on every call.
        self._request_children: dict[tuple[str, str, str, str], Any] = {}
        self._duration_children: dict[tuple[str, ...], Any] = {}
        self._batch_children: dict[str, tuple[Any, Any, Any, Any, Any]] = {}
        for model in table:  # every model's series exist from the start, so rate() and alerts see a zero
            self._batch_series(model.name)

    def _batch_series(self, model: str) -> tuple[Any, Any, Any, Any, Any]:
        series = self._batch_children.get(model)
        if series is None:
            series = (
                self.queue_wait_seconds.labels(model),
                self.tokenization_seconds.labels(model),
                self.inference_seconds.labels(model),
                self.batch_texts.labels(model),
                self.batch_padded_tokens.labels(model),
            )
            self._batch_children[model] = series
        return series

    def observe_call(self, model: str, rpc: str, code: str, seconds: float, protocol: str = "grpc") -> None:
        key = (model, protocol, rpc, code)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(model, protocol, rpc, code)
        counter.inc()
        histogram = self._duration_children.get(key[:3])
        if histogram is None:
            histogram = self._duration_children[key[:3]] = self.request_seconds.labels(model, protocol, rpc)
        histogram.observe(seconds)

    def observe_queue_wait(self, model: str, seconds: float) -> None:
        self._batch_series(model)[0].observe(seconds)

    def observe_run_estimate(self, model: str, width: int, ratio: float) -> None:
        self.run_estimate_ratio.labels(model, str(width_band(width))).observe(ratio)

    def observe_stages(self, model: str, stages: BatchStages) -> None:
        _, tokenization, inference, texts, tokens = self._batch_series(model)
        tokenization.observe(stages.tokenize_s)
        inference.observe(stages.inference_s)
        texts.observe(stages.texts)
        tokens.observe(stages.padded_tokens)


class ModelTableCollector(Collector):
    """Reads queue depth, calls in flight, versions, states and registry polls from the model table at scrape time."""

    def __init__(self, table: ModelTable, in_flight: dict[str, int]):
        self._table = table
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily("ortserve_queue_texts", "Texts waiting in the model's queue.", labels=["model"])
        in_flight = GaugeMetricFamily("ortserve_calls_in_flight", "RPCs being handled.", labels=["model"])
        version = GaugeMetricFamily(
            "ortserve_model_version_info", "The version each model serves (value 1).", labels=["model", "version"]
        )
        state = GaugeMetricFamily(
            "ortserve_model_state",
            "1 for the model's current state (loading, serving, failed), else 0.",
            labels=["model", "state"],
        )
        loaded = GaugeMetricFamily(
            "ortserve_model_loaded_timestamp_seconds",
            "When the serving version was loaded (Unix time).",
            labels=["model"],
        )
        failed = CounterMetricFamily(
            "ortserve_model_failed_updates",
            "New versions that failed to download, load or warm up and were not swapped in.",
            labels=["model"],
        )
        polls = CounterMetricFamily(
            "ortserve_registry_polls",
            "Registry checks for a new version, by result (ok, error).",
            labels=["model", "result"],
        )
        last_poll = GaugeMetricFamily(
            "ortserve_registry_last_successful_poll_timestamp_seconds",
            "When the registry last answered a check for a new version (Unix time).",
            labels=["model"],
        )
        for model in self._table:
            name = model.name
            queued.add_metric([name], model.batcher.queued_texts)
            in_flight.add_metric([name], self._in_flight.get(name, 0))
            for each in ModelState:
                state.add_metric([name, each.value], 1.0 if model.state is each else 0.0)
            current = model.current
            if current is not None:
                version.add_metric([name, current.version], 1.0)
                loaded.add_metric([name], current.loaded_at.timestamp())
            failed.add_metric([name], model.failed_updates)
            stats = _poll_stats(model)
            polls.add_metric([name, "ok"], stats.succeeded)
            polls.add_metric([name, "error"], stats.failed)
            if stats.last_success_unix is not None:
                last_poll.add_metric([name], stats.last_success_unix)
        yield from (queued, in_flight, version, state, loaded, failed, polls, last_poll)


class ChallengerCollector(Collector):
    """The champion/challenger comparison of each model with a challenger, read at scrape time. Labels are bounded:
    `model` is a served name, `role` champion or challenger, `reason` one of `challenger.DROP_REASONS`, and the label
    pairs of the flip matrix are labels of the two versions (at most labels² series per model, only pairs seen)."""

    def __init__(self, challengers: Sequence[Challenger]):
        self._challengers = list(challengers)

    def collect(self) -> Iterator[Metric]:
        compared = CounterMetricFamily(
            "ortserve_challenger_texts_compared", "Texts run through both versions and compared.", labels=["model"]
        )
        agreed = CounterMetricFamily(
            "ortserve_challenger_agreements",
            "Compared texts whose top-1 label both versions agree on.",
            labels=["model"],
        )
        agreement = GaugeMetricFamily(
            "ortserve_challenger_agreement_ratio",
            "Top-1 agreement of challenger and champion (0 to 1).",
            labels=["model"],
        )
        pairs = CounterMetricFamily(
            "ortserve_challenger_label_pairs",
            "Compared texts by the champion's and the challenger's top label (off the diagonal: the flips).",
            labels=["model", "champion_label", "challenger_label"],
        )
        flips = CounterMetricFamily(
            "ortserve_challenger_label_flips",
            "Compared texts whose top label differs, by the champion's and the challenger's label.",
            labels=["model", "champion_label", "challenger_label"],
        )
        delta = GaugeMetricFamily(
            "ortserve_challenger_score_delta",
            "|challenger score - champion score| on the champion's top label: mean over all, p99 of the recent.",
            labels=["model", "stat"],
        )
        latency = GaugeMetricFamily(
            "ortserve_challenger_latency_seconds",
            "Latency of each version on the same shadowed texts (recent window), by quantile.",
            labels=["model", "role", "quantile"],
        )
        errors = CounterMetricFamily(
            "ortserve_challenger_errors", "Shadowed calls that failed, by version role.", labels=["model", "role"]
        )
        dropped = CounterMetricFamily(
            "ortserve_shadow_dropped_texts",
            "Shadow texts dropped instead of run, by reason.",
            labels=["model", "reason"],
        )
        queued = GaugeMetricFamily("ortserve_shadow_queue_texts", "Texts waiting to be shadowed.", labels=["model"])
        canary = CounterMetricFamily(
            "ortserve_canary_calls", "Calls answered by the challenger (canary).", labels=["model"]
        )
        comparing = GaugeMetricFamily(
            "ortserve_challenger_comparing", "1 while the two versions are compared, else 0.", labels=["model"]
        )
        version = GaugeMetricFamily(
            "ortserve_challenger_version_info", "The challenger version loaded (value 1).", labels=["model", "version"]
        )
        for challenger in self._challengers:
            name = challenger.champion.name
            report = challenger.report()
            compared.add_metric([name], report.texts_compared)
            agreed.add_metric([name], report.agreements)
            agreement.add_metric([name], report.agreement)
            for (champion_label, challenger_label), count in sorted(report.label_pairs.items()):
                pairs.add_metric([name, champion_label, challenger_label], count)
                if champion_label != challenger_label:
                    flips.add_metric([name, champion_label, challenger_label], count)
            delta.add_metric([name, "mean"], report.score_delta_mean)
            delta.add_metric([name, "p99"], report.score_delta_p99)
            for role, (p50, p95) in report.latency_s.items():
                latency.add_metric([name, role, "0.5"], p50)
                latency.add_metric([name, role, "0.95"], p95)
            for role, count in report.errors.items():
                errors.add_metric([name, role], count)
            for reason, count in challenger.feeder.dropped.items():
                dropped.add_metric([name, reason], count)
            queued.add_metric([name], challenger.feeder.queued_texts)
            canary.add_metric([name], challenger.canary_calls)
            comparing.add_metric([name], 1.0 if challenger.comparing else 0.0)
            if challenger.model.current is not None:
                version.add_metric([name, challenger.model.current.version], 1.0)
        yield from (
            compared,
            agreed,
            agreement,
            pairs,
            flips,
            delta,
            latency,
            errors,
            dropped,
            queued,
            canary,
            comparing,
        )
        yield version


def _poll_stats(model: ServedModel) -> PollStats:
    stats = getattr(model, "polls", None)  # absent on a model table built before polling existed (tests, tools)
    return stats if isinstance(stats, PollStats) else PollStats()
