"""Failures an operator meets: each is one line on stderr with exit code 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobsync.cli.commands import parse_duration

from .conftest import run


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("jobsync: "), err
    return err


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("nonsense", "a DSN must look like"),
        ("mysql://db/x", "unknown DSN scheme 'mysql'"),
        ("memory://", "memory:// lives inside one process"),
        ("postgresql://nobody:hunter2@127.0.0.1:1/jobsync", "PostgreSQL"),
        ("sqlite://", "a SQLite DSN needs a path"),
        ("postgresql://nobody:hunter2@h/db?jobsync_lock_timeout=soon", "jobsync_lock_timeout"),
        ("mysql://nobody:hunter2@db/x", "unknown DSN scheme 'mysql'"),
    ],
    ids=[
        "no-scheme",
        "unknown-scheme",
        "memory",
        "unreachable-postgres",
        "sqlite-without-path",
        "bad-url-option",
        "unknown-scheme-with-password",
    ],
)
def test_bad_dsn(capsys: pytest.CaptureFixture[str], dsn: str, expected: str) -> None:
    result = run(capsys, "status", "--site", "s", "--dsn", dsn)
    assert result.code == 2 and result.out == ""
    assert expected in one_line_error(result.err)
    assert "hunter2" not in result.err


def test_a_missing_sqlite_file_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"
    result = run(capsys, "nodes", "--site", "s", "--dsn", f"sqlite:///{path}")
    assert result.code == 2 and "no SQLite database" in one_line_error(result.err)
    assert not path.exists()


def test_a_file_that_is_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are not the tables you are looking for\n" * 100)
    result = run(capsys, "status", "--site", "s", "--dsn", f"sqlite:///{path}")
    assert result.code == 2 and "not a database" in one_line_error(result.err)


def test_the_environment_is_used_when_there_is_no_dsn(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNC_SQL_URL", raising=False)
    monkeypatch.setenv("SYNC_SQL_HOST", "127.0.0.1")
    monkeypatch.setenv("SYNC_SQL_PORT", "1")
    result = run(capsys, "nodes", "--site", "s")
    assert result.code == 2 and "127.0.0.1" in one_line_error(result.err)
    monkeypatch.setenv("SYNC_SQL_PORT", "not-a-port")
    result = run(capsys, "nodes", "--site", "s")
    assert result.code == 2 and "SYNC_SQL_PORT" in one_line_error(result.err)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["prune", "--site", "s", "--older-than", "3 weeks"],
        ["site", "reset", "--site", "s", "--tokens", "0", "--hash", "md5"],
        ["site", "reset", "--site", "s", "--tokens", "10", "--hash", "crc32"],
    ],
    ids=["nothing", "unknown-command", "bad-duration", "bad-tokens", "bad-hash"],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    result = run(capsys, *argv)
    assert result.code == 2 and "usage: jobsync" in result.err and "Traceback" not in result.err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--help").code == 0
    version = run(capsys, "--version")
    assert version.code == 0 and version.out.startswith("jobsync ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("45m", 2700), ("90s", 90), ("1.5h", 5400), ("0s", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_entry_points(tmp_path: Path) -> None:
    """The real ``python -m jobsync``: a bad connection is one line, exit code 2."""
    missing = tmp_path / "missing.db"
    done = subprocess.run(
        [sys.executable, "-m", "jobsync", "status", "--site", "s", "--dsn", f"sqlite:///{missing}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "no SQLite database" in one_line_error(done.stderr)
