"""Health and metrics endpoints: real HTTP requests to a real Job over SQLite."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from jobsync import CoordinationConfig, Job, Task, serve_health
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.errors import InvalidArgument, NodeNameConflict

FAST = CoordinationConfig(total_tokens=100, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1.0)
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_]+="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def get_json(url: str) -> tuple[int, dict[str, object]]:
    code, kind, body = get(url)
    assert kind == "application/json"
    return code, json.loads(body)


def metrics(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse the exposition strictly: every line is a HELP, a TYPE or a well-formed sample."""
    code, kind, body = get(url + "/metrics")
    assert code == 200 and kind.startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    typed: set[str] = set()
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("gauge", "counter") and name not in typed
            typed.add(name)
            continue
        if line.startswith("# HELP "):
            continue
        found = SAMPLE.match(line)
        assert found, f"malformed sample line: {line!r}"
        name, labels, value = found.groups()
        assert name in typed, f"{name} has no TYPE line before it"
        pairs = frozenset(tuple(p.split("=", 1)) for p in re.findall(r'[a-z_]+="[^"]*"', labels))
        samples[(name, frozenset((k, v.strip('"')) for k, v in pairs))] = float(value)
    return samples


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **extra: str
) -> float:
    matches = [
        v for (n, labels), v in samples.items() if n == name and set(extra.items()) <= labels
    ]
    assert len(matches) == 1, f"{name} {extra}: {matches}"
    return matches[0]


def eventually(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'health.db'}"


def worker(name: str, url: str, **kwargs: object) -> Job:
    return Job(name, "web", url, coordination_config=FAST, handle_sigterm=False, **kwargs)  # type: ignore[arg-type]


def test_a_ready_worker_serves_all_three_endpoints(url: str) -> None:
    with worker("w1", url, http_port=0) as job:
        server = job.health_server
        assert server is not None and server.host == "127.0.0.1" and server.port > 0
        assert get_json(server.url + "/health/live") == (
            200,
            {"live": True, "node": "w1", "site": "web", "state": "active"},
        )
        code, body = get_json(server.url + "/health/ready")
        assert code == 200 and body["ready"] is True and body["tokens"] == len(job.my_tokens) == 100
        claimed = sum(job.add_task(Task(i)) for i in range(25) if job.can_claim_task(Task(i)))
        assert claimed == 25 and job.complete(Task(0))
        samples = metrics(server.url)
        labels = {"site": "web", "node": "w1"}
        assert value(samples, "jobsync_tokens_owned", **labels) == 100
        assert value(samples, "jobsync_leader") == 1 and value(samples, "jobsync_ready") == 1
        assert value(samples, "jobsync_live") == 1 and value(samples, "jobsync_draining") == 0
        assert value(samples, "jobsync_generation") == job.get_coordination_status()["generation"]
        assert value(samples, "jobsync_claims_total") == 25
        assert value(samples, "jobsync_completions_total") == 1
        assert value(samples, "jobsync_open_claims") == 24
        assert 0 <= value(samples, "jobsync_heartbeat_age_seconds") < FAST.heartbeat_timeout_sec
        assert value(samples, "jobsync_heartbeat_timeout_seconds") == 1.0
        assert value(samples, "jobsync_node_state", state="active") == 1
        assert value(samples, "jobsync_node_state", state="joining") == 0
        assert value(samples, "jobsync_plans_committed_total") >= 1
        assert value(samples, "jobsync_backend_calls_total", verb="claim") == 25
        assert value(samples, "jobsync_transient_errors_total") == 0
        assert value(samples, "jobsync_unowned_tokens") == 0
        assert get(server.url + "/nope")[0] == 404
    with pytest.raises(urllib.error.URLError):  # stopped when the Job left
        urllib.request.urlopen(server.url + "/health/live", timeout=2)


def test_a_follower_and_an_unsatisfiable_pin(url: str) -> None:
    with (
        worker("w1", url, http_port=0) as leader,
        worker("w2", url) as follower,
        serve_health(follower) as server,
    ):
        assert leader.health_server is not None
        eventually(lambda: len(follower.my_tokens) == 50)
        samples = metrics(server.url)
        assert value(samples, "jobsync_leader", node="w2") == 0
        assert value(samples, "jobsync_tokens_owned") == len(follower.my_tokens)
        assert not any(name == "jobsync_unowned_tokens" for name, _ in samples)  # leader only
        leader.register_lock("render", ["gpu-%"])

        def unowned() -> float:
            assert leader.health_server is not None
            return value(metrics(leader.health_server.url), "jobsync_unowned_tokens")

        eventually(lambda: unowned() == 1)
        total = len(leader.my_tokens) + len(follower.my_tokens)
        assert total == 99


def test_not_ready_answers_503_with_a_reason(url: str) -> None:
    job = worker("w1", url)
    with serve_health(job) as server:
        assert get_json(server.url + "/health/live")[0] == 503
        code, body = get_json(server.url + "/health/ready")
        assert code == 503 and body["reason"] == "the Job is not entered"
        with job:
            assert get_json(server.url + "/health/ready")[0] == 200
            assert job.drain()
            code, body = get_json(server.url + "/health/ready")
            assert code == 503 and str(body["reason"]).startswith("draining")
            assert body["state"] == "stopped" and "waiting_for" in body
            code, body = get_json(server.url + "/health/live")
            assert code == 503 and "not running" in str(body["reason"])
            assert value(metrics(server.url), "jobsync_draining") == 1


def test_a_superseded_worker_is_not_live(url: str) -> None:
    first = worker("dup", url, http_port=0)
    first.__enter__()
    try:
        assert first.health_server is not None
        base = first.health_server.url
        with worker("dup", url):  # takes the name over once the first one's lease has ended

            def superseded() -> bool:
                code, body = get_json(base + "/health/live")
                return code == 503 and "superseded" in str(body["reason"])

            eventually(superseded)
            code, body = get_json(base + "/health/ready")
            assert code == 503 and "superseded" in str(body["reason"])
    finally:
        with contextlib.suppress(NodeNameConflict):
            first.__exit__(None, None, None)


def test_a_busy_port_is_a_clear_error_and_leaves_nothing_behind(url: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = worker("w1", url, http_port=port)
        with pytest.raises(InvalidArgument, match=f"127.0.0.1:{port}"), busy:
            pass
    backend = SQLiteBackend(tmp_path / "health.db")
    try:
        assert backend.read_nodes("web")[1] == ()
    finally:
        backend.close()


@pytest.mark.parametrize("port", [-1, 70000, "8080", True])
def test_http_port_must_be_a_port(url: str, port: object) -> None:
    with pytest.raises(InvalidArgument, match="http_port"):
        worker("w1", url, http_port=port)


def test_an_observer_has_no_health_endpoint(url: str) -> None:
    with pytest.raises(InvalidArgument, match="observer"):
        Job("admin", "web", url, observer=True, http_port=0)
