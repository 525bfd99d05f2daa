"""SQLite across real processes: compare-and-set, schema creation and claims under races.

Every child is a fresh interpreter (the 'spawn' start method) with its own
connection to one file; a barrier releases them together, so the races are
real rather than arranged by sleeps.
"""

from __future__ import annotations

import datetime
import multiprocessing
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobsync.backends.base import ClaimRequest, DirectAssign, PlanCommit
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.backends.sqlite.schema import SCHEMA_VERSION
from jobsync.core.errors import ConflictError
from tests.backends.test_sqlite_safety import SITE as V1_SITE
from tests.backends.test_sqlite_safety import write_v1_file

CTX = multiprocessing.get_context("spawn")
PROCESSES = 8
SITE = "race"
DAY = datetime.date(2024, 5, 17)
TIMEOUT = 120.0


def _run(target: Callable[..., None], args: tuple[Any, ...]) -> list[Any]:
    """Start PROCESSES children on ``target(i, barrier, queue, *args)``; return their results."""
    barrier = CTX.Barrier(PROCESSES)
    queue = CTX.Queue()
    procs = [CTX.Process(target=target, args=(i, barrier, queue, *args)) for i in range(PROCESSES)]
    for proc in procs:
        proc.start()
    try:
        results = [queue.get(timeout=TIMEOUT) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=TIMEOUT)
    assert all(proc.exitcode == 0 for proc in procs), [proc.exitcode for proc in procs]
    errors = [r for r in results if isinstance(r, tuple) and r and r[0] == "error"]
    assert not errors, errors
    return results


# -- children (module level, so that spawned interpreters can import them) ----
def _commit_child(
    i: int, barrier: Any, queue: Any, path: str, leader: str, incarnation: int
) -> None:
    try:
        backend = SQLiteBackend(path, client=f"child-{i}", busy_timeout=30.0)
        plan = PlanCommit(
            leader=leader,
            leader_incarnation=incarnation,
            expected_generation=0,
            basis=0,
            assigns=(
                DirectAssign(
                    token=i, expected_incarnation=None, expected_epoch=0,
                    owner=leader, incarnation=incarnation,
                ),
            ),
        )  # fmt: skip
        barrier.wait(TIMEOUT)
        try:
            queue.put(("won", i, backend.commit_plan(SITE, plan)))
        except ConflictError as exc:
            queue.put(("conflict", i, str(exc)))
        backend.close()
    except Exception as exc:  # reported to the parent, which fails the test
        queue.put(("error", i, repr(exc)))


def _schema_child(i: int, barrier: Any, queue: Any, path: str) -> None:
    try:
        barrier.wait(TIMEOUT)
        backend = SQLiteBackend(path, client=f"child-{i}", busy_timeout=30.0)
        info = backend.ensure_site(SITE, 64, "xxh3")
        queue.put(("ok", i, info.created_at))
        backend.close()
    except Exception as exc:
        queue.put(("error", i, repr(exc)))


def _open_child(i: int, barrier: Any, queue: Any, path: str, site: str) -> None:
    try:
        barrier.wait(TIMEOUT)
        backend = SQLiteBackend(path, client=f"child-{i}", busy_timeout=30.0)
        _, nodes = backend.read_nodes(site)
        queue.put(("ok", i, [(n.name, n.incarnation, n.process) for n in nodes]))
        backend.close()
    except Exception as exc:
        queue.put(("error", i, repr(exc)))


def _claim_child(
    i: int, barrier: Any, queue: Any, path: str, name: str, incarnation: int, tasks: int
) -> None:
    try:
        backend = SQLiteBackend(path, client=f"child-{i}", busy_timeout=30.0)
        owned = backend.read_owned(SITE, name, incarnation)
        epochs = dict(zip(owned.tokens, owned.epochs, strict=True))
        total = len(owned.tokens)
        keys = [f"task-{n}" for n in range(tasks)]
        random.Random(i).shuffle(keys)
        barrier.wait(TIMEOUT)
        won: set[str] = set()
        for start in range(0, tasks, 7):  # small batches interleave the processes
            batch = [
                ClaimRequest(task_key=k, token=int(k[5:]) % total, epoch=epochs[int(k[5:]) % total])
                for k in keys[start : start + 7]
            ]
            # claim then complete: claims are idempotent for one incarnation, a
            # completion happens once, so each task is won by exactly one process
            got = backend.claim(SITE, DAY, name, incarnation, batch)
            won |= backend.complete(SITE, DAY, incarnation, sorted(got))
        queue.put(("ok", i, sorted(won)))
        backend.close()
    except Exception as exc:
        queue.put(("error", i, repr(exc)))


# -- tests ---------------------------------------------------------------------
def _site_with_leader(path: Path, tokens: int) -> tuple[SQLiteBackend, int]:
    backend = SQLiteBackend(path)
    backend.ensure_site(SITE, tokens, "xxh3")
    registration = backend.register(SITE, "leader", 600.0)
    return backend, registration.incarnation


def test_compare_and_set_race_has_exactly_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "cas.db"
    backend, incarnation = _site_with_leader(path, PROCESSES)
    results = _run(_commit_child, (str(path), "leader", incarnation))
    winners = [r for r in results if r[0] == "won"]
    assert len(winners) == 1, results
    assert sum(r[0] == "conflict" for r in results) == PROCESSES - 1
    assert winners[0][2] == 1
    view = backend.read_cluster(SITE)
    assert view.site.generation == 1
    owned = [t for t in range(PROCESSES) if view.tokens.owner[t] is not None]
    assert owned == [winners[0][1]]
    backend.close()


def test_schema_creation_race_gives_one_schema(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    results = _run(_schema_child, (str(path),))
    assert [r[0] for r in results] == ["ok"] * PROCESSES
    assert len({r[2] for r in results}) == 1  # one site, created once
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM sync_schema").fetchall() == [(SCHEMA_VERSION,)]
        assert conn.execute("SELECT COUNT(*) FROM sync_site").fetchone() == (1,)
        assert conn.execute("SELECT COUNT(*) FROM sync_token").fetchone() == (64,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_upgrade_race_on_a_version_1_file_upgrades_it_once(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    write_v1_file(path, 1_700_000_000.0)
    results = _run(_open_child, (str(path), V1_SITE))
    assert [r[2] for r in results] == [[("old", 7, "")]] * PROCESSES
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT version FROM sync_schema").fetchall() == [(SCHEMA_VERSION,)]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(sync_node)")]
        assert columns.count("process") == 1
        assert conn.execute("SELECT COUNT(*) FROM sync_token").fetchone() == (4,)
    finally:
        conn.close()


@pytest.mark.parametrize("tasks", [300])
def test_overlapping_claims_are_each_won_once(tmp_path: Path, tasks: int) -> None:
    path = tmp_path / "claims.db"
    total = 16
    backend, incarnation = _site_with_leader(path, total)
    backend.commit_plan(
        SITE,
        PlanCommit(
            leader="leader",
            leader_incarnation=incarnation,
            expected_generation=0,
            basis=0,
            assigns=tuple(
                DirectAssign(
                    token=t, expected_incarnation=None, expected_epoch=0,
                    owner="leader", incarnation=incarnation,
                )
                for t in range(total)
            ),
        ),
    )  # fmt: skip
    results = _run(_claim_child, (str(path), "leader", incarnation, tasks))
    claimed = [key for r in results for key in r[2]]
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == {f"task-{n}" for n in range(tasks)}
    audit = backend.read_audit(SITE, DAY)
    assert len(audit) == tasks
    assert all(a.status == "done" and a.incarnation == incarnation for a in audit)
    backend.close()
