"""Protobuf ⇄ client types, and the split of a large input into requests the server accepts (sync and async)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from ortserve.v1 import inference_pb2 as pb

from .errors import InferenceError
from .types import Classification, LabelScore, ModelInfo

#: Texts per Classify request unless told otherwise: under the server's default max_texts_per_request (256) with room
#: to spare, and large enough that the per-call overhead (~0.3 ms) is small next to the model's time per text.
DEFAULT_CHUNK_SIZE = 128
#: Texts per request when long texts are read in windows (`long_text="chunk"`): each text may become up to the
#: model's max_chunks rows on the server (16 by default), so 16 texts carry about as many rows as a full request of
#: short texts, and the requests in flight stay within the server's queue bounds (2048 rows by default).
LONG_TEXT_CHUNK_SIZE = 16
LONG_TEXT_STRATEGIES = ("truncate", "chunk")
AGGREGATIONS = ("mean", "max")

#: Requests of one `classify` in flight at once: enough to keep a server's batcher fed while the previous chunk's
#: answer travels back, few enough that one caller cannot fill a server's admission queue (2048 texts by default).
DEFAULT_MAX_CONCURRENCY = 4

_STATE_NAMES = {
    pb.MODEL_STATE_LOADING: "loading",
    pb.MODEL_STATE_SERVING: "serving",
    pb.MODEL_STATE_FAILED: "failed",
}


def checked_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list, refusing the mistakes that would otherwise surface as confusing server errors."""
    if isinstance(texts, str | bytes):
        raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
    texts = list(texts)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{index}] is {type(text).__name__}, not str")
    return texts


def check_batching(chunk_size: int, max_concurrency: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")


def long_text_fields(long_text: str = "", aggregate: str = "", max_chunks: int = 0) -> dict[str, str | int]:
    """The request fields of a long-text choice (none for the model's defaults); `ValueError` for a value the server
    would refuse. `long_text`: "truncate" (the first window only) or "chunk" (every window, scores aggregated by
    `aggregate`, "mean" or "max"); `max_chunks`: most windows per text (0: the model's cap)."""
    if long_text not in ("", *LONG_TEXT_STRATEGIES):
        raise ValueError(f"long_text must be one of {', '.join(LONG_TEXT_STRATEGIES)} (or '' for the model's default)")
    if aggregate not in ("", *AGGREGATIONS):
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATIONS)} (or '' for the model's default)")
    if max_chunks < 0:
        raise ValueError(f"max_chunks must be 0 (the model's cap) or positive, got {max_chunks}")
    fields: dict[str, str | int] = {"long_text": long_text, "aggregate": aggregate, "max_chunks": max_chunks}
    return {key: value for key, value in fields.items() if value}


def request_size(chunk_size: int, fields: dict[str, str | int]) -> int:
    """Texts per request: `chunk_size`, at most `LONG_TEXT_CHUNK_SIZE` when texts are read in windows."""
    return min(chunk_size, LONG_TEXT_CHUNK_SIZE) if fields.get("long_text") == "chunk" else chunk_size


def classify_request(model: str, texts: list[str], top_k: int, **fields: str | int) -> pb.ClassifyRequest:
    """One request carrying all of `texts` (the caller checked they fit in one chunk); `fields` from
    `long_text_fields`."""
    if top_k < 0:
        raise ValueError(f"top_k must be 0 (all labels) or positive, got {top_k}")
    return pb.ClassifyRequest(model=model, texts=texts, top_k=top_k, **fields)  # type: ignore[arg-type]


def chunk_requests(
    model: str, texts: list[str], top_k: int, chunk_size: int, **fields: str | int
) -> list[tuple[int, pb.ClassifyRequest]]:
    """One request per `chunk_size` texts, each with the offset of its first text in `texts`."""
    return [
        (start, classify_request(model, texts[start : start + chunk_size], top_k, **fields))
        for start in range(0, len(texts), chunk_size)
    ]


def chunk_error(error: grpc.RpcError, start: int, count: int, total: int) -> InferenceError:
    """An `InferenceError` that says which texts of the caller's input the failed request carried.

    The server's message indexes texts within the request (`texts[3] is empty`); with several requests the caller
    needs the offset to find the text in their own input.
    """
    failure = InferenceError.from_rpc_error(error)
    if count == total:
        return failure
    return failure.replaced(details=f"{failure.details} (in the request of texts[{start}:{start + count}])")


def classifications_from_proto(response: pb.ClassifyResponse) -> list[Classification]:
    version = response.model_version  # read once: each read of a protobuf field makes a new str
    return [
        Classification(
            tuple([LabelScore(s.label, s.score) for s in result.labels]),
            version,
            result.truncated,
            result.error,
            result.windows,
        )
        for result in response.results
    ]


def checked_classifications(response: pb.ClassifyResponse, texts: int) -> list[Classification]:
    """The results of one response to a request of `texts` texts, after checking that there is one per text (callers
    zip them with their texts)."""
    results = len(response.results)
    if results != texts:
        raise InferenceError(
            grpc.StatusCode.INTERNAL,
            f"the server answered {results} results for {texts} texts",
        )
    return classifications_from_proto(response)


def model_info_from_proto(info: pb.ModelInfo) -> ModelInfo:
    return ModelInfo(
        name=info.name,
        version=info.version,
        source_uri=info.source_uri,
        labels=tuple(info.labels),
        max_length=info.max_length,
        state=_STATE_NAMES.get(info.state, "unknown"),
        last_error=info.last_error,
        multi_label=info.multi_label,
        loaded_at=info.loaded_at,
        note=info.note,
        failed_updates=info.failed_updates,
    )


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying `token` as `authorization: Bearer <token>` (none without a token)."""
    if not token:
        return ()
    return (("authorization", f"Bearer {token}"),)
