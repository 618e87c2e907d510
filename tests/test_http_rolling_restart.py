"""A rolling restart behind a round-robin HTTP client fails no request: two replicas take calls in turn while one is
drained (SIGTERM's path: still answering while not ready, then its port closes and the calls it accepted finish) and
replaced by a new one. The client does what a load balancer does: a replica it cannot connect to, or one that
answers 503, is skipped for the next (requests that never reached a server are safe to resend)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import httpx

from .helpers import RunningServer, running_server

BODY = {"inputs": ["the market rallied"]}


def http_url(server: RunningServer) -> str:
    assert server.server is not None
    return f"http://127.0.0.1:{server.server.http_port}"


class RoundRobinClient:
    """Sends each call to the next replica in turn; skips a replica that refuses the connection or is not ready."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self._turn = itertools.count()
        self.retried = 0

    def post(self, path: str, body: object) -> httpx.Response:
        last: Exception | None = None
        # One turn per call, then the replicas in order from it: with the turn taken per attempt, the other callers'
        # calls advanced it between one caller's attempts, which could all land on the replica that was down.
        first = next(self._turn)
        for attempt in range(2 * len(self.urls) + 2):
            url = self.urls[(first + attempt) % len(self.urls)]
            try:
                response = httpx.post(url + path, json=body, timeout=30)
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:  # never reached a server's handler
                last = exc
                self.retried += 1
                continue
            if response.status_code != 503:
                return response
            self.retried += 1
        raise RuntimeError(f"no replica answered: {last}")


def test_rolling_restart_of_one_of_two_replicas_fails_no_request(artifacts: dict[str, Path]) -> None:
    models = [f"bert={artifacts['bert']}"]
    with running_server(models=models, http_port=0) as steady:
        first = running_server(models=models, http_port=0)
        leaving = first.__enter__()
        client = RoundRobinClient([http_url(steady), http_url(leaving)])
        statuses: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    statuses.append(client.post("/invocations", BODY).status_code)
                except Exception as exc:  # noqa: BLE001 - counted: the test asserts there are none
                    failures.append(repr(exc))

        callers = [threading.Thread(target=load) for _ in range(4)]
        for caller in callers:
            caller.start()
        time.sleep(1.0)
        assert leaving.server is not None
        leaving.call(leaving.server.stop(grace=10, drain=1.0))  # SIGTERM's path, drain then close
        leaving.server = None
        first.__exit__(None, None, None)
        with running_server(models=models, http_port=0) as replacement:
            client.urls[1] = http_url(replacement)  # the new pod joins the endpoints
            time.sleep(2.0)
            stop.set()
            for caller in callers:
                caller.join(30)
    assert failures == [] and len(statuses) > 20
    assert set(statuses) == {200}
    assert client.retried > 0  # the leaving replica did go away (refused connections or 503) while calls were sent
