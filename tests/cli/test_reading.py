"""Read-only commands against a live two-worker cluster on a SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsync import Task, token_for

from .conftest import SITE, Site, eventually, run


def test_status_json_describes_the_cluster(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = live_site.cli(capsys, "status", "--json")
    assert result.code == 0, result.err
    report = result.json()
    nodes = {n["name"]: n for n in report["nodes"]}
    assert set(nodes) == {"w1", "w2"}
    assert {n["state"] for n in nodes.values()} == {"live"}
    assert report["leader"] == "w1" and nodes["w1"]["leader"] and not nodes["w2"]["leader"]
    assert all(0 <= n["heartbeat_age_sec"] < 1.0 for n in nodes.values())
    assert sum(n["tokens"] for n in nodes.values()) == 100
    assert report["balance"]["spread"] <= 1
    assert report["unowned_tokens"] == [] and report["stranded_tokens"] == []
    assert report["unsatisfied_pins"] == [] and report["lock_conflicts"] == []
    assert report["problems"] == []
    assert report["total_tokens"] == 100 and report["hash_function"] == "xxh3"
    history = report["recent_rebalances"]
    assert history and history[0]["generation"] == report["generation"] >= 2


def test_status_table_names_leader_nodes_and_problems(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = live_site.cli(capsys, "status")
    assert result.code == 0
    assert "leader: w1" in result.out
    rows = [line.split() for line in result.out.splitlines() if line.startswith(("w1 ", "w2 "))]
    assert [r[0] for r in rows] == ["w1", "w2"] and all(r[1] == "live" for r in rows)
    assert "problems: none" in result.out
    assert live_site.cli(capsys, "status", "--check").code == 0


def test_nodes_agree_with_the_workers(live_site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    result = live_site.cli(capsys, "nodes", "--json")
    assert result.code == 0
    names = [n["name"] for n in result.json()["nodes"]]
    assert sorted(names) == sorted(live_site.jobs["w1"].get_active_nodes())
    table = live_site.cli(capsys, "nodes").out.splitlines()
    assert table[0].split()[:3] == ["NODE", "STATE", "HEARTBEAT"] and len(table) == 3


def test_tokens_of_a_node_are_exactly_what_it_may_claim(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, job in live_site.jobs.items():

        def listed() -> set[int]:
            rows = live_site.cli(capsys, "tokens", "--node", name, "--json").json()["tokens"]
            return {row["token"] for row in rows if not row["pending"]}

        eventually(lambda: listed() == set(job.my_tokens))
    everything = live_site.cli(capsys, "tokens", "--json").json()
    assert everything["count"] == 100
    table = live_site.cli(capsys, "tokens").out
    assert "(unowned)" not in table and table.splitlines()[0].split() == [
        "OWNER",
        "COUNT",
        "TOKENS",
    ]


def test_which_gives_the_token_and_its_owner(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    for task_id in ("task-42", "7", "special"):
        result = live_site.cli(capsys, "which", task_id, "--json")
        assert result.code == 0
        report = result.json()
        assert report["token"] == token_for(task_id, 100)
        claimers = [n for n, j in live_site.jobs.items() if j.can_claim_task(Task(task_id))]
        assert [report["owner"]] == claimers
        assert report["owner_state"] == "live"
    special = live_site.cli(capsys, "which", "special", "--json").json()
    assert special["pinned_by"] == "special" and special["pin_patterns"] == ["w2"]
    text = live_site.cli(capsys, "which", "special").out
    assert f"token {token_for('special', 100)}" in text and "pinned by" in text


def test_locks_list_shows_creator_patterns_and_reason(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    locks = live_site.cli(capsys, "locks", "list", "--json").json()["locks"]
    assert [(lk["task_id"], lk["patterns"], lk["created_by"], lk["reason"]) for lk in locks] == [
        ("special", ["w2"], "w1", "w2 has the data")
    ]
    assert locks[0]["token"] == token_for("special", 100) and locks[0]["conflict_with"] is None
    assert "special" in live_site.cli(capsys, "locks", "list").out


def test_history_lists_the_plans_newest_first(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = live_site.cli(capsys, "history", "--json").json()["rebalances"]
    generations = [r["generation"] for r in rows]
    assert generations == sorted(generations, reverse=True) and generations[-1] == 1
    assert rows[-1]["nodes_before"] == [] and rows[-1]["moved"] == 100
    assert all(r["leader"] == "w1" for r in rows)
    assert len(live_site.cli(capsys, "history", "--limit", "1", "--json").json()["rebalances"]) == 1
    assert live_site.cli(capsys, "history").out.startswith("GEN")


def test_site_show(live_site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    info = live_site.cli(capsys, "site", "show", "--json").json()
    assert (info["site"], info["total_tokens"], info["hash_function"]) == (SITE, 100, "xxh3")


def test_the_environment_gives_the_connection(
    live_site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNC_SQL_URL", live_site.url)
    result = run(capsys, "nodes", "--site", SITE, "--json")
    assert result.code == 0, result.err
    assert {n["name"] for n in result.json()["nodes"]} == {"w1", "w2"}


def test_sites_lists_every_site_and_a_lone_site_needs_no_flag(
    live_site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "sites", "--json", "--dsn", live_site.url)
    assert result.code == 0, result.err
    (row,) = result.json()["sites"]
    assert row == {"site": SITE, "live_nodes": 2, "total_tokens": 100, "hash_function": "xxh3"}
    alone = run(capsys, "status", "--json", "--dsn", live_site.url)  # no --site
    assert alone.code == 0, alone.err
    assert alone.json()["site"] == SITE


def test_several_sites_need_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jobsync.backends.sqlite import SQLiteBackend

    db = SQLiteBackend(tmp_path / "two.db")
    db.ensure_site("one", 10, "xxh3")
    db.ensure_site("two", 10, "xxh3")
    db.close()
    result = run(capsys, "status", "--dsn", f"sqlite:///{tmp_path / 'two.db'}")
    assert result.code == 2
    assert "--site is needed" in result.err and "one, two" in result.err
