"""Client-side round-robin over two real replicas on 127.0.0.1, and fail-over when one of them stops."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

from ortserve.client import InferenceClient, InferenceError
from ortserve.server.settings import ServerSettings

from .helpers import RunningServer, running_server


def test_round_robin_spreads_calls_and_survives_a_stopped_replica(artifacts: dict[str, Path]) -> None:
    # Two replicas serve the same model name from different artifacts, so each answer's model_version says which
    # replica gave it (as two registry versions would during a rolling update).
    second = RunningServer(  # no drain period, as running_server: no load balancer to wait for
        ServerSettings(models=[f"sentiment={artifacts['distilbert']}"], host="127.0.0.1", port=0, drain_period_s=0)
    )
    second_running = False
    with running_server(models=[f"sentiment={artifacts['bert']}"]) as first:
        with InferenceClient(first.target) as direct:
            first_version = direct.classify("sentiment", ["hello"])[0].model_version
        try:
            second.start()
            second_running = True
            with InferenceClient(f"127.0.0.1:{first.port},127.0.0.1:{second.port}") as client:
                # Round-robin uses a replica once its connection is up: let both connect before counting.
                for _ in range(10):
                    client.classify("sentiment", ["hello"])
                counts = Counter(client.classify("sentiment", [f"text {i}"])[0].model_version for i in range(40))
                assert len(counts) == 2, f"every call went to one replica: {counts}"
                assert min(counts.values()) >= 15, f"calls are not spread evenly: {counts}"

                # Calls keep flowing from another thread while the second replica shuts down.
                errors: list[InferenceError] = []
                versions: list[str] = []
                done = threading.Event()

                def keep_calling() -> None:
                    while not done.is_set():
                        try:
                            versions.append(client.classify("sentiment", ["steady traffic"])[0].model_version)
                        except InferenceError as error:
                            errors.append(error)

                caller = threading.Thread(target=keep_calling)
                caller.start()
                try:
                    time.sleep(0.3)
                    second.stop()
                    second_running = False
                    answered_before_stop = len(versions)
                    after = [client.classify("sentiment", [f"after {i}"])[0].model_version for i in range(40)]
                    time.sleep(0.3)
                finally:
                    done.set()
                    caller.join(10)
        finally:
            if second_running:
                second.stop()

    assert errors == [], f"calls failed while a replica stopped: {errors}"
    assert set(after) == {first_version}, "calls after the stop must all reach the remaining replica"
    assert len(versions) > answered_before_stop, "the background caller kept getting answers after the stop"


def test_health_checked_round_robin_skips_a_replica_that_is_not_serving(
    artifacts: dict[str, Path], tmp_path: Path
) -> None:
    """With `health_check_service=""`, calls go only to replicas whose grpc.health.v1 status is SERVING."""
    not_an_artifact = tmp_path / "empty"
    not_an_artifact.mkdir()
    with (
        running_server(models=[f"sentiment={artifacts['bert']}"]) as healthy,
        running_server(models=[f"sentiment={artifacts['distilbert']}", f"broken={not_an_artifact}"]) as degraded,
    ):  # answers `sentiment`, but reports the whole server NOT_SERVING because `broken` failed
        target = f"127.0.0.1:{healthy.port},127.0.0.1:{degraded.port}"
        with InferenceClient(healthy.target) as direct:
            healthy_version = direct.classify("sentiment", ["x"])[0].model_version
        with InferenceClient(target) as plain, InferenceClient(target, health_check_service="") as checked:
            for _ in range(5):  # let both connections come up
                plain.classify("sentiment", ["x"])
                checked.classify("sentiment", ["x"])
            spread = {plain.classify("sentiment", [f"t{i}"])[0].model_version for i in range(20)}
            gated = {checked.classify("sentiment", [f"t{i}"])[0].model_version for i in range(20)}
    assert len(spread) == 2
    assert gated == {healthy_version}
