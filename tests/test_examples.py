"""Every example runs against SQLite, so the examples cannot rot.

Each runs in a subprocess with short timings from the environment
(``SYNC_HEARTBEAT_INTERVAL=0.2``, ``SYNC_HEARTBEAT_TIMEOUT=1``) and a
timeout.  Long-running ones get SIGTERM once they say they are ready and
must then end by themselves: jobsync drains the node, then lets SIGTERM end
the process as it would have without it (status -SIGTERM).
"""

from __future__ import annotations

import ast
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from jobsync import CoordinationConfig, Job
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.runtime.health import render_metrics

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 60.0


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SYNC_HEARTBEAT_INTERVAL="0.2", SYNC_HEARTBEAT_TIMEOUT="1", PYTHONUNBUFFERED="1")
    return env


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=environment(),
        check=False,
    )


class Running:
    """A long-running example whose output lines are read as they come."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment(),
        )
        self.lines: list[str] = []
        self._seen = 0
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))

    def expect(self, pattern: str) -> re.Match[str]:
        """The first line matching ``pattern`` after the line the previous expect matched."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            for index in range(self._seen, len(self.lines)):
                found = re.search(pattern, self.lines[index])
                if found:
                    self._seen = index + 1
                    return found
            try:
                self.lines.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no line matching {pattern!r} in {self.lines}") from None

    def terminate(self) -> int:
        """SIGTERM, then wait for the process to end by itself."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(TIMEOUT)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def node_rows(db: Path, site: str) -> tuple[object, ...]:
    backend = SQLiteBackend(db)
    try:
        return backend.read_nodes(site)[1]
    finally:
        backend.close()


def test_worker_runs_until_sigterm_and_drains(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    dsn = f"sqlite:///{db}"
    args = ("--dsn", dsn, "--site", "three", "--every", "0.3", "--batch-size", "40")
    with (
        Running("worker.py", "--node-name", "worker-01", "--http-port", "0", *args) as first,
        Running("worker.py", "--node-name", "worker-02", *args) as second,
    ):
        first.expect(r"worker-01: ready with \d+ tokens")
        health = first.expect(r"health on (http://127\.0\.0\.1:\d+)").group(1)
        second.expect(r"worker-02: ready with \d+ tokens")
        first.expect(r"batch \d+: \d+ of 40 items, 5000 tokens")
        with urllib.request.urlopen(health + "/health/ready", timeout=5) as response:
            assert response.status == 200
        assert first.terminate() == -signal.SIGTERM
        second.expect(r"batch \d+: 40 of 40 items, 10000 tokens")  # it took the whole share
        assert second.terminate() == -signal.SIGTERM
    assert node_rows(db, "three") == ()  # both drained and deleted their rows
    with sqlite3.connect(db) as conn:
        statuses = {row[0] for row in conn.execute("SELECT status FROM sync_audit")}
    assert statuses == {"done"}  # write_audit recorded every claim


def test_etl_batch_loads_every_order_once_with_two_workers(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'etl.db'}"
    with (
        Running("etl_batch.py", "--node-name", "etl-1", "--dsn", dsn, "--orders", "120") as one,
        Running("etl_batch.py", "--node-name", "etl-2", "--dsn", dsn, "--orders", "120") as two,
    ):
        assert [one.proc.wait(TIMEOUT), two.proc.wait(TIMEOUT)] == [0, 0]
        pattern = r"loaded (\d+) orders; the batch has 120 of 120"
        loaded = [int(p.expect(pattern).group(1)) for p in (one, two)]
    assert sum(loaded) == 120
    with sqlite3.connect(tmp_path / "etl.db") as conn:
        rows, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM etl_orders_out"
        ).fetchone()
    assert rows == distinct == 120


def test_continuous_reports_rebalances_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    dsn = f"sqlite:///{db}"
    with Running("continuous.py", "--node-name", "stream-1", "--dsn", dsn) as first:
        first.expect(r"initial assignment: \+10000 -0 tokens, now 10000 \(version 1\)")
        with Running("continuous.py", "--node-name", "stream-2", "--dsn", dsn) as second:
            second.expect(r"stream-2: ready with 5000 tokens")
            first.expect(r"rebalance: \+\d+ -\d+ tokens, now 5000")  # half went to stream-2
            assert second.terminate() == -signal.SIGTERM
        first.expect(r"rebalance: \+\d+ -\d+ tokens, now 10000")  # and came back
        assert first.terminate() == -signal.SIGTERM
    assert node_rows(db, "stream") == ()


def test_admin_session_pins_and_clears_as_an_observer(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'a.db'}"
    # The observer hashes with its own config (10,000 tokens from the environment),
    # so the site must have been created with the same constants.
    fast = CoordinationConfig(heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1)
    with Job("worker-01", "production", dsn, coordination_config=fast, handle_sigterm=False):
        pinned = run(
            "admin.py", "--dsn", dsn, "--pin", "report-1", "gpu-%", "cpu-%", "--reason", "GPU"
        )
        assert pinned.returncode == 0, pinned.stderr
        assert "live nodes: worker-01" in pinned.stdout  # and not "admin": it is invisible
        assert (
            "'report-1' token" in pinned.stdout
            and "['gpu-%', 'cpu-%'] by admin: GPU" in pinned.stdout
        )
        cleared = run("admin.py", "--dsn", dsn, "--clear")
        assert cleared.returncode == 0 and "cleared 1 lock(s)" in cleared.stdout
        assert "locks: 0" in cleared.stdout


def test_gpu_pinning_prefers_gpu_then_falls_back_to_cpu(tmp_path: Path) -> None:
    done = run("gpu_pinning.py", "--dsn", f"sqlite:///{tmp_path / 'p.db'}")
    assert done.returncode == 0, done.stderr
    assert "render tasks claimable by gpu-01 only: 10 of 10" in done.stdout
    assert "gpu-01 renders render-0" in done.stdout
    assert "render tasks claimable by cpu-01: 10 of 10" in done.stdout


def test_flask_health_serves_probes_with_or_without_flask(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'f.db'}"
    with Running("flask_health.py", "--node-name", "web-1", "--dsn", dsn, "--port", "0") as proc:
        found = proc.expect(r"health on (http://127\.0\.0\.1:\d+) \((Flask|jobsync\.serve_health)")
        url, server = found.groups()
        if server == "jobsync.serve_health":  # Flask is not installed (it is not a dependency)
            with urllib.request.urlopen(url + "/health/ready", timeout=5) as response:
                assert response.status == 200
            with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
                text = response.read().decode()
            assert 'jobsync_tokens_owned{site="production",node="web-1"} 10000' in text
        assert proc.terminate() == -signal.SIGTERM


def test_embed_core_plans_minimal_moves_with_the_core_alone() -> None:
    source = (EXAMPLES / "embed_core.py").read_text()
    imported = {
        node.module
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jobsync")
    }
    assert imported == {"jobsync.core"}
    done = run("embed_core.py")
    assert done.returncode == 0, done.stderr
    assert "b leaves: moved 40 tokens (fewest possible: 40); a=60, c=60" in done.stdout
    assert "d joins: moved 40 tokens (fewest possible: 40); a=40, c=40, d=40" in done.stdout
    assert re.search(r"train-model -> token \d+ -> gpu-1", done.stdout)


def test_alert_rules_and_probes_name_what_workers_serve(tmp_path: Path) -> None:
    fast = CoordinationConfig(total_tokens=10, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1)
    with Job(
        "w1",
        "site",
        f"sqlite:///{tmp_path / 'm.db'}",
        coordination_config=fast,
        handle_sigterm=False,
    ) as job:
        from jobsync.runtime.health import _Probe

        served = set(re.findall(r"^(jobsync_\w+)", render_metrics(job, _Probe(job)), re.M))
    rules = (EXAMPLES / "prometheus-alerts.yml").read_text()
    named = set(re.findall(r"\bjobsync_\w+", rules))
    assert named and named <= served, named - served
    for alert in (
        "NoLeader",
        "UnownedTokens",
        "NodeNotReady",
        "HeartbeatFailures",
        "PlanConflicts",
    ):
        assert f"alert: Jobsync{alert}" in rules
    assert "\t" not in rules
    probes = (EXAMPLES / "kubernetes-probes.yaml").read_text()
    assert set(re.findall(r"^\s+path: (/\S+)", probes, re.M)) == {"/health/live", "/health/ready"}
    usage = run("worker.py", "--help").stdout
    for flag in re.findall(r"- (--[a-z-]+)=", probes):
        assert flag in usage, flag


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_test_and_a_usage_line(script: str) -> None:
    tested = Path(__file__).read_text()
    assert f'"{script}"' in tested, f"{script} is not run by this module"
    assert '"""' in (EXAMPLES / script).read_text().split("\n")[0]
