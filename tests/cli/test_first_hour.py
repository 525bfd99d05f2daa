"""A newcomer's first hour at the command line: each rough edge seen once, now smooth.

Each input below once printed a traceback, changed a file it should only
have read, or misled; each is now one line on stderr and a non-zero exit,
or an honest answer.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from jobsync.backends.sqlite import SQLiteBackend
from jobsync.cli.main import build_parser

from .conftest import Site, eventually, run
from .test_errors import one_line_error


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", [["sites"], ["status", "--site", "s"], ["nodes"]])
def test_a_sqlite_file_of_someone_else_is_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5)")
    before = _digest(path)
    result = run(capsys, *command, "--dsn", f"sqlite:///{path}")
    assert result.code == 2
    assert "is not a jobsync database" in one_line_error(result.err)
    assert "jobsync migrate" in result.err
    assert _digest(path) == before
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["orders"]


def test_an_empty_file_is_not_given_a_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "touched.db"
    path.touch()
    result = run(capsys, "sites", "--dsn", f"sqlite:///{path}")
    assert result.code == 2 and "not a jobsync database" in one_line_error(result.err)
    assert path.stat().st_size == 0


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://[::1", "Invalid IPv6 URL"),
        ("postgresql://pg%zz@host/db", "invalid percent-encoded token"),
        ("postgresql://u@h/db?colour=blue", 'invalid URI query parameter: "colour"'),
        ("postgresql://u@h/db?jobsync_shema=x", "did you mean jobsync_schema?"),
    ],
    ids=["unclosed-ipv6", "bad-escape", "unknown-parameter", "option-typo"],
)
def test_a_malformed_postgresql_url_is_one_line(
    capsys: pytest.CaptureFixture[str], dsn: str, expected: str
) -> None:
    for command in (["status", "--site", "s"], ["sites"], ["migrate"]):
        result = run(capsys, *command, "--dsn", dsn)
        assert result.code == 2 and result.out == ""
        assert expected in one_line_error(result.err), result.err


HUGE = "99999999999999999999"


@pytest.mark.parametrize(
    "argv",
    [
        ["history", "--limit", HUGE],
        ["status", "--history", HUGE],
        ["site", "reset", "--tokens", HUGE, "--hash", "xxh3", "--yes"],
    ],
    ids=["history-limit", "status-history", "reset-tokens"],
)
def test_a_huge_number_is_refused_before_the_database(
    live_site: Site, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    result = live_site.cli(capsys, *argv)
    assert result.code == 2 and "Traceback" not in result.err
    assert f"expected a positive integer up to {2**63 - 1}, got '{HUGE}'" in result.err


def test_the_largest_number_is_taken(live_site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    result = live_site.cli(capsys, "history", "--limit", str(2**63 - 1), "--json")
    assert result.code == 0, result.err
    assert result.json()["rebalances"]


def test_an_empty_lock_pattern_is_refused(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = fresh_site.cli(capsys, "locks", "add", "report-9", "")
    assert result.code == 2
    assert "pattern '' matches no node" in one_line_error(result.err)
    listed = fresh_site.cli(capsys, "locks", "list", "--json").json()["locks"]
    assert [lock["task_id"] for lock in listed] == ["special"]  # nothing was added


def test_a_dead_node_does_not_keep_growing_older(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = SQLiteBackend(fresh_site.path, client="ghost")
    try:
        ghost.register("ops", "ghost", 0.3)  # then never heartbeats: a crash
    finally:
        ghost.close()

    def ghost_row() -> dict[str, object]:
        rows = fresh_site.cli(capsys, "nodes", "--json").json()["nodes"]
        return next(row for row in rows if row["name"] == "ghost")

    eventually(lambda: ghost_row()["state"] == "dead")
    first = ghost_row()
    readings = [first]

    def time_went_by() -> bool:  # a later reading, with the database's clock moved on
        readings.append(ghost_row())
        return float(str(readings[-1]["heartbeat_age_sec"])) > float(
            str(first["heartbeat_age_sec"])
        )

    eventually(time_went_by)
    second = readings[-1]
    assert first["uptime_sec"] is None and second["uptime_sec"] is None
    assert first["lived_sec"] == second["lived_sec"]
    rows = fresh_site.cli(capsys, "nodes", "--json").json()["nodes"]
    assert all(row["uptime_sec"] is not None for row in rows if row["name"] != "ghost")
    table = fresh_site.cli(capsys, "nodes").out.splitlines()
    ghost_line = next(line for line in table if line.startswith("ghost"))
    assert "- (dead)" in ghost_line


def _options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    found: list[tuple[str, argparse.Action]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub, f"{path} {name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            found.append((path, action))
    return found


def test_every_option_and_argument_has_help() -> None:
    options = _options(build_parser(), "jobsync")
    assert len(options) > 40  # the walk reached every sub-command
    missing = [
        f"{path} {action.option_strings or action.dest}"
        for path, action in options
        if not (action.help and action.help.strip())
    ]
    assert missing == []


ROOT = Path(__file__).resolve().parents[2]


def _three_terminals() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Three workers in three terminals", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_three_terminal_section_works_when_pasted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's commands, as pasted: the venv activated, one worker started as
    written (from the repository root, its database in a scratch folder), then its
    status command names the workers' site and finds the worker there."""
    lines = _three_terminals()
    assert lines[0] == ". .venv/bin/activate"
    workers = [line for line in lines if line.startswith("python examples/worker.py")]
    status = next(line for line in lines if line.startswith("python -m jobsync status"))
    assert len(workers) == 3 and len({w.split("--dsn ")[1] for w in workers}) == 1
    argv = workers[0].split()[2:]
    db = tmp_path / "jobs.db"
    argv = [f"sqlite:///{db}" if arg == "sqlite:///jobs.db" else arg for arg in argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNC_")}
    env.update(SYNC_HEARTBEAT_INTERVAL="0.2", SYNC_HEARTBEAT_TIMEOUT="1")
    with subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "worker.py"), *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as worker:
        try:
            assert worker.stdout is not None
            first = worker.stdout.readline()
            assert "ready" in first, worker.stderr.read() if worker.stderr else first
            args = [a if a != "sqlite:///jobs.db" else f"sqlite:///{db}" for a in status.split()]
            result = run(capsys, *args[3:], "--json")
            assert result.code == 0, result.err
            report = result.json()
            assert report["site"] == "production"
            assert [n["name"] for n in report["nodes"]] == ["worker-01"]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
