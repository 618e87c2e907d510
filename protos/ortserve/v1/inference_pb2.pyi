from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_STATE_UNSPECIFIED: _ClassVar[ModelState]
    MODEL_STATE_LOADING: _ClassVar[ModelState]
    MODEL_STATE_SERVING: _ClassVar[ModelState]
    MODEL_STATE_FAILED: _ClassVar[ModelState]
MODEL_STATE_UNSPECIFIED: ModelState
MODEL_STATE_LOADING: ModelState
MODEL_STATE_SERVING: ModelState
MODEL_STATE_FAILED: ModelState

class ClassifyRequest(_message.Message):
    __slots__ = ("model", "texts", "top_k")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    model: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    def __init__(self, model: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model", "model_version", "results")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    model_version: str
    results: _containers.RepeatedCompositeFieldContainer[Classification]
    def __init__(self, model: _Optional[str] = ..., model_version: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Classification, _Mapping]]] = ...) -> None: ...

class Classification(_message.Message):
    __slots__ = ("labels", "truncated", "error")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    truncated: bool
    error: str
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., truncated: bool = ..., error: _Optional[str] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "source_uri", "labels", "max_length", "state", "last_error", "multi_label", "loaded_at", "note", "failed_updates", "challenger")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    FAILED_UPDATES_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    source_uri: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    max_length: int
    state: ModelState
    last_error: str
    multi_label: bool
    loaded_at: str
    note: str
    failed_updates: int
    challenger: ChallengerInfo
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., source_uri: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., max_length: _Optional[int] = ..., state: _Optional[_Union[ModelState, str]] = ..., last_error: _Optional[str] = ..., multi_label: bool = ..., loaded_at: _Optional[str] = ..., note: _Optional[str] = ..., failed_updates: _Optional[int] = ..., challenger: _Optional[_Union[ChallengerInfo, _Mapping]] = ...) -> None: ...

class ChallengerInfo(_message.Message):
    __slots__ = ("source_uri", "version", "champion_version", "comparing", "stopped_reason", "shadow", "canary", "canary_calls", "texts_compared", "agreements", "agreement", "label_pairs", "score_delta_mean", "score_delta_p99", "champion_latency_p50_s", "champion_latency_p95_s", "challenger_latency_p50_s", "challenger_latency_p95_s", "champion_errors", "challenger_errors", "shadow_dropped")
    class ShadowDroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SOURCE_URI_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPARING_FIELD_NUMBER: _ClassVar[int]
    STOPPED_REASON_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    CANARY_CALLS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_COMPARED_FIELD_NUMBER: _ClassVar[int]
    AGREEMENTS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    LABEL_PAIRS_FIELD_NUMBER: _ClassVar[int]
    SCORE_DELTA_MEAN_FIELD_NUMBER: _ClassVar[int]
    SCORE_DELTA_P99_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_LATENCY_P95_S_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_LATENCY_P95_S_FIELD_NUMBER: _ClassVar[int]
    CHAMPION_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_FIELD_NUMBER: _ClassVar[int]
    source_uri: str
    version: str
    champion_version: str
    comparing: bool
    stopped_reason: str
    shadow: float
    canary: float
    canary_calls: int
    texts_compared: int
    agreements: int
    agreement: float
    label_pairs: _containers.RepeatedCompositeFieldContainer[LabelPair]
    score_delta_mean: float
    score_delta_p99: float
    champion_latency_p50_s: float
    champion_latency_p95_s: float
    challenger_latency_p50_s: float
    challenger_latency_p95_s: float
    champion_errors: int
    challenger_errors: int
    shadow_dropped: _containers.ScalarMap[str, int]
    def __init__(self, source_uri: _Optional[str] = ..., version: _Optional[str] = ..., champion_version: _Optional[str] = ..., comparing: bool = ..., stopped_reason: _Optional[str] = ..., shadow: _Optional[float] = ..., canary: _Optional[float] = ..., canary_calls: _Optional[int] = ..., texts_compared: _Optional[int] = ..., agreements: _Optional[int] = ..., agreement: _Optional[float] = ..., label_pairs: _Optional[_Iterable[_Union[LabelPair, _Mapping]]] = ..., score_delta_mean: _Optional[float] = ..., score_delta_p99: _Optional[float] = ..., champion_latency_p50_s: _Optional[float] = ..., champion_latency_p95_s: _Optional[float] = ..., challenger_latency_p50_s: _Optional[float] = ..., challenger_latency_p95_s: _Optional[float] = ..., champion_errors: _Optional[int] = ..., challenger_errors: _Optional[int] = ..., shadow_dropped: _Optional[_Mapping[str, int]] = ...) -> None: ...

class LabelPair(_message.Message):
    __slots__ = ("champion_label", "challenger_label", "texts")
    CHAMPION_LABEL_FIELD_NUMBER: _ClassVar[int]
    CHALLENGER_LABEL_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    champion_label: str
    challenger_label: str
    texts: int
    def __init__(self, champion_label: _Optional[str] = ..., challenger_label: _Optional[str] = ..., texts: _Optional[int] = ...) -> None: ...
