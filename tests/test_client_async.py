"""`AsyncInferenceClient` against a real server: same answers as the blocking client, order, errors, event loops."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from ortserve.client import AsyncInferenceClient, InferenceClient, InferenceError

from .helpers import RunningServer, running_server

TEXTS = [f"headline {i}: {word} moved the markets" for i, word in enumerate(["rates", "oil", "rain", "goals"] * 25)]


def test_async_results_equal_the_blocking_client_in_order(server: RunningServer) -> None:
    with InferenceClient(server.target, chunk_size=16) as client:
        expected = client.classify("roberta", TEXTS, top_k=3)

    async def main() -> list[object]:
        async with AsyncInferenceClient(server.target, chunk_size=16, max_concurrency=3) as client:
            many = await client.classify("roberta", TEXTS, top_k=3)
            # Concurrent callers on one client each get their own texts back.
            singles = await asyncio.gather(*(client.classify("roberta", [t], top_k=3) for t in TEXTS[:20]))
            assert [s[0].top.label for s in singles] == [r.top.label for r in many[:20]]
            assert (await client.get_model("roberta")).labels
            assert len(await client.list_models()) == 4
            return list(many)

    results = asyncio.run(main())
    assert len(results) == len(TEXTS)
    for got, want in zip(results, expected, strict=True):
        assert [s.label for s in got.labels] == [s.label for s in want.labels]  # type: ignore[attr-defined]
        assert [s.score for s in got.labels] == pytest.approx([s.score for s in want.labels], abs=1e-5)  # type: ignore[attr-defined]


def test_async_errors_carry_the_status_and_the_slice(artifacts: dict[str, Path]) -> None:
    async def main(target: str) -> None:
        client = AsyncInferenceClient(target, chunk_size=16)
        with pytest.raises(InferenceError) as missing:
            await client.classify("nope", ["a"])
        assert missing.value.code is grpc.StatusCode.NOT_FOUND
        texts = ["ok"] * 33
        texts[20] = "long text " * 60  # its request is over max_request_chars
        with pytest.raises(InferenceError) as bad:
            await client.classify("bert", texts)
        assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT and "texts[16:32]" in bad.value.details
        assert await client.classify("bert", []) == []
        await client.close()
        with pytest.raises(ValueError, match="closed"):
            await client.classify("bert", ["a"])

    with running_server(models=[f"bert={artifacts['bert']}"], max_request_chars=500) as server:
        asyncio.run(main(server.target))


def test_one_client_serves_successive_event_loops(server: RunningServer) -> None:
    """A grpc.aio channel belongs to one loop; the client makes a new one when used from another loop."""
    client = AsyncInferenceClient(server.target)
    first = asyncio.run(client.classify("bert", ["same text"]))
    second = asyncio.run(client.classify("bert", ["same text"]))
    assert first[0].labels == second[0].labels
