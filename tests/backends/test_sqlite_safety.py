"""SQLite only: the version 2 schema and its in-place upgrade, registration by
process as stored in the file, the fencing tombstone, the caller's transaction
for releases, bounded lock waits (LockTimeout), open_claims, the dead-row purge
and the prune floor.

The rules are base.py's; these tests look at what only SQLite has: the file
itself (read with a plain sqlite3 connection), its single writer, and the
handle's busy timeout.
"""

from __future__ import annotations

import datetime
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobsync.backends.base import (
    DEAD_NODE_RETENTION,
    MIN_PRUNE_AGE,
    NODE_ACTIVE,
    NODE_DEAD,
    ClaimRequest,
    DirectAssign,
    PlanCommit,
)
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.backends.sqlite.schema import SCHEMA_VERSION
from jobsync.core.errors import (
    BackendUnavailable,
    InvalidArgument,
    LockTimeout,
    NodeNameConflict,
    SchemaError,
)
from jobsync.testing.clock import ManualClock

SITE = "s"
DAY = datetime.date(2024, 1, 2)
BUSY = 0.4
"""The busy timeout of the handles that meet a held write lock."""
SLACK = 1.0
"""What a wait bounded by BUSY may take beyond it on a loaded machine."""

# The version 1 schema exactly as the previous release created it (frozen here:
# the library's own DDL may change, an old file on disk does not).
V1_DDL = (
    "CREATE TABLE sync_schema (version INTEGER NOT NULL)",
    """CREATE TABLE sync_site (
        site TEXT PRIMARY KEY, total_tokens INTEGER NOT NULL, hash_function TEXT NOT NULL,
        generation INTEGER NOT NULL DEFAULT 0, change_counter INTEGER NOT NULL DEFAULT 0,
        plan_basis INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
        signal INTEGER NOT NULL DEFAULT 0, incarnation_seq INTEGER NOT NULL DEFAULT 0,
        epoch_floor INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE sync_node (
        site TEXT NOT NULL, name TEXT NOT NULL, incarnation INTEGER NOT NULL,
        created_on REAL NOT NULL, last_heartbeat REAL NOT NULL, lease_timeout REAL NOT NULL,
        state TEXT NOT NULL, fence_until REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (site, name)) WITHOUT ROWID""",
    """CREATE TABLE sync_token (
        site TEXT NOT NULL, token_id INTEGER NOT NULL, node TEXT, incarnation INTEGER,
        epoch INTEGER NOT NULL, pending_to TEXT, pending_deadline REAL,
        PRIMARY KEY (site, token_id)) WITHOUT ROWID""",
    "CREATE INDEX sync_token_holder ON sync_token (site, incarnation)",
    "CREATE INDEX sync_token_pending ON sync_token (site) WHERE pending_deadline IS NOT NULL",
    """CREATE TABLE sync_lock (
        site TEXT NOT NULL, task_key TEXT NOT NULL, token INTEGER NOT NULL,
        patterns TEXT NOT NULL, reason TEXT, created_by TEXT NOT NULL,
        created_at REAL NOT NULL, expires_at REAL, PRIMARY KEY (site, task_key))""",
    """CREATE TABLE sync_history (
        id INTEGER PRIMARY KEY, site TEXT NOT NULL, generation INTEGER NOT NULL,
        leader TEXT NOT NULL, at REAL NOT NULL, trigger TEXT NOT NULL,
        nodes_before TEXT NOT NULL, nodes_after TEXT NOT NULL, moved INTEGER NOT NULL,
        unowned INTEGER NOT NULL, duration_ms REAL NOT NULL)""",
    "CREATE INDEX sync_history_site ON sync_history (site, id)",
    """CREATE TABLE sync_audit (
        site TEXT NOT NULL, date TEXT NOT NULL, task_key TEXT NOT NULL, node TEXT NOT NULL,
        incarnation INTEGER NOT NULL, token INTEGER NOT NULL, epoch INTEGER NOT NULL,
        status TEXT NOT NULL, claimed_at REAL NOT NULL, completed_at REAL,
        UNIQUE (site, date, task_key))""",
    "CREATE INDEX sync_audit_open ON sync_audit (site, incarnation) WHERE status = 'claimed'",
    "CREATE INDEX sync_audit_done ON sync_audit (site, completed_at)",
)


def write_v1_file(path: Path, now: float) -> None:
    """A version 1 file holding site ``s`` (4 tokens, all with node "old" at incarnation 7),
    node "old"'s row and one open claim of it."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("BEGIN")
        for statement in V1_DDL:
            conn.execute(statement)
        conn.execute("INSERT INTO sync_schema VALUES (1)")
        conn.execute(
            "INSERT INTO sync_site (site, total_tokens, hash_function, change_counter,"
            " created_at, signal, incarnation_seq) VALUES ('s', 4, 'xxh3', 3, ?, 3, 7)",
            (now - 100,),
        )
        conn.executemany(
            "INSERT INTO sync_token (site, token_id, node, incarnation, epoch)"
            " VALUES ('s', ?, 'old', 7, 1)",
            [(t,) for t in range(4)],
        )
        conn.execute(
            "INSERT INTO sync_node VALUES ('s', 'old', 7, ?, ?, 60.0, 'active', 0)",
            (now - 100, now - 10),
        )
        conn.execute(
            "INSERT INTO sync_audit VALUES ('s', ?, 'k1', 'old', 7, 0, 1, 'claimed', ?, NULL)",
            (DAY.isoformat(), now - 5),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "safety.db"


@pytest.fixture
def handles(path: Path, clock: ManualClock) -> Iterator[Callable[..., SQLiteBackend]]:
    """Open handles on the test's file (closed at the end); keyword args go to SQLiteBackend."""
    opened: list[SQLiteBackend] = []

    def open_handle(**kwargs: object) -> SQLiteBackend:
        kwargs.setdefault("clock", clock)
        handle = SQLiteBackend(path, **kwargs)  # type: ignore[arg-type]
        opened.append(handle)
        return handle

    yield open_handle
    for handle in opened:
        handle.close()


@pytest.fixture
def db(handles: Callable[..., SQLiteBackend]) -> SQLiteBackend:
    backend = handles(client="main")
    backend.ensure_site(SITE, 4, "xxh3")
    return backend


def raw(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows read from the file with a plain connection, outside jobsync."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def own_everything(db: SQLiteBackend, name: str = "a", process: str = "pa") -> int:
    """Register ``name`` and give it every token; return its incarnation."""
    incarnation = db.register(SITE, name, 60.0, process=process).incarnation
    view = db.read_cluster(SITE)
    db.commit_plan(
        SITE,
        PlanCommit(
            leader=name,
            leader_incarnation=incarnation,
            expected_generation=view.site.generation,
            basis=view.site.change_counter,
            assigns=tuple(
                DirectAssign(
                    token=t, expected_incarnation=view.tokens.incarnation[t],
                    expected_epoch=view.tokens.epoch[t], owner=name, incarnation=incarnation,
                )
                for t in range(len(view.tokens))
            ),
        ),
    )  # fmt: skip
    return incarnation


def claim(db: SQLiteBackend, incarnation: int, *keys: str, name: str = "a") -> frozenset[str]:
    owned = db.read_owned(SITE, name, incarnation)
    requests = [
        ClaimRequest(task_key=key, token=owned.tokens[0], epoch=owned.epochs[0]) for key in keys
    ]
    return db.claim(SITE, DAY, name, incarnation, requests)


def statuses(db: SQLiteBackend) -> dict[str, str]:
    return {record.task_key: record.status for record in db.read_audit(SITE, DAY)}


# -- schema version 2 and the upgrade in place ---------------------------------------
def test_a_fresh_file_is_at_the_current_version_with_the_process_column(
    db: SQLiteBackend, path: Path
) -> None:
    db.register(SITE, "a", 60.0, process="host:1234:abc")
    assert raw(path, "SELECT version FROM sync_schema") == [(SCHEMA_VERSION,)]
    assert raw(path, "SELECT name, process FROM sync_node") == [("a", "host:1234:abc")]
    columns = {row[1]: row for row in raw(path, "PRAGMA table_info(sync_node)")}
    assert columns["process"][2:5] == ("TEXT", 1, "''")  # type, NOT NULL, default


def test_a_version_1_file_upgrades_in_place_keeping_its_rows(
    path: Path, clock: ManualClock, handles: Callable[..., SQLiteBackend]
) -> None:
    write_v1_file(path, clock())
    db = handles()
    assert raw(path, "SELECT version FROM sync_schema") == [(SCHEMA_VERSION,)]
    now, nodes = db.read_nodes(SITE)
    assert [(n.name, n.incarnation, n.state, n.process) for n in nodes] == [
        ("old", 7, NODE_ACTIVE, "")
    ]
    # version 3: the old row has the default capacity and no drain
    assert (nodes[0].capacity, nodes[0].drained_at, nodes[0].drain_note) == (1.0, None, "")
    assert nodes[0].is_live(now)
    view = db.read_cluster(SITE)
    assert view.nodes == nodes
    assert view.tokens.owner == ("old",) * 4 and list(view.tokens.epoch) == [1] * 4
    assert (view.site.change_counter, view.site.total_tokens) == (3, 4)
    assert statuses(db) == {"k1": "claimed"}
    # The upgraded file works as a fresh one: the incarnation sequence went on
    # from 7, and the old row (anonymous process) fences its takeover.
    reg = db.register(SITE, "old", 60.0, process="p2")
    assert reg.incarnation == 8
    assert reg.fence_until == nodes[0].lease_expires
    assert raw(path, "SELECT incarnation, process FROM sync_node") == [(8, "p2")]
    handles().close()  # a second open finds the current version and changes nothing
    assert raw(path, "SELECT version FROM sync_schema") == [(SCHEMA_VERSION,)]


def test_an_old_file_is_read_by_an_old_handle_until_it_reopens(
    path: Path, clock: ManualClock, handles: Callable[..., SQLiteBackend]
) -> None:
    # A worker of the previous release keeps its connection open across the upgrade:
    # its statements name their columns, so a row it writes gets the empty process.
    write_v1_file(path, clock())
    old_worker = sqlite3.connect(path, isolation_level=None)
    try:
        handles()
        old_worker.execute(
            "INSERT OR REPLACE INTO sync_node (site, name, incarnation, created_on,"
            " last_heartbeat, lease_timeout, state, fence_until)"
            " VALUES ('s', 'w', 9, 1.0, 1.0, 60.0, 'active', 0)"
        )
    finally:
        old_worker.close()
    assert raw(path, "SELECT process FROM sync_node WHERE name = 'w'") == [("",)]


def test_a_failed_upgrade_changes_nothing(path: Path, clock: ManualClock) -> None:
    write_v1_file(path, clock())
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE sync_node ADD COLUMN process TEXT")  # someone's stray column
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="version 1 to 2") as caught:
        SQLiteBackend(path, clock=clock)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert raw(path, "SELECT version FROM sync_schema") == [(1,)]  # rolled back, not half-done


def test_two_version_rows_are_refused(path: Path, clock: ManualClock) -> None:
    write_v1_file(path, clock())
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO sync_schema VALUES (1)")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match=r"\[1, 1\]"):
        SQLiteBackend(path, clock=clock)


# -- registration by process, as stored -----------------------------------------------
def test_the_same_process_registering_twice_adds_no_fence(db: SQLiteBackend, path: Path) -> None:
    first = db.register(SITE, "a", 60.0, process="pa")
    again = db.register(SITE, "a", 60.0, process="pa", known=first.incarnation)
    assert again.incarnation == first.incarnation + 1
    assert again.fence_until == 0.0
    assert raw(path, "SELECT incarnation, process, fence_until FROM sync_node") == [
        (again.incarnation, "pa", 0.0)
    ]


def test_anonymous_registrations_fence_each_other(db: SQLiteBackend) -> None:
    first = db.register(SITE, "a", 60.0)
    again = db.register(SITE, "a", 60.0, known=first.incarnation)
    assert again.fence_until == first.registered_at + 60.0


def test_a_late_registration_conflicts_and_writes_nothing(db: SQLiteBackend, path: Path) -> None:
    mine = db.register(SITE, "a", 60.0, process="pa")
    newer = db.register(SITE, "a", 30.0, process="pb")
    file_before = (
        raw(path, "SELECT * FROM sync_site"),
        raw(path, "SELECT * FROM sync_node"),
        raw(path, "SELECT * FROM sync_token ORDER BY token_id"),
    )
    with pytest.raises(NodeNameConflict) as caught:
        db.register(SITE, "a", 60.0, process="pa", known=mine.incarnation)
    message = str(caught.value)
    assert "'a'" in message
    assert str(newer.incarnation) in message and str(mine.incarnation) in message
    assert (
        raw(path, "SELECT * FROM sync_site"),
        raw(path, "SELECT * FROM sync_node"),
        raw(path, "SELECT * FROM sync_token ORDER BY token_id"),
    ) == file_before  # incarnation sequence, counters and the row itself unchanged
    # The incarnation the refused call would have taken is still the next one.
    assert db.register(SITE, "b", 60.0).incarnation == newer.incarnation + 1


def test_registration_checks_process_and_known_before_writing(
    db: SQLiteBackend, path: Path
) -> None:
    before = raw(path, "SELECT * FROM sync_site")
    for kwargs in ({"process": "x" * 201}, {"process": 5}, {"known": -1}, {"known": True}):
        with pytest.raises(InvalidArgument):
            db.register(SITE, "a", 60.0, **kwargs)  # type: ignore[arg-type]
    assert raw(path, "SELECT * FROM sync_site") == before


# -- deregistration keeps the fence ----------------------------------------------------
def test_deregistration_of_a_fencing_row_leaves_a_dead_tombstone(
    db: SQLiteBackend, path: Path, clock: ManualClock
) -> None:
    old = db.register(SITE, "b", 100.0, process="pa")
    new = db.register(SITE, "b", 60.0, process="pb")
    assert new.fence_until == old.registered_at + 100.0
    clock.advance(10.0)
    assert db.deregister(SITE, "b", new.incarnation) is True
    tombstone = raw(path, "SELECT incarnation, state, fence_until, process FROM sync_node")
    assert tombstone == [(new.incarnation, NODE_DEAD, new.fence_until, "pb")]
    site = raw(path, "SELECT * FROM sync_site")
    assert db.deregister(SITE, "b", new.incarnation) is False  # its reply was lost
    assert raw(path, "SELECT * FROM sync_site") == site  # no second bump
    assert raw(path, "SELECT incarnation, state, fence_until, process FROM sync_node") == (
        tombstone
    )
    # A new process after the tombstone is still fenced by the first one's lease.
    third = db.register(SITE, "b", 60.0, process="pc")
    assert third.fence_until == new.fence_until
    clock.set(third.fence_until)
    assert db.deregister(SITE, "b", third.incarnation) is True
    assert raw(path, "SELECT COUNT(*) FROM sync_node") == [(0,)]


# -- release in the caller's transaction ---------------------------------------------
def test_release_inside_the_callers_transaction_commits_or_rolls_back_with_it(
    db: SQLiteBackend, path: Path
) -> None:
    incarnation = own_everything(db)
    assert claim(db, incarnation, "t1") == {"t1"}
    mine = sqlite3.connect(path)
    try:
        mine.execute("CREATE TABLE effects (task TEXT)")
        mine.commit()
        mine.execute("INSERT INTO effects VALUES ('undo t1')")
        assert db.release_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        assert statuses(db) == {"t1": "claimed"}  # not committed yet
        mine.rollback()
        assert statuses(db) == {"t1": "claimed"}
        mine.execute("INSERT INTO effects VALUES ('undo t1')")
        assert db.release_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        mine.commit()
        assert statuses(db) == {}
        assert db.release_in(mine, SITE, DAY, incarnation, ["t1"]) == frozenset()
        mine.commit()
    finally:
        mine.close()
    assert db.statistics()["release"] == 3


def test_release_refuses_connections_it_cannot_join(
    db: SQLiteBackend, path: Path, tmp_path: Path
) -> None:
    incarnation = own_everything(db)
    claim(db, incarnation, "t1")
    elsewhere = sqlite3.connect(tmp_path / "other.db")
    bare = sqlite3.connect(path, isolation_level=None)
    try:
        with pytest.raises(InvalidArgument, match=r"sqlite3\.Connection"):
            db.release_in(object(), SITE, DAY, incarnation, ["t1"])
        with pytest.raises(InvalidArgument, match=r"other\.db"):
            db.release_in(elsewhere, SITE, DAY, incarnation, ["t1"])
        with pytest.raises(InvalidArgument, match="autocommit"):
            db.release_in(bare, SITE, DAY, incarnation, ["t1"])
    finally:
        elsewhere.close()
        bare.close()
    assert statuses(db) == {"t1": "claimed"}


def test_release_in_the_callers_transaction_never_waits_on_the_coordination_thread(
    db: SQLiteBackend, path: Path
) -> None:
    # As for completions: taking the handle's lock while the caller holds SQLite's
    # write lock would stall both for the whole busy timeout.
    incarnation = own_everything(db)
    assert claim(db, incarnation, "t1") == {"t1"}
    mine = sqlite3.connect(path, isolation_level=None)
    beat: list[object] = []
    try:
        mine.execute("BEGIN IMMEDIATE")
        heartbeat = threading.Thread(
            target=lambda: beat.append(db.heartbeat(SITE, "a", incarnation).outcome.value)
        )
        heartbeat.start()
        heartbeat.join(0.2)  # now waiting for the write lock, holding the handle
        started = time.monotonic()
        assert db.release_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
        mine.execute("COMMIT")
        heartbeat.join()
        assert time.monotonic() - started < 2.0  # busy_timeout is 5 s
        assert beat == ["renewed"]
    finally:
        mine.close()
    assert statuses(db) == {}


# -- bounded lock waits ----------------------------------------------------------------
@pytest.fixture
def held(db: SQLiteBackend, path: Path) -> Iterator[tuple[int, sqlite3.Connection]]:
    """Node a owns every token and claimed t1; a user's write transaction then holds the
    file, with t1's completion in it, uncommitted."""
    incarnation = own_everything(db)
    assert claim(db, incarnation, "t1", "t2") == {"t1", "t2"}
    mine = sqlite3.connect(path, isolation_level=None)
    mine.execute("BEGIN IMMEDIATE")
    assert db.complete_in(mine, SITE, DAY, incarnation, ["t1"]) == {"t1"}
    yield incarnation, mine
    if mine.in_transaction:
        mine.execute("ROLLBACK")
    mine.close()


WRITES: dict[str, Callable[[SQLiteBackend, int], object]] = {
    "heartbeat": lambda db, inc: db.heartbeat(SITE, "a", inc),
    "claim": lambda db, inc: claim(db, inc, "t3"),
    "complete": lambda db, inc: db.complete(SITE, DAY, inc, ["t2"]),
    "release": lambda db, inc: db.release(SITE, DAY, inc, ["t2"]),
    "register": lambda db, inc: db.register(SITE, "b", 60.0, process="pb"),
    "deregister": lambda db, inc: db.deregister(SITE, "a", inc),
    "reap_claims": lambda db, inc: db.reap_claims(SITE),
    "mark_leaving": lambda db, inc: db.mark_leaving(SITE, "a", inc),
    "prune": lambda db, inc: db.prune(SITE, MIN_PRUNE_AGE),
}


@pytest.mark.parametrize("verb", sorted(WRITES))
def test_a_held_write_transaction_makes_writes_raise_lock_timeout_after_the_busy_timeout(
    held: tuple[int, sqlite3.Connection],
    handles: Callable[..., SQLiteBackend],
    path: Path,
    verb: str,
) -> None:
    incarnation, mine = held
    impatient = handles(client="worker", busy_timeout=BUSY)
    before = raw(path, "SELECT * FROM sync_site")
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        WRITES[verb](impatient, incarnation)
    waited = time.monotonic() - started
    assert BUSY * 0.8 <= waited < BUSY + SLACK
    assert isinstance(caught.value, BackendUnavailable)  # transient: callers retry
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    message = str(caught.value)
    for part in ("locked", "write transaction", "complete(connection=...)", "heartbeat"):
        assert part in message, message
    assert "busy_timeout=0.4 s" in message
    mine.execute("COMMIT")  # the user's transaction ends: the same call now works
    assert raw(path, "SELECT * FROM sync_site") == before  # the failed call wrote nothing
    WRITES[verb](impatient, incarnation)


def test_reads_go_on_while_a_write_transaction_is_held(
    held: tuple[int, sqlite3.Connection], handles: Callable[..., SQLiteBackend]
) -> None:
    incarnation, mine = held
    reader = handles(client="reader", busy_timeout=BUSY)
    started = time.monotonic()
    assert reader.read_cluster(SITE).tokens.owner == ("a",) * 4
    assert reader.read_owned(SITE, "a", incarnation).tokens == (0, 1, 2, 3)
    assert reader.open_claims(SITE, DAY, incarnation, ["t1", "t2", "t9"]) == {"t1", "t2"}
    assert reader.wait_for_change(SITE, 0) is False
    assert time.monotonic() - started < BUSY  # none of them waited for the writer
    mine.execute("COMMIT")
    # Committed: t1 is done, so the Job can forget its completion.
    assert reader.open_claims(SITE, DAY, incarnation, ["t1", "t2"]) == {"t2"}


def test_a_call_behind_another_threads_blocked_call_waits_one_busy_timeout_in_all(
    held: tuple[int, sqlite3.Connection], handles: Callable[..., SQLiteBackend]
) -> None:
    # The coordination thread's heartbeat holds the handle while it waits for the
    # write lock; the user's thread then claims on the same handle.  Its wait for
    # the handle counts against its busy timeout: it fails after about one busy
    # timeout (2 s here), not after the rest of the heartbeat's wait plus a full
    # one of its own (3 s).
    incarnation, mine = held
    shared = handles(client="worker", busy_timeout=2.0)
    owned = shared.read_owned(SITE, "a", incarnation)
    request = ClaimRequest(task_key="t3", token=owned.tokens[0], epoch=owned.epochs[0])
    failures: list[BaseException] = []

    def beat() -> None:
        try:
            shared.heartbeat(SITE, "a", incarnation)
        except BaseException as exc:
            failures.append(exc)

    heartbeat = threading.Thread(target=beat)
    heartbeat.start()
    time.sleep(1.0)  # half the heartbeat's wait is over
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        shared.claim(SITE, DAY, "a", incarnation, [request])
    waited = time.monotonic() - started
    heartbeat.join()
    assert [type(f) for f in failures] == [LockTimeout]
    assert 1.6 <= waited < 2.5, waited
    mine.execute("COMMIT")
    assert shared.claim(SITE, DAY, "a", incarnation, [request]) == {"t3"}


def test_a_handle_held_by_another_thread_past_the_busy_timeout_raises_lock_timeout(
    path: Path, handles: Callable[..., SQLiteBackend]
) -> None:
    # A call that holds the handle (here: a clock that stalls inside a transaction)
    # keeps every other thread's call waiting at most the busy timeout.
    gate, inside = threading.Event(), threading.Event()

    def stalling_clock() -> float:
        if threading.current_thread().name == "stalled":
            inside.set()
            gate.wait(30)
        return time.time()

    slow = handles(client="w", clock=stalling_clock, busy_timeout=BUSY)
    slow.ensure_site(SITE, 4, "xxh3")
    stalled = threading.Thread(
        target=lambda: slow.register(SITE, "a", 60.0, process="pa"), name="stalled"
    )
    stalled.start()
    try:
        assert inside.wait(10)
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="another thread's call"):
            slow.read_nodes(SITE)
        assert BUSY * 0.8 <= time.monotonic() - started < BUSY + SLACK
        assert slow.now() > 0 and slow.statistics()["register"] == 1  # these never wait
    finally:
        gate.set()
        stalled.join()
    assert [n.name for n in slow.read_nodes(SITE)[1]] == ["a"]


@pytest.mark.parametrize("verb", ["complete", "release"])
def test_a_deferred_callers_transaction_meets_a_held_write_lock_at_once(
    held: tuple[int, sqlite3.Connection],
    handles: Callable[..., SQLiteBackend],
    path: Path,
    verb: str,
) -> None:
    # The caller's own connection would wait 10 s for locks, but SQLite never waits
    # to turn a reader into a writer: LockTimeout at once, saying how to begin.
    incarnation, mine = held
    impatient = handles(client="worker", busy_timeout=BUSY)
    theirs = sqlite3.connect(path, timeout=10.0)
    try:
        theirs.execute("BEGIN")  # deferred: a reader until it writes
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="BEGIN IMMEDIATE") as caught:
            getattr(impatient, f"{verb}_in")(theirs, SITE, DAY, incarnation, ["t2"])
        assert time.monotonic() - started < BUSY
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
        theirs.rollback()
    finally:
        theirs.close()
    mine.execute("COMMIT")
    assert statuses(impatient) == {"t1": "done", "t2": "claimed"}


@pytest.mark.parametrize("verb", ["complete", "release"])
def test_a_legacy_connection_beginning_with_our_update_waits_at_most_the_busy_timeout(
    held: tuple[int, sqlite3.Connection],
    handles: Callable[..., SQLiteBackend],
    path: Path,
    verb: str,
) -> None:
    # In the sqlite3 module's legacy mode with no transaction open, jobsync's update
    # begins the caller's transaction, and that begin waits for the write lock: for
    # at most jobsync's busy timeout, not the caller's 10 s, whose setting comes back.
    incarnation, mine = held
    impatient = handles(client="worker", busy_timeout=BUSY)
    theirs = sqlite3.connect(path, timeout=10.0)
    try:
        assert not theirs.in_transaction
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            getattr(impatient, f"{verb}_in")(theirs, SITE, DAY, incarnation, ["t2"])
        assert BUSY * 0.8 <= time.monotonic() - started < BUSY + SLACK
        assert theirs.execute("PRAGMA busy_timeout").fetchone() == (10_000,)
        mine.execute("COMMIT")
        # The lock is free: the same call now runs in (and begins) their transaction.
        assert getattr(impatient, f"{verb}_in")(theirs, SITE, DAY, incarnation, ["t2"]) == {"t2"}
        assert theirs.in_transaction
        theirs.rollback()
    finally:
        theirs.close()
    assert statuses(impatient) == {"t1": "done", "t2": "claimed"}


def test_a_zero_busy_timeout_fails_at_once(
    held: tuple[int, sqlite3.Connection], handles: Callable[..., SQLiteBackend]
) -> None:
    incarnation, _ = held
    impatient = handles(client="worker", busy_timeout=0)
    started = time.monotonic()
    with pytest.raises(LockTimeout):
        impatient.heartbeat(SITE, "a", incarnation)
    assert time.monotonic() - started < SLACK


# -- open_claims -------------------------------------------------------------------------
def test_open_claims_reads_committed_state_in_one_read(db: SQLiteBackend) -> None:
    incarnation = own_everything(db)
    assert claim(db, incarnation, "t1", "t2", "t3") == {"t1", "t2", "t3"}
    db.complete(SITE, DAY, incarnation, ["t2"])
    before = db.statistics()
    assert db.open_claims(SITE, DAY, incarnation, ["t1", "t2", "t1", "ü"]) == {"t1"}
    assert db.open_claims(SITE, DAY, incarnation + 1, ["t1", "t3"]) == frozenset()
    after = db.statistics()
    assert after["round_trips"] - before["round_trips"] == 2
    assert after["open_claims"] == 2
    with pytest.raises(InvalidArgument):
        db.open_claims("nowhere", DAY, incarnation, ["t1"])
    with pytest.raises(InvalidArgument):
        db.open_claims(SITE, DAY, incarnation, "t1")


# -- dead rows and prune -------------------------------------------------------------------
def test_reap_purges_old_dead_rows_without_a_bump(
    db: SQLiteBackend, path: Path, clock: ManualClock
) -> None:
    leader = db.register(SITE, "a", 1_000_000.0, process="pa")
    gone = db.register(SITE, "d", 10.0, process="pd")
    # A tombstone: e's second process, fenced by its first, then deregistered.
    db.register(SITE, "e", 20.0, process="p1")
    tomb = db.register(SITE, "e", 10.0, process="p2")
    assert db.deregister(SITE, "e", tomb.incarnation) is True
    clock.set(gone.registered_at + 10.0 + DEAD_NODE_RETENTION + 1.0)
    counter = db.site_info(SITE).change_counter  # type: ignore[union-attr]
    assert db.reap_claims(SITE).released == 0
    assert raw(path, "SELECT name FROM sync_node ORDER BY name") == [("a",)]
    assert db.site_info(SITE).change_counter == counter  # type: ignore[union-attr]
    assert db.heartbeat(SITE, "a", leader.incarnation).outcome.value == "renewed"


def test_prune_refuses_young_ages_before_touching_the_file(db: SQLiteBackend) -> None:
    before = db.statistics()
    for age in (0.5, 60.0, MIN_PRUNE_AGE - 1):
        with pytest.raises(InvalidArgument, match="one day"):
            db.prune(SITE, age)
    assert db.statistics() == before  # not even a read
    assert dict(db.prune(SITE, MIN_PRUNE_AGE)) == {"audit": 0, "history": 0}
