"""Drop-in replacements for the in-process `predict_topic(text)` and `predict_sentiment(text)` callers use today.

Switching is a change of import::

    from ortserve.client.compat import predict_sentiment, predict_topic

    predict_topic("Shares rallied after a strong quarter.")
    # {"predictions": [{"topic": "business", "confidence": 0.91}, ...], "model_version": "3"}
    predict_sentiment("The match was cancelled.")
    # {"negative": 0.71, "neutral": 0.2, "positive": 0.09}

A list of texts returns a list of these, in order. Configuration comes from the environment, read at each call:

- `ORTSERVE_TARGET`: server address (default `localhost:50051`; replicas as `ipv4:IP:PORT,IP:PORT` or `dns:///`)
- `ORTSERVE_TOPIC_MODEL`: model name of topics (default `topic`)
- `ORTSERVE_SENTIMENT_MODEL`: model name of sentiment (default `sentiment`)
- `ORTSERVE_TOKEN`: bearer token sent with every call (optional)
- `ORTSERVE_ROOT_CERTIFICATES`: path of PEM root certificates; set, the connection uses TLS (optional)
- `ORTSERVE_CLIENT_CERTIFICATE`, `ORTSERVE_CLIENT_KEY`: paths of the PEM client certificate and its key, for a server
  that requires one (mutual TLS; optional, both or neither)

Thread-safe: every thread shares one client (one channel) per configuration, and a forked worker makes its own.
Failures raise `ortserve.client.InferenceError`; one that could not reach the server names the fix in its message
(and says so when `ORTSERVE_TARGET` is not set). A setting that cannot work (a target with no port, a certificate
without its key) raises `ValueError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, overload

from .base import DEFAULT_TARGET, default_target
from .errors import InferenceError
from .shared import shared_client
from .sync_client import InferenceClient
from .types import Classification

TopicResult = dict[str, Any]
"""`{"predictions": [{"topic": str, "confidence": float}, ...], "model_version": str}`, predictions best first, plus
`"windows": int` when the text was read in windows (`long_text="chunk"`)."""
SentimentResult = dict[str, float]
"""`{label: score}` for every label of the sentiment model (`positive`, `neutral`, `negative`)."""


# A str is also a Sequence[str]; the first overload wins for it, which is what mypy's overlap warning is about.
@overload
def predict_topic(  # type: ignore[overload-overlap]
    text: str, top_k: int | None = None, *, long_text: str = ""
) -> TopicResult: ...
@overload
def predict_topic(text: Sequence[str], top_k: int | None = None, *, long_text: str = "") -> list[TopicResult]: ...
def predict_topic(
    text: str | Sequence[str], top_k: int | None = None, *, long_text: str = ""
) -> TopicResult | list[TopicResult]:
    """Topics of `text` (or of each text of a list), best first; `top_k` keeps only that many (default: all).

    For an article longer than the model reads, `long_text="chunk"` classifies all of it (in windows whose scores
    are averaged, or as the server's model is set up) instead of its beginning; the result then says how many
    windows were read (`"windows"`). Empty: the model's default."""
    results = _classify(os.environ.get("ORTSERVE_TOPIC_MODEL", "topic"), text, top_k or 0, long_text)
    shaped = [topic_result(result) for result in results]
    return shaped[0] if isinstance(text, str) else shaped


@overload
def predict_sentiment(text: str, *, long_text: str = "") -> SentimentResult: ...  # type: ignore[overload-overlap]
@overload
def predict_sentiment(text: Sequence[str], *, long_text: str = "") -> list[SentimentResult]: ...
def predict_sentiment(text: str | Sequence[str], *, long_text: str = "") -> SentimentResult | list[SentimentResult]:
    """Score of every sentiment label for `text` (or for each text of a list); `long_text` as in `predict_topic`."""
    results = _classify(os.environ.get("ORTSERVE_SENTIMENT_MODEL", "sentiment"), text, 0, long_text)
    shaped = [sentiment_result(result) for result in results]
    return shaped[0] if isinstance(text, str) else shaped


def topic_result(result: Classification) -> TopicResult:
    shaped: TopicResult = {
        "predictions": [{"topic": s.label, "confidence": s.score} for s in result.labels],
        "model_version": result.model_version,
    }
    if result.windows:
        shaped["windows"] = result.windows
    return shaped


def sentiment_result(result: Classification) -> SentimentResult:
    # Only label keys: callers pick the winner with max(scores, key=scores.get), which any extra key would break.
    return result.as_dict()


def _classify(model: str, text: str | Sequence[str], top_k: int, long_text: str = "") -> list[Classification]:
    texts = [text] if isinstance(text, str) else list(text)
    client = _client()
    try:
        return client.classify(model, texts, top_k=top_k, long_text=long_text)
    except InferenceError as failure:
        if failure.code.name != "UNAVAILABLE" or os.environ.get("ORTSERVE_TARGET"):
            raise
        unset = f"ORTSERVE_TARGET is not set, so {DEFAULT_TARGET} was called: set it to the server's HOST:PORT"
        raise failure.replaced(hint=f"{unset}; {failure.hint}" if failure.hint else unset) from None


def _client() -> InferenceClient:
    """The shared client of the settings in the environment; `ValueError` naming the variable that cannot work."""
    settings = {
        "ORTSERVE_TOKEN": "token",
        "ORTSERVE_ROOT_CERTIFICATES": "root_certificates",
        "ORTSERVE_CLIENT_CERTIFICATE": "client_certificate",
        "ORTSERVE_CLIENT_KEY": "client_key",
    }
    options = {option: os.environ.get(variable) or None for variable, option in settings.items()}
    try:
        return shared_client(default_target(), **options)
    except ValueError as exc:
        names = "ORTSERVE_TARGET, " + ", ".join(settings)
        raise ValueError(f"ortserve.client.compat: {exc} (settings from the environment: {names})") from None
