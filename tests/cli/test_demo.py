"""``jobsync demo`` (what ``make demo`` runs), shrunk to a few seconds, and its verdict."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jobsync.cli import demo
from jobsync.cli.demo_worker import task_ids
from jobsync.runtime.config import CoordinationConfig


def test_demo_kills_one_adds_one_and_does_every_task_once() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsync",
            "demo",
            "--workers",
            "2",
            "--tasks",
            "300",
            "--work-ms",
            "5",
            "--total-tokens",
            "64",
            "--heartbeat-interval",
            "0.2",
            "--heartbeat-timeout",
            "1.0",
            "--timeout",
            "60",
            "--dashboard-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/ \(live while the demo runs\)", out)
    assert re.search(r">>> SIGKILL worker-\d \(the leader", out)
    assert re.search(r"=== failover: worker-\d owns no token", out)
    assert ">>> starting worker-3" in out
    assert re.search(r"moved \d+ tokens: \(unowned\) -> worker-\d", out)
    assert "tasks 300, results 300, distinct 300, duplicates 0, missing 0" in out
    assert "jobsync audit: 300 done, 0 still claimed" in out
    assert out.rstrip().endswith("OK: every task was done exactly once (0 duplicates, 0 missing)")


def test_the_verdict_fails_on_a_task_done_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--tasks", "5", "--dsn", f"sqlite:///{tmp_path / 'd.db'}"])
    config = CoordinationConfig(total_tokens=8, heartbeat_interval_sec=0.2, heartbeat_timeout_sec=1)
    orchestrator = demo.Demo(args, config, tmp_path, str(tmp_path / "d.db"))
    try:
        for task in [*task_ids(5), "task-00003"]:
            orchestrator.results.execute(
                "INSERT INTO demo_results VALUES (?, ?, 'worker-1', 0)", (orchestrator.site, task)
            )
        assert orchestrator.finish(timed_out=False) == 1
    finally:
        orchestrator.stop_all()
    out = capsys.readouterr().out
    assert "duplicates 1, missing 0" in out and "FAILED" in out
