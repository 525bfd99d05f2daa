"""What probes and scrapers see: 503 from the instant SIGTERM arrives, HEAD on every
endpoint, and the metrics-error counter named as a counter."""

from __future__ import annotations

import http.client
import os
import signal
import urllib.error
import urllib.request
import uuid
from types import FrameType

import pytest

from jobsync import Job

from .conftest import FAST, eventually


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_ready_is_503_as_soon_as_sigterm_arrives() -> None:
    """The handler marks the worker draining before anything else, so the first
    probe after the signal (before the node's thread has seen it) answers 503."""
    delivered: list[int] = []

    def after_jobsync(signum: int, frame: FrameType | None) -> None:
        delivered.append(signum)  # the process's own handler, re-delivered to after the drain

    previous = signal.signal(signal.SIGTERM, after_jobsync)
    try:
        with Job(
            "worker-01",
            "site",
            f"memory://ready-{uuid.uuid4().hex[:8]}",
            coordination_config=FAST,
            http_port=0,
        ) as job:
            assert job.health_server is not None
            ready = job.health_server.url + "/health/ready"
            assert _status(ready) == 200
            node = job._node
            assert node is not None
            os.kill(os.getpid(), signal.SIGTERM)  # Python runs the handler before the next line
            state_then = node.state.value
            assert _status(ready) == 503
            assert not job.am_i_healthy() and job.draining
            assert state_then == "active"  # the node had not moved yet: the flag did it
            assert eventually(lambda: delivered == [signal.SIGTERM])
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("path", ["/metrics", "/health/live", "/health/ready", "/", "/nope"])
def test_head_is_answered_like_get_without_a_body(path: str) -> None:
    with Job(
        "worker-01",
        "site",
        f"memory://head-{uuid.uuid4().hex[:8]}",
        coordination_config=FAST,
        http_port=0,
        handle_sigterm=False,
    ) as job:
        assert job.health_server is not None
        port = job.health_server.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path)
        got = conn.getresponse()
        body = got.read()
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert head.read() == b""
        conn.close()
    assert head.status == got.status and head.status != 501
    assert head.getheader("Content-Type") == got.getheader("Content-Type")
    assert int(head.getheader("Content-Length") or -1) > 0 and body


def test_metrics_errors_is_a_counter_named_total() -> None:
    with Job(
        "worker-01",
        "site",
        f"memory://metrics-{uuid.uuid4().hex[:8]}",
        coordination_config=FAST,
        http_port=0,
        handle_sigterm=False,
    ) as job:
        assert job.health_server is not None
        with urllib.request.urlopen(job.health_server.url + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
    assert "# TYPE jobsync_metrics_errors_total counter" in text
    assert "jobsync_metrics_errors_total{" in text
    assert "jobsync_metrics_errors{" not in text
