"""A FastAPI service that classifies through ortserve: the web-API caller of the platform.

    ORTSERVE_TARGET=localhost:50051 ORTSERVE_MODEL=sentiment uvicorn examples.fastapi_app:app --workers 4

The app holds one `AsyncInferenceClient` (one gRPC channel) per worker process, made in the lifespan, and awaits
it from every request: no model, torch or onnxruntime in the web workers. gRPC status codes become HTTP statuses
in one place (`HTTP_STATUS`), so callers see 404 for an unknown model and 503 while the server is unavailable.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from ortserve.client import AsyncInferenceClient, InferenceError, default_target

#: gRPC status of a failed ortserve call -> HTTP status of the API's answer (anything else is 502 Bad Gateway).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 422,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNAUTHENTICATED: 502,
}


class ClassifyBody(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=1000, description="texts to classify, none blank")
    top_k: int = Field(1, ge=0, description="labels per text, best first; 0 for all")


class LabelOut(BaseModel):
    label: str
    score: float


class ClassifyOut(BaseModel):
    model: str
    model_version: str
    results: list[list[LabelOut]] = Field(description="per text, in request order: labels best first")


def create_app(target: str | None = None, model: str | None = None, **client_options: Any) -> FastAPI:
    """The app; `target` and `model` default to `ORTSERVE_TARGET` and `ORTSERVE_MODEL`."""
    target = target or default_target()
    model = model or os.environ.get("ORTSERVE_MODEL", "sentiment")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.ortserve = AsyncInferenceClient(target, **client_options)
        try:
            yield
        finally:
            await app.state.ortserve.close()

    app = FastAPI(title="classification API over ortserve", lifespan=lifespan)

    @app.post("/classify")
    async def classify(body: ClassifyBody, request: Request) -> ClassifyOut:
        client: AsyncInferenceClient = request.app.state.ortserve
        try:
            results = await client.classify(model, body.texts, top_k=body.top_k)
        except InferenceError as exc:
            raise HTTPException(HTTP_STATUS.get(exc.code, 502), detail=f"ortserve: {exc}") from None
        unclassified = [f"texts[{index}]: {r.error}" for index, r in enumerate(results) if not r.ok]
        if unclassified:  # this API answers all of its texts or none: its caller fixes the input and sends again
            raise HTTPException(422, detail="; ".join(unclassified))
        return ClassifyOut(
            model=model,
            model_version=results[0].model_version,
            results=[[LabelOut(label=s.label, score=s.score) for s in r.labels] for r in results],
        )

    @app.get("/healthz")
    async def healthz(request: Request) -> dict[str, str]:
        """Ready when ortserve answers for the model and reports it serving."""
        client: AsyncInferenceClient = request.app.state.ortserve
        try:
            info = await client.get_model(model, timeout=2)
        except InferenceError as exc:
            raise HTTPException(503, detail=f"ortserve: {exc}") from None
        if info.state != "serving":
            raise HTTPException(503, detail=f"model {model!r} is {info.state}")
        return {"model": model, "version": info.version}

    return app


app = create_app()
