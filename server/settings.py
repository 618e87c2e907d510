"""Server settings: every field is a `ortserve serve` flag and an `ORTSERVE_<FIELD>` environment variable."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from pydantic import Field, TypeAdapter, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .batch_limits import BatchLimits
from .runtime import SessionConfig
from .windows import LongTextPolicy

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


#: Server-wide settings that a model may set for itself: in its spec (`NAME=URI?max_batch_size=64&concurrent_runs=1`)
#: or in the environment (`ORTSERVE_MODEL_<NAME>_<SETTING>`, see `per_model_env_var`). A model's own value wins over
#: the environment's, which wins over the server-wide flag or variable. Each means the server-wide field of its name.
PER_MODEL_SETTINGS = (
    "max_batch_size",
    "max_batch_tokens",
    "max_batch_delay_ms",
    "max_queue_texts",
    "max_queue_tokens",
    "max_calls_in_flight",
    "concurrent_runs",
    "max_run_ms",
    "max_length",
    "long_text",
    "chunk_aggregate",
    "max_chunks",
    "chunk_stride",
)

#: Settings that only a model has (no server-wide field): its challenger and how traffic reaches it (see
#: `server/challenger.py`). Set like the others: `NAME=URI?challenger=URI2&shadow=0.1` or
#: `ORTSERVE_MODEL_<NAME>_CHALLENGER`, `..._SHADOW`, `..._CANARY`. A URI inside a spec that holds '?' or '&' must be
#: percent-encoded (it is decoded like any query value).
ROLLOUT_SETTINGS: dict[str, Any] = {
    # `models:/` URI (or artifact directory) of the challenger version compared with this model (the champion).
    "challenger": Annotated[str, Field(min_length=1)],
    # Share of texts (0 to 1, e.g. 0.1) also run through the challenger after the champion answered: compared, never
    # returned. 0 (the default) runs none.
    "shadow": Annotated[float, Field(ge=0.0, le=1.0)],
    # Share of calls (0 to 1, e.g. 0.05) answered by the challenger instead, sticky by the caller's canary key.
    "canary": Annotated[float, Field(ge=0.0, le=1.0)],
}


#: RPCs beyond the batchers' capacity that the default `max_concurrent_rpcs` lets in: health probes, metadata and
#: listing calls, which must still be answered while every model is busy.
RPC_HEADROOM = 16
#: Calls per model that the default `max_concurrent_rpcs` lets in, in multiples of what its run slots and next run
#: hold: room for the calls admission keeps queued at deadlines of about half a second, so that admission (which
#: tells a refused caller when to come back) refuses before the core does (which cannot say; its callers come back
#: at once). 500 callers x 500 ms on minilm, 2 cores: 452 and 432 answers/s at 1x, 499 and 537 at 2x (BENCHMARKS.md,
#: "Overload, fourth round").
RPC_LIMIT_PER_RUN_SET = 2


def per_model_env_var(model: str, setting: str) -> str:
    """The environment variable of `setting` for `model`: `ORTSERVE_MODEL_<NAME>_<SETTING>`, NAME upper-cased with
    every character other than a letter or digit as '_' (model `topic-v2`: `ORTSERVE_MODEL_TOPIC_V2_MAX_BATCH_SIZE`)."""
    return f"ORTSERVE_MODEL_{re.sub(r'[^A-Za-z0-9]', '_', model).upper()}_{setting.upper()}"


@dataclass(frozen=True)
class ModelSpec:
    """One `NAME=URI[?SETTING=VALUE&...]` spec: serve the model at URI under NAME, with `settings` overriding the
    server-wide values of `PER_MODEL_SETTINGS` for this model only (validated like the server-wide fields)."""

    name: str
    uri: str
    settings: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, uri = text.partition("=")
        name, uri = name.strip(), uri.strip()
        if not sep or not name or not uri:
            raise ValueError(f"model spec {text!r} must look like NAME=URI (e.g. topic=models:/topic-onnx@production)")
        if not _MODEL_NAME.match(name):
            raise ValueError(f"model name {name!r} may hold only letters, digits, '.', '_' and '-' (at most 128)")
        uri, _, query = uri.partition("?")
        if not uri:
            raise ValueError(f"model spec {text!r} has settings but no URI")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
        except ValueError:
            raise ValueError(
                f"model {name!r}: settings after '?' must look like SETTING=VALUE&SETTING=VALUE, got {query!r}"
            ) from None
        return cls(name, uri, {key: _model_setting(name, key, value) for key, value in pairs})


class ServerSettings(BaseSettings):
    """Settings of `ortserve serve`. Flags override environment variables, which override the defaults."""

    # Attribute docstrings become field descriptions: `ortserve serve --help` shows them.
    model_config = SettingsConfigDict(env_prefix="ORTSERVE_", extra="ignore", use_attribute_docstrings=True)

    models: Annotated[list[ModelSpec], NoDecode] = Field(default_factory=list)
    """Models to serve as NAME=URI pairs; in the environment, separated by ';' (ORTSERVE_MODELS). A model may set
    its own batching and admission settings after a '?' (NAME=URI?max_batch_size=64&concurrent_runs=1) or in
    ORTSERVE_MODEL_<NAME>_<SETTING> variables; see `PER_MODEL_SETTINGS`. Its challenger the same way:
    NAME=URI?challenger=URI2&shadow=0.1&canary=0.05; see `ROLLOUT_SETTINGS`."""
    host: str = "0.0.0.0"
    """Address to bind; 0.0.0.0 for every IPv4 interface, 127.0.0.1 for this machine only."""
    port: int = Field(50051, ge=0, le=65535)
    """TCP port to listen on; 0 picks a free one (the bound port is logged). A port in use stops the start."""
    reuse_port: bool = False
    """Set SO_REUSEPORT, so that several server processes may listen on one port and the kernel spreads connections
    over them. Off: starting on a port that another process holds fails instead of silently sharing it."""
    intra_op_threads: int = Field(0, ge=0)
    """ONNX Runtime intra-op threads per model session; 0 lets ONNX Runtime use one per core."""
    allow_spinning: bool = False
    """Let ONNX Runtime worker threads spin between ops. Leave it off: spinning threads starve the event loop
    and the other models of the cores (see BENCHMARKS.md)."""
    spin_during_runs: bool = False
    """Let ONNX Runtime worker threads spin between the ops of a run only, stopping as soon as the model has no run in
    progress: the latency-first setting for a lightly loaded server (a one-text run wakes no sleeping thread per op;
    idle threads never spin). Off: with concurrent calls runs overlap and the threads spin nearly always, taking the
    cores from the event loop (see BENCHMARKS.md). --allow-spinning (spinning between runs too) overrides it."""
    model_thread_nice: int = Field(10, ge=0, le=19)
    """How much lower the scheduling priority of the threads that run models (ONNX Runtime's and the run threads)
    is than the event loop's, as a Linux nice increment; 0 keeps them equal. The event loop takes, answers and refuses
    every call: under overload, with model threads busy on every core, it got a small share of the CPU and calls
    waited hundreds of milliseconds before the server even saw them (late refusals, lost goodput). Lowered, the model
    threads still get every cycle the loop does not use. Linux only (elsewhere a thread's priority is the process's)."""
    max_texts_per_request: int = Field(256, ge=1)
    """Most texts one Classify call may carry; more is INVALID_ARGUMENT (the client splits larger inputs)."""
    max_text_chars: int = Field(10_000, ge=1)
    """Characters of one text read at most: a longer text is cut there before tokenizing, like any text longer than
    the model reads (its --max-length tokens), and its result is marked truncated. The call is not refused for it."""
    max_request_chars: int = Field(4_000_000, ge=1)
    """Most characters of all the texts of one call together; more is INVALID_ARGUMENT (split the texts over several
    calls). gRPC refuses messages over 4 MB on its own (RESOURCE_EXHAUSTED)."""
    max_batch_size: int = Field(32, ge=1)
    """Most texts merged into one ONNX Runtime run from concurrent calls."""
    max_batch_tokens: int = Field(8192, ge=0)
    """Most padded tokens (texts × longest text) in one ONNX Runtime run; 0 for no bound."""
    max_batch_delay_ms: float = Field(0.0, ge=0)
    """How long a batch may wait for more calls before running; 0 runs as soon as the model is free."""
    max_queue_texts: int = Field(2048, ge=1)
    """Most texts waiting per model; beyond it calls fail fast with RESOURCE_EXHAUSTED."""
    cache_dir: Path | None = None
    """Local cache of registry artifacts, keyed by registered name and version (default: ~/.cache/ortserve)."""
    tracking_uri: str | None = None
    """MLflow tracking/registry URI of models:/ URIs, needed for them unless MLFLOW_TRACKING_URI is set (default: the
    MLFLOW_TRACKING_URI variable)."""
    poll_interval: float = Field(30.0, ge=0)
    """Seconds between checks of each alias or stage for a new version; 0 disables following."""
    registry_timeout_s: float = Field(10.0, gt=0)
    """Timeout of one registry request; with few retries, so that a registry outage is noticed quickly."""
    grace_period_s: float = Field(10.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight calls may take to finish before the server stops anyway."""
    log_level: str = "INFO"
    """Python logging level of the server (DEBUG, INFO, WARNING, ERROR)."""
    result_cache_bytes: int = Field(0, ge=0)
    """Memory bound of the result cache, in bytes: a text that the serving version of a model has classified
    already is answered from memory (repeated headlines). 0 turns the cache off."""

    tls_cert_file: Path | None = None
    """PEM certificate chain of the server; with --tls-key-file the port speaks TLS only. Re-read when the file
    changes (checked at each new connection), so a renewed certificate needs no restart."""
    tls_key_file: Path | None = None
    """PEM private key of --tls-cert-file; re-read with it."""
    tls_client_ca_file: Path | None = None
    """PEM CA certificates that sign client certificates; when set, every client must present a certificate signed
    by one of them (mutual TLS). Needs --tls-cert-file. Re-read when it changes."""
    auth_token_file: Path | None = None
    """File of bearer tokens, one per line: `TOKEN` or `sha256:HEX` (the token's SHA-256), optionally followed by
    `models=NAME,NAME` to limit it to those models; `#` starts a comment. Re-read when it changes. With this or
    --auth-token-env set, every call needs `authorization: Bearer TOKEN` (except health checks, see --auth-health)."""
    auth_token_env: str | None = None
    """Name of an environment variable holding bearer tokens in the same form as --auth-token-file, entries separated
    by newlines or ';' (read once at start)."""
    auth_health: bool = False
    """Require a token for the server's own health checks too (grpc.health.v1 service "" and liveness, /v2/health/*,
    /ping). Off so that load balancers and Kubernetes probes, which send no token, can check health. A model's own
    health check needs a token either way (open, it would tell anyone which models are served)."""
    reflection: bool = True
    """Serve gRPC server reflection (what `grpcurl list`/`describe` use without proto files); turn off to hide the
    API's shape from callers. With tokens configured, reflection needs a token like every other service."""
    arena_shrink_width: int = Field(256, ge=0)
    """Once a model has been idle for half a second after a run padded to at least this many tokens, hand the memory
    arena's free memory back to the system, so a burst of long texts does not keep hundreds of MB for good; 0 never
    does. A burst keeps its memory while it lasts (shrinking after each wide run cost bulk callers 15-25 % of their
    throughput)."""
    shared_arena: bool = True
    """Let every model session allocate from one ONNX Runtime memory arena instead of one arena each, so memory freed
    by one model is reused by another (about 100 MB less for two models after heavy batches; see BENCHMARKS.md)."""
    malloc_mmap_threshold_bytes: int = Field(4 * 1024 * 1024, ge=0, le=32 * 1024 * 1024)
    """Blocks of at least this many bytes come straight from the system and go back to it when freed, and the heap
    gives back free memory beyond twice this (glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD, set at start). glibc's
    adaptive behavior raises the threshold to the largest block freed so far, so after a model's file is read at load
    blocks of up to its size stay in the heap once freed: minilm's server idles at 145 MB with 4 MiB against 169 MB
    (BENCHMARKS.md). Lower values return more but make every large request fault its memory in afresh (128 KiB:
    137 MB idle, and a 1.7 MB request took 7-8 ms instead of 3-4). 0 keeps glibc's adaptive threshold; at most
    32 MiB (glibc's limit). No effect without glibc."""

    metrics_port: int | None = Field(None, ge=0, le=65535)
    """HTTP port of the Prometheus metrics endpoint (any path, e.g. /metrics); unset serves no metrics, 0 picks a
    free port (logged)."""
    metrics_host: str | None = None
    """Address the metrics endpoint binds (default: the --host address); 127.0.0.1 keeps it to this machine (a
    Prometheus sidecar or agent)."""
    metrics_tls: bool = False
    """Serve the metrics endpoint over TLS with the server's --tls-cert-file and --tls-key-file (re-read when they
    change), so that a scrape from outside the pod is encrypted."""
    metrics_auth_env: str | None = None
    """Name of an environment variable holding `USER:PASSWORD`: every scrape must then send it as HTTP basic auth
    (Prometheus's `basic_auth`), else 401. Unset: the metrics need no credentials."""
    log_format: Literal["text", "json"] = "text"
    """Log lines as plain text, or as one JSON object per line carrying the request id, model and version of the
    call a line is about."""
    tracing: bool = False
    """Create OpenTelemetry spans for each RPC (needs the [tracing] extra); also on when an OTLP endpoint is set."""
    otlp_endpoint: str | None = None
    """OTLP/gRPC endpoint to export spans to, e.g. http://otel-collector:4317 (default: the standard
    OTEL_EXPORTER_OTLP_ENDPOINT variable); setting it turns tracing on."""

    max_queue_tokens: int = Field(262_144, ge=0)
    """Most tokens waiting per model, estimated from text lengths before tokenizing; beyond it calls fail fast with
    RESOURCE_EXHAUSTED (a call at an empty queue is always admitted). 0 for no bound."""
    max_calls_in_flight: int = Field(512, ge=1)
    """Most calls per model admitted and not yet answered (queued or running); beyond it RESOURCE_EXHAUSTED."""
    drain_period_s: float = Field(5.0, ge=0)
    """On SIGTERM, how long the server reports NOT_SERVING while still answering new calls, so that load balancers
    and Kubernetes endpoints stop sending before it refuses calls (UNAVAILABLE); then accepted calls get
    --grace-period-s to finish. SIGINT (Ctrl-C) skips it; 0 refuses new calls at once."""

    concurrent_runs: int = Field(0, ge=0)
    """Most ONNX Runtime runs of one model at once, each on its own thread; 0 picks 2 when the process
    may use 2 or more cores, else 1. A second run keeps the cores busy while the server returns one run's answers and
    forms the next (32 callers: +5-12 % throughput on 2 cores, see BENCHMARKS.md). The runs share the session's
    intra-op thread pool: a run alone uses every pool thread, runs side by side split them."""

    max_concurrent_rpcs: int = Field(0, ge=0)
    """Most RPCs of the gRPC port in progress at once, over every service (health checks included). Past it, the
    gRPC core refuses a call with RESOURCE_EXHAUSTED before any Python code runs for it, which costs a small share of
    answering it: under 10x overload the server keeps answering the calls it let in instead of spending itself on
    refusals. 0 sizes it from the batchers: for each model, twice (its --concurrent-runs + 1) x its --max-batch-size
    calls (every run slot full and the next run formed, and as many again queued: what admission keeps at deadlines
    of about half a second), plus 16 for health and metadata calls. Clients retry such a
    refusal after a jittered back-off (the ortserve client does, see RetryPolicy)."""
    max_run_ms: float = Field(100.0, ge=0)
    """The longest a run of wide texts (256 estimated tokens or more) may be expected to take (from the run cost the
    warm-up measured) while other calls share the model: the run stops taking texts there (its first text always
    runs), so a call that arrives beside bulk work waits for a short run, not for a whole --max-batch-tokens budget,
    and leads the next: bulk work yields between runs. A call alone is not cut, and runs of short texts, which gain
    from their size, are never cut. Such texts cost the same per text in a run of one as in a full one, so the bound
    costs bulk callers little (a ~300-token caller beside two bulk callers on minilm: p50 73-80 ms instead of
    671-1,445, bulk throughput 0.91-1.29x by round; BENCHMARKS.md, "Fair runs for medium texts"). 0 turns it off."""

    http_port: int | None = Field(None, ge=0, le=65535)
    """HTTP port (same `host`) for the same models over REST/JSON: the Open Inference Protocol under /v2, MLflow's
    scoring protocol (/invocations, /ping), ortserve.v1 as JSON, /openapi.json and /docs. Unset serves
    no HTTP; 0 picks a free port (logged). The container image sets 8080. TLS, tokens and limits are the gRPC
    port's."""
    http_max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    """Largest HTTP request body, in bytes; a larger one is refused with 413 before it is read (gRPC's own
    message limit is 4 MiB too)."""
    http_default_model: str | None = None
    """The model that answers MLflow's root routes (/invocations, /ping, /version); unset: the only served model,
    when exactly one is served (every model answers under /models/NAME/ as well)."""

    max_length: int = Field(0, ge=0)
    """Tokens of one text the model reads (its window), special tokens included; 0 for the length the export
    recorded (`ortserve export --max-length`). At most what the model can read. A model trained on short texts is
    often as accurate and far cheaper at the length it was trained on: set it per model in its --model spec."""
    long_text: Literal["truncate", "chunk"] = "truncate"
    """How a text longer than --max-length tokens is read unless a call says otherwise: `truncate` classifies its
    first window; `chunk` classifies every window (up to --max-chunks, overlapping by --chunk-stride tokens) and
    aggregates their scores (--chunk-aggregate). Each window costs what a text of its length costs."""
    chunk_aggregate: Literal["mean", "max"] = "mean"
    """How `chunk` combines the windows' scores into the text's: `mean` or `max` of each label's probability."""
    max_chunks: int = Field(16, ge=1)
    """Most windows read per text with `chunk` (a call may ask for fewer, not more): the cap of one text's cost.
    The rest of a longer text is not read, and its result is marked truncated."""
    chunk_stride: int = Field(16, ge=0)
    """Tokens shared by consecutive windows with `chunk` (at most half a window), so that a sentence cut at a
    window's end is read whole in the next."""

    challenger_report_interval_s: float = Field(60.0, ge=0)
    """Seconds between write-backs of each model's champion/challenger comparison to the challenger's registry model
    version (tags `ortserve.challenger.*`, see README "Rolling out a new version"); 0 never writes."""
    shadow_queue_texts: int = Field(256, ge=1)
    """Most texts per model waiting to be shadowed through its challenger; beyond it the oldest are dropped (counted
    in `ortserve_shadow_dropped_texts`)."""
    shadow_nice: int = Field(19, ge=0, le=19)
    """OS nice value (Linux) of the ONNX Runtime runs of a challenger that only shadows (no canary share): they run
    on a thread of their own at this priority, with one ONNX Runtime thread, so they take only the CPU the callers'
    runs leave (BENCHMARKS.md, "Champion and challenger"); its tokenizing and ranking, which hold Python's GIL, run on
    a second thread of its own at the model threads' priority. Its latency in the comparison then includes that low
    priority. 0 runs it like its champion, on the shared executor with the champion's threads."""

    @model_validator(mode="after")
    def _per_model_environment(self) -> ServerSettings:
        """Fill each model's settings from `ORTSERVE_MODEL_<NAME>_<SETTING>` where its spec does not set them."""
        for spec in self.models:
            for key in (*PER_MODEL_SETTINGS, *ROLLOUT_SETTINGS):
                value = os.environ.get(per_model_env_var(spec.name, key))
                if value is not None and key not in spec.settings:
                    spec.settings[key] = _model_setting(spec.name, key, value)
            if ("shadow" in spec.settings or "canary" in spec.settings) and "challenger" not in spec.settings:
                raise ValueError(f"model {spec.name!r}: shadow and canary need a challenger=URI to send texts to")
        return self

    def model_setting(self, spec: ModelSpec, key: str) -> Any:
        """`key` (one of `PER_MODEL_SETTINGS`) for the model of `spec`: its own value, else the server-wide one."""
        return spec.settings.get(key, getattr(self, key))

    def rollout(self, spec: ModelSpec) -> tuple[str | None, float, float]:
        """(challenger URI or None, shadow share, canary share) of the model of `spec`."""
        return spec.settings.get("challenger"), spec.settings.get("shadow", 0.0), spec.settings.get("canary", 0.0)

    def batch_limits(self, spec: ModelSpec) -> BatchLimits:
        """The batcher bounds of one model: its own settings where given, else the server-wide ones."""
        values = {key: self.model_setting(spec, key) for key in PER_MODEL_SETTINGS if key in _BATCH_LIMIT_FIELDS}
        values["concurrent_runs"] = self.runs_for(spec)
        return BatchLimits(**values)

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> list[ModelSpec]:
        if isinstance(value, str):
            value = [part for part in value.split(";") if part.strip()]
        specs = [v if isinstance(v, ModelSpec) else ModelSpec.parse(str(v)) for v in value or []]
        names = [spec.name for spec in specs]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model name(s) given more than once: {', '.join(duplicates)}")
        return specs

    def session_config(self, spec: ModelSpec | None = None) -> SessionConfig:
        """The runtime settings of one model (of every model when `spec` is None)."""
        max_length = self.max_length if spec is None else self.model_setting(spec, "max_length")
        return SessionConfig(
            intra_op_threads=self.intra_op_threads,
            allow_spinning=self.allow_spinning,
            spin_during_runs=self.spin_during_runs,
            max_length=max_length,
            arena_shrink_width=self.arena_shrink_width,
        )

    def long_text_policy(self, spec: ModelSpec) -> LongTextPolicy:
        """How the model of `spec` reads long texts unless a call says otherwise."""
        return LongTextPolicy(
            strategy=self.model_setting(spec, "long_text"),
            aggregate=self.model_setting(spec, "chunk_aggregate"),
            max_chunks=self.model_setting(spec, "max_chunks"),
            stride=self.model_setting(spec, "chunk_stride"),
        )

    def runs_per_model(self) -> int:
        """The server-wide `concurrent_runs`, with 0 resolved for this machine."""
        return _resolve_runs(self.concurrent_runs)

    def concurrent_rpc_limit(self) -> int:
        """`max_concurrent_rpcs`, with 0 sized from the batchers of the models served."""
        if self.max_concurrent_rpcs:
            return self.max_concurrent_rpcs
        calls = sum((self.runs_for(spec) + 1) * self.model_setting(spec, "max_batch_size") for spec in self.models)
        return RPC_HEADROOM + RPC_LIMIT_PER_RUN_SET * calls

    def runs_for(self, spec: ModelSpec) -> int:
        """`concurrent_runs` of one model (its own, else the server-wide one), with 0 resolved for this machine."""
        return _resolve_runs(self.model_setting(spec, "concurrent_runs"))

    @model_validator(mode="after")
    def _check_http_default_model(self) -> ServerSettings:
        names = [spec.name for spec in self.models]
        if self.http_default_model is not None and names and self.http_default_model not in names:
            known = ", ".join(names)
            raise ValueError(f"http_default_model {self.http_default_model!r} is not one of the models ({known})")
        return self

    @model_validator(mode="after")
    def _check_metrics_tls(self) -> ServerSettings:
        if self.metrics_tls and self.tls_cert_file is None:
            raise ValueError("metrics_tls serves the metrics with --tls-cert-file and --tls-key-file: give them")
        return self

    @model_validator(mode="after")
    def _check_tls_files(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: give both or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file as well")
        return self


_BATCH_LIMIT_FIELDS = frozenset(f.name for f in dataclasses.fields(BatchLimits))


def _resolve_runs(concurrent_runs: int) -> int:
    if concurrent_runs:
        return concurrent_runs
    return 2 if available_cores() >= 2 else 1


def _model_setting(model: str, key: str, value: str) -> Any:
    """`value` of per-model setting `key`, validated by the server-wide field of that name (or, for a setting of
    `ROLLOUT_SETTINGS`, by its own type)."""
    if key not in PER_MODEL_SETTINGS and key not in ROLLOUT_SETTINGS:
        known = ", ".join((*PER_MODEL_SETTINGS, *ROLLOUT_SETTINGS))
        raise ValueError(f"model {model!r}: unknown setting {key!r}; a model may set {known}")
    try:
        if key in ROLLOUT_SETTINGS:
            return TypeAdapter(ROLLOUT_SETTINGS[key]).validate_python(value)
        field_info = ServerSettings.model_fields[key]
        # The field's type with its constraints (ge=0, ...): Annotated[annotation, *metadata], spelled for Python 3.10.
        constrained: Any = (
            Annotated.__class_getitem__((field_info.annotation, *field_info.metadata))  # type: ignore[attr-defined]
            if field_info.metadata
            else field_info.annotation  # Annotated needs a constraint; a Literal has none
        )
        return TypeAdapter(constrained).validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"] if exc.errors() else "invalid"
        raise ValueError(f"model {model!r}: setting {key}={value!r}: {reason}") from None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which container CPU sets narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
