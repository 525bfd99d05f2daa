"""Commands that change a site: locks, prune, site reset, migrate; confirmation rules."""

from __future__ import annotations

import datetime
import io
import sqlite3
from pathlib import Path

import pytest

from jobsync import Job, Task, token_for
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.errors import ConfigMismatch

from .conftest import FAST, SITE, Site, eventually, run


class Terminal(io.StringIO):
    """Stands in for an interactive stdin holding the operator's answer."""

    def isatty(self) -> bool:
        return True


def lock_keys(site: Site, capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [lk["task_id"] for lk in site.cli(capsys, "locks", "list", "--json").json()["locks"]]


def test_locks_add_pins_the_task_and_clear_removes_only_that_creator(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    w1 = fresh_site.jobs["w1"]
    candidates = (f"job-{i}" for i in range(1000))
    task = next(
        t
        for t in candidates
        if fresh_site.jobs["w2"].can_claim_task(Task(t))
        and token_for(t, 100) != token_for("special", 100)
    )
    added = fresh_site.cli(capsys, "locks", "add", task, "w1", "--reason", "move it", "--json")
    assert added.code == 0, added.err
    assert (
        added.json()["token"] == token_for(task, 100) and added.json()["creator"] == "jobsync-cli"
    )
    eventually(lambda: w1.can_claim_task(Task(task)))  # the leader re-planned for the pin
    assert sorted(lock_keys(fresh_site, capsys)) == sorted(["special", task])
    cleared = fresh_site.cli(
        capsys, "locks", "clear", "--creator", "jobsync-cli", "--yes", "--json"
    )
    assert cleared.code == 0 and cleared.json()["cleared"] == 1
    assert lock_keys(fresh_site, capsys) == ["special"]  # w1's lock stays
    assert fresh_site.cli(capsys, "locks", "clear", "--all", "--yes").code == 0
    assert lock_keys(fresh_site, capsys) == []


def other_token_than_special(prefix: str, same: bool = False) -> str:
    """A task id whose token is (``same``) or is not the token of 'special'."""
    special = token_for("special", 100)
    ids = (f"{prefix}-{i}" for i in range(10_000))
    return next(t for t in ids if (token_for(t, 100) == special) == same)


def test_an_unsatisfiable_pin_shows_in_status(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    task = other_token_than_special("render")
    assert fresh_site.cli(capsys, "locks", "add", task, "gpu-%", "--expires-in", "1d").code == 0
    token = token_for(task, 100)

    def reported() -> bool:
        report = fresh_site.cli(capsys, "status", "--json").json()
        return report["unowned_tokens"] == [token] and bool(report["problems"])

    eventually(reported)
    report = fresh_site.cli(capsys, "status", "--json").json()
    assert report["unsatisfied_pins"] == [
        {"token": token, "task_id": task, "patterns": ["gpu-%"], "owner": None}
    ]
    assert fresh_site.cli(capsys, "status", "--check").code == 1
    text = fresh_site.cli(capsys, "status").out
    assert f"unowned tokens:    1 ({token})" in text and "gpu-%" in text
    locks = fresh_site.cli(capsys, "locks", "list", "--json").json()["locks"]
    assert next(lk for lk in locks if lk["task_id"] == task)["expires_at"] is not None


def test_conflicting_locks_on_one_token_are_reported(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    task = other_token_than_special("clash", same=True)
    assert fresh_site.cli(capsys, "locks", "add", task, "w1").code == 0
    report = fresh_site.cli(capsys, "status", "--json").json()
    assert report["lock_conflicts"] == [
        {"token": token_for("special", 100), "winner": "special", "losers": [task]}
    ]
    locks = fresh_site.cli(capsys, "locks", "list", "--json").json()["locks"]
    assert {lk["task_id"]: lk["conflict_with"] for lk in locks} == {
        "special": None,
        task: "special",
    }
    assert "loses to 'special'" in fresh_site.cli(capsys, "locks", "list").out
    assert fresh_site.cli(capsys, "status", "--check").code == 1


@pytest.mark.parametrize(
    "command",
    [
        ["locks", "clear", "--all"],
        ["prune", "--older-than", "1d"],
        ["site", "reset", "--tokens", "50", "--hash", "md5"],
    ],
    ids=["locks-clear", "prune", "site-reset"],
)
def test_destructive_commands_need_a_yes(
    fresh_site: Site,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    def state() -> tuple[object, ...]:
        status = fresh_site.cli(capsys, "status", "--json", "--history", "50").json()
        return (
            lock_keys(fresh_site, capsys),
            status["total_tokens"],
            len(status["recent_rebalances"]),
        )

    before = state()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    refused = fresh_site.cli(capsys, *command)
    assert refused.code == 1
    assert (
        refused.err.count("\n") == 1 and "--yes" in refused.err and "not a terminal" in refused.err
    )
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    declined = fresh_site.cli(capsys, *command)
    assert declined.code == 1 and "cancelled" in declined.err and "[y/N]" in declined.err
    assert state() == before


def test_a_yes_on_the_terminal_confirms(
    fresh_site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    result = fresh_site.cli(capsys, "locks", "clear", "--all")
    assert result.code == 0 and "clear every lock (1)" in result.err
    assert lock_keys(fresh_site, capsys) == []


def test_prune_deletes_old_audit_and_history(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = fresh_site.cli(capsys, "prune", "--older-than", "30d", "--yes", "--json")
    assert kept.code == 0 and set(kept.json()["deleted"].values()) == {0}
    history = fresh_site.cli(capsys, "history", "--json").json()["rebalances"]
    today = fresh_site.cli(capsys, "prune", "--older-than", "1d", "--yes", "--json")
    assert today.code == 0 and set(today.json()["deleted"].values()) == {0}
    with sqlite3.connect(fresh_site.path) as db:  # two days pass for what is recorded
        db.execute("UPDATE sync_audit SET completed_at = completed_at - 2 * 86400")
        db.execute("UPDATE sync_history SET at = at - 2 * 86400")
    pruned = fresh_site.cli(capsys, "prune", "--older-than", "1d", "--yes", "--json").json()
    assert pruned["older_than_sec"] == 86_400
    assert sum(pruned["deleted"].values()) >= len(history) + 10  # ten finished tasks
    assert fresh_site.cli(capsys, "history", "--json").json()["rebalances"] == []
    assert fresh_site.jobs["w1"].get_audit() == []


@pytest.mark.parametrize("age", ["1s", "23h", "1439m"])
def test_prune_refuses_ages_under_a_day_in_one_line(
    fresh_site: Site, capsys: pytest.CaptureFixture[str], age: str
) -> None:
    before = fresh_site.jobs["w1"].get_audit()
    refused = fresh_site.cli(capsys, "prune", "--older-than", age, "--yes")
    assert refused.code != 0
    assert "older_than" in refused.err and "one day" in refused.err
    assert refused.err.count("\n") == 1 and "Traceback" not in refused.err
    assert fresh_site.jobs["w1"].get_audit() == before


def test_site_reset_is_refused_while_a_node_is_live(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = fresh_site.cli(capsys, "site", "reset", "--tokens", "50", "--hash", "md5", "--yes")
    assert refused.code == 1
    assert "refused" in refused.err and "w1" in refused.err and refused.err.count("\n") == 1
    fresh_site.leave()
    done = fresh_site.cli(
        capsys, "site", "reset", "--tokens", "50", "--hash", "md5", "--yes", "--json"
    )
    assert done.code == 0, done.err
    assert (done.json()["total_tokens"], done.json()["hash_function"]) == (50, "md5")
    old_constants = Job("w1", SITE, fresh_site.url, coordination_config=FAST, handle_sigterm=False)
    with pytest.raises(ConfigMismatch), old_constants:  # such workers are turned away
        pass
    which = fresh_site.cli(capsys, "which", "special", "--json").json()
    assert which["token"] == token_for("special", 50, "md5")
    assert which["pinned_by"] == "special"  # the lock follows its task to the new token


def test_migrate_creates_a_sqlite_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "new.db"
    result = run(capsys, "migrate", "--dsn", f"sqlite:///{path}")
    assert result.code == 0 and str(path) in result.out
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert any(name.startswith("sync_") for name in tables)
    unknown = run(capsys, "status", "--site", "nowhere", "--dsn", f"sqlite:///{path}")
    assert unknown.code == 2 and "site 'nowhere' does not exist" in unknown.err


def test_a_dead_node_is_reported_and_its_tokens_move(
    fresh_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    ghost = SQLiteBackend(fresh_site.path, client="ghost")
    try:
        ghost.register(SITE, "ghost", lease_timeout=1.0)  # never heartbeats: dies in 1 s
    finally:
        ghost.close()

    def settled() -> bool:
        report = fresh_site.cli(capsys, "status", "--json").json()
        states = {n["name"]: n["state"] for n in report["nodes"]}
        return states.get("ghost") == "dead" and not report["problems"]

    eventually(settled)
    report = fresh_site.cli(capsys, "status", "--json").json()
    live = [n for n in report["nodes"] if n["state"] == "live"]
    assert sum(n["tokens"] for n in live) == 100 and report["leader"] == "w1"
    assert "dead" in fresh_site.cli(capsys, "nodes").out
    date = fresh_site.jobs["w1"].date
    assert isinstance(date, datetime.date)
