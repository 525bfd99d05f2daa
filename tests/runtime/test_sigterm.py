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


# -- SIGTERM ends the process whatever the backend does ---------------------------------

DRAIN = 1.0
"""drain_timeout_sec of the workers below; the process must end within DRAIN + 2 s."""

OUTAGE = """
import sys, time
from jobsync import Job, Task, CoordinationConfig
from jobsync.backends.memory import MemoryStore
from jobsync.core.defences import Defences
cfg = CoordinationConfig(total_tokens=64, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=2.0,
                         safety_margin_sec=0.5, settle_window_sec=0.2, drain_timeout_sec=%(drain)r)
store = MemoryStore()
defences = Defences.without(*sys.argv[2:])
job = Job("worker", "site", store.connect("worker"), coordination_config=cfg, wait_on_enter=30,
          _defences=defences)
with job:
    if sys.argv[1] == "claim":  # a claim that never completes
        task = next(t for t in map(Task, range(10_000)) if job.can_claim_task(t))
        assert job.add_task(task)
    store.cut_off_all()  # the database goes away and stays away
    print("ready", flush=True)
    while True:
        try:
            time.sleep(0.01)
        except Exception:
            pass
"""


def _spawn_script(tmp_path: Path, source: str, *args: str) -> subprocess.Popen[str]:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


def _stderr(proc: subprocess.Popen[str]) -> str:
    """The worker's stderr once it ended (reading a live one's would block)."""
    if proc.poll() is None:
        proc.kill()
    return proc.communicate()[1]


def _terminate_and_time(proc: subprocess.Popen[str], budget: float) -> tuple[int | None, float]:
    """SIGTERM ``proc``; (its exit code or None if still running after ``budget``, seconds)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        code = None
    return code, time.monotonic() - sent


@pytest.mark.parametrize("mode", ["claim", "idle"])
def test_sigterm_during_a_database_outage_ends_within_the_drain_timeout(
    tmp_path: Path, mode: str
) -> None:
    proc = _spawn_script(tmp_path, OUTAGE % {"drain": DRAIN}, mode)
    try:
        _read_until_ready(proc)
        code, ended = _terminate_and_time(proc, DRAIN + 2)
        assert code == -signal.SIGTERM, _stderr(proc)
        assert ended < DRAIN + 2
        if mode == "claim":  # the open claim had its drain_timeout to complete
            assert ended >= DRAIN
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_without_the_deadline_an_outage_keeps_a_sigtermed_process_alive(tmp_path: Path) -> None:
    # The defence's teeth: waiting for the drain alone never ends during an outage.
    proc = _spawn_script(tmp_path, OUTAGE % {"drain": DRAIN}, "idle", "sigterm_deadline")
    try:
        _read_until_ready(proc)
        code, _ = _terminate_and_time(proc, DRAIN + 2.5)
        assert code is None
    finally:
        proc.kill()
        proc.communicate()


SUPERSEDED = """
import sys, time
from jobsync import Job, CoordinationConfig
from jobsync.backends.sqlite import SQLiteBackend
cfg = CoordinationConfig(total_tokens=64, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=2.0,
                         safety_margin_sec=0.5, settle_window_sec=0.2, drain_timeout_sec=%(drain)r)
job = Job("worker", "site", SQLiteBackend(sys.argv[1], client="worker"),
          coordination_config=cfg, wait_on_enter=30)
with job:
    print("ready", flush=True)
    while job.get_coordination_status()["state"] != "superseded":
        time.sleep(0.01)
    print("superseded", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_sigterm_after_the_node_was_superseded_ends_the_process(tmp_path: Path) -> None:
    db = tmp_path / "superseded.db"
    proc = _spawn_script(tmp_path, SUPERSEDED % {"drain": DRAIN}, str(db))
    try:
        _read_until_ready(proc)
        newer = Job(
            "worker",  # a new process takes the name over
            "site",
            SQLiteBackend(db, client="newer"),
            coordination_config=FAST,
            handle_sigterm=False,
            wait_on_enter=30,
        )
        with newer:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "superseded"
            code, ended = _terminate_and_time(proc, DRAIN + 2)
            assert code == -signal.SIGTERM, _stderr(proc)
            assert ended < DRAIN + 2
            _, nodes = newer._require_backend().read_nodes("site")
            assert [n.name for n in nodes] == ["worker"]  # the newer one's row, untouched
            assert newer.am_i_healthy()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
