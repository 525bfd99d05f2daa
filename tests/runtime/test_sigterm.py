"""SIGTERM ends any program shape by itself, after handing its tokens off (SQLite)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobsync import Job, Task
from jobsync.backends.sqlite import SQLiteBackend

from .conftest import FAST, covered, eventually

PRELUDE = """
import sys, time
from jobsync import Job, Task, CoordinationConfig
from jobsync.backends.sqlite import SQLiteBackend
cfg = CoordinationConfig(total_tokens=64, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=2.0,
                         safety_margin_sec=0.5, settle_window_sec=0.2, drain_timeout_sec=2.0)
job = Job("worker", "site", SQLiteBackend(sys.argv[1], client="worker"),
          coordination_config=cfg, wait_on_enter=30)
"""

SHAPES = {
    # A loop that never ends and swallows every Exception.
    "while_true": """
with job:
    print("ready", flush=True)
    i = 0
    while True:
        try:
            task = Task(i % 5000)
            if job.can_claim_task(task) and job.add_task(task):
                job.complete(task)
            i += 1
            time.sleep(0.001)
        except Exception:
            pass
""",
    # A server blocked in select(), as a Flask/werkzeug server would be.
    "http_server": """
import http.server
server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
with job:
    print("ready", flush=True)
    server.serve_forever()
""",
    # A consumer blocked on a queue that never gets an item.
    "queue_consumer": """
import queue
q = queue.Queue()
with job:
    print("ready", flush=True)
    while True:
        item = q.get()
""",
    # A worker that claimed a task and never finishes it: the drain waits
    # drain_timeout for it, then releases it so the next owner redoes it.
    "stuck_claim": """
with job:
    for i in range(10_000):
        if job.can_claim_task(Task(i)) and job.add_task(Task(i)):
            print("claimed", i, flush=True)
            break
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
""",
}


def _spawn(tmp_path: Path, shape: str) -> tuple[subprocess.Popen[str], Path]:
    db = tmp_path / "sigterm.db"
    script = tmp_path / f"{shape}.py"
    script.write_text(textwrap.dedent(PRELUDE) + textwrap.dedent(SHAPES[shape]))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, db


def _read_until_ready(proc: subprocess.Popen[str]) -> list[str]:
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.strip() == "ready":
            return lines
    raise AssertionError(f"worker exited before ready: {proc.stderr.read() if proc.stderr else ''}")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_sigterm_hands_off_and_ends_the_process(tmp_path: Path, shape: str) -> None:
    proc, db = _spawn(tmp_path, shape)
    try:
        lines = _read_until_ready(proc)
        with Job(
            "peer",
            "site",
            SQLiteBackend(db, client="peer"),
            coordination_config=FAST,
            handle_sigterm=False,
            wait_on_enter=30,
        ) as peer:
            assert eventually(lambda: 0 < len(peer.my_tokens) < FAST.total_tokens, 10)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=FAST.drain_timeout_sec + 15)
            ended = time.monotonic() - sent
            # The process ended by itself, by the signal's default action.
            assert code == -signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
            assert ended < FAST.drain_timeout_sec + 5
            assert eventually(lambda: covered([peer]), 5)
            _, nodes = peer._require_backend().read_nodes("site")
            assert [n.name for n in nodes] == ["peer"]  # it deregistered, not crashed
            if shape == "stuck_claim":
                stuck = Task(int(lines[0].split()[1]))
                assert peer.add_task(stuck)  # released, so the new owner redoes it
            else:
                assert ended < 3.0  # nothing open: no drain wait
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
