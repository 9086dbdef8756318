"""The client against the real local service, through a fault-injecting transport."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import httpx
import pytest

from bt_jupyter import api, runtime, spec
from bt_jupyter.client import ApiClient, AuthError, ConnectionFailed, RetryPolicy
from bt_jupyter.local import daemon
from bt_jupyter.local.home import Home
from tests.helpers import in_job_runtime, paced_lines, submit, wait_terminal

S = spec.TrainingJobStatus
FAST = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.05)

Fault = Callable[[httpx.Request, Callable[[], httpx.Response]], httpx.Response]


def connect_error(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
    raise httpx.ConnectError("injected: connection refused", request=request)


def drop_after_send(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
    send()  # the service processed it; the answer is lost on the way back
    raise httpx.RemoteProtocolError("injected: connection dropped", request=request)


def bad_gateway_after_send(
    request: httpx.Request, send: Callable[[], httpx.Response]
) -> httpx.Response:
    send()
    return httpx.Response(502, json={"message": "injected bad gateway"}, request=request)


def too_many_requests(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
    return httpx.Response(429, headers={"retry-after": "0"}, request=request)


class FaultyTransport(httpx.BaseTransport):
    """Forwards to the service, applying ``faults`` in turn to requests that match."""

    def __init__(self, faults: list[Fault], match: Callable[[httpx.Request], bool]) -> None:
        self.inner = httpx.HTTPTransport()
        self.faults = list(faults)
        self.match = match
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)

        def send() -> httpx.Response:
            response = self.inner.handle_request(request)
            response.read()
            return response

        if self.match(request) and self.faults:
            return self.faults.pop(0)(request, send)
        return send()

    def close(self) -> None:
        self.inner.close()


def _client(home: Home, transport: httpx.BaseTransport, **kw: object) -> ApiClient:
    info = daemon.status(home)
    assert info is not None
    return ApiClient(info.url, info.api_key, transport=transport, retry=FAST, **kw)  # type: ignore[arg-type]


def _is_create(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path.endswith("/jobs")


def test_create_survives_every_fault_and_creates_exactly_one_job(
    local_home: Home, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    faults: list[Fault] = [
        drop_after_send,
        bad_gateway_after_send,
        too_many_requests,
        connect_error,
    ]
    transport = FaultyTransport(faults, _is_create)
    with _client(local_home, transport, retry_creates=True) as faulty:
        job = faulty.create_job(
            project.id, spec.TrainingJob(image=spec.Image(base_image="x"), runtime=spec.Runtime())
        )
    creates = [r for r in transport.sent if _is_create(r)]
    assert len(creates) == 5
    assert len({r.headers["idempotency-key"] for r in creates}) == 1
    assert [j.id for j in client.jobs(project.id)] == [job.id]
    wait_terminal(client, job)


def test_ambiguous_create_is_not_retried_without_idempotency(
    local_home: Home, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    """Against a service that may ignore Idempotency-Key (Baseten), never risk a second job."""
    transport = FaultyTransport([drop_after_send], _is_create)
    with (
        _client(local_home, transport) as faulty,
        pytest.raises(ConnectionFailed, match="may or may not have taken effect"),
    ):
        faulty.create_job(project.id, spec.TrainingJob(image=spec.Image(base_image="x")))
    assert len(client.jobs(project.id)) == 1


def test_connect_errors_and_429_are_retried_for_any_request(
    local_home: Home, project: api.TrainingProjectV1
) -> None:
    transport = FaultyTransport(
        [connect_error, too_many_requests, connect_error], lambda r: r.method == "GET"
    )
    with _client(local_home, transport) as faulty:
        assert faulty.project(project.id).name == project.name
    assert len(transport.sent) == 4


def test_giving_up_names_the_service(local_home: Home) -> None:
    transport = FaultyTransport([connect_error] * 10, lambda r: True)
    with (
        _client(local_home, transport) as faulty,
        pytest.raises(
            ConnectionFailed, match=r"could not reach http://127\.0\.0\.1:\d+ .* 6 attempts"
        ),
    ):
        faulty.projects()


def test_wrong_key_is_one_clear_error_and_not_retried(local_home: Home) -> None:
    info = daemon.status(local_home)
    assert info is not None
    transport = FaultyTransport([], lambda r: False)
    with (
        ApiClient(info.url, "not-the-key", transport=transport, retry=FAST) as wrong,
        pytest.raises(AuthError, match="missing or wrong API key"),
    ):
        wrong.projects()
    assert len(transport.sent) == 1


def _chatty_job(client: ApiClient, project: api.TrainingProjectV1, lines: int) -> api.TrainingJobV1:
    job = submit(
        client,
        project,
        [paced_lines(lines)],
    )
    assert wait_terminal(client, job).status == S.COMPLETED
    return job


def test_windowed_history_has_every_line_once_in_order(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = _chatty_job(client, project, 2500)
    lines = [line.message for line in client.all_logs(project.id, job.id) if line.replica == "0"]
    assert lines == [f"line {i}" for i in range(2500)]


def test_follow_across_dropped_connections_has_no_duplicates_or_gaps(
    local_home: Home, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        [
            "python -c \"import time\nfor i in range(3000):\n    print(f'line {i}')\n"
            '    time.sleep(0.0005 if i % 100 else 0.05)"'
        ],
    )
    every_third = itertools.cycle([False, False, True])
    transport = FaultyTransport(
        [drop_after_send] * 1000, lambda r: r.url.path.endswith("/follow") and next(every_third)
    )
    with _client(local_home, transport) as faulty:
        followed = [f.log for f in faulty.follow_logs(project.id, job.id, poll_timeout=2)]
    node = [line.message for line in followed if line.replica == "0"]
    assert node == [f"line {i}" for i in range(3000)]
    assert len({(x.timestamp, x.message, x.replica) for x in followed}) == len(followed)
    assert followed[-1].message == "Job COMPLETED"
    assert len(transport.faults) < 1000  # connections really were dropped


def test_polling_follow_for_services_without_the_extension(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        ['python -c "import time\nfor i in range(30):\n    print(i); time.sleep(0.03)"'],
    )
    lines = [f.log.message for f in client.poll_logs(project.id, job.id, interval=0.2, linger=0.5)]
    assert [m for m in lines if m.isdigit()] == [str(i) for i in range(30)]
    assert lines[-1] == "Job COMPLETED"


def test_tail_follow_keeps_the_newest_lines_and_every_metric(
    client: ApiClient, project: api.TrainingProjectV1
) -> None:
    # every other record lands after a progress bar's text on the bar's line (a tqdm-style
    # bar redraws with \r and no newline): it is kept and read all the same
    script = (
        "from bt_jupyter.runtime import log_metrics\n"
        "for i in range(3000):\n"
        "    print(f'line {i}')\n"
        "    if i % 100 == 0:\n"
        "        if i % 200 == 0:\n"
        "            print(f'\\rEpoch 0: {i // 30}%|###   | {i}/3000', end='')\n"
        "        log_metrics(step=i, loss=1.0)\n"
    )
    files = {"flood.py": script, **in_job_runtime()}
    job = submit(client, project, ["python flood.py"], files=files)
    assert wait_terminal(client, job).status == S.COMPLETED
    batches = list(
        client.follow_batches(project.id, job.id, tail=10, keep_containing=runtime.METRIC_PREFIX)
    )
    lines = [line.message for b in batches for line in b.logs]
    total = sum(b.skipped + len(b.logs) for b in batches)
    assert total == len(list(client.all_logs(project.id, job.id)))
    steps = [runtime.parse_metric(m)["step"] for m in lines if runtime.parse_metric(m)]  # type: ignore[index]
    assert steps == list(range(0, 3000, 100))
    assert [r["step"] for r in client.user_metrics(project.id, job.id)] == steps
    assert lines[-10:] == [*(f"line {i}" for i in range(2991, 3000)), "Job COMPLETED"]


def slow(request: httpx.Request, send: Callable[[], httpx.Response]) -> httpx.Response:
    import time

    time.sleep(0.3)
    return send()


def test_polling_follow_survives_drops_502_and_delays_like_against_baseten(
    local_home: Home, client: ApiClient, project: api.TrainingProjectV1
) -> None:
    job = submit(
        client,
        project,
        ["python -c \"import time\nfor i in range(200):\n    print(f'p {i}'); time.sleep(0.005)\""],
    )
    faults: list[Fault] = [drop_after_send, bad_gateway_after_send, slow, too_many_requests] * 20
    transport = FaultyTransport(faults, lambda r: r.url.path.endswith("/logs"))
    with _client(local_home, transport) as faulty:
        lines = [
            f.log.message for f in faulty.poll_logs(project.id, job.id, interval=0.2, linger=0.5)
        ]
    assert [m for m in lines if m.startswith("p ")] == [f"p {i}" for i in range(200)]
    assert lines[-1] == "Job COMPLETED"
    assert len(transport.faults) < 80  # faults really were injected
