"""What only the PostgreSQL backend has: SQL semantics, races, restarts, connections.

The shared contract runs in test_contract_postgres.py; this module checks the
rest of the brief against a real server: LIKE agreement with the core, schema
and prefix validation, the README's monitoring SQL, concurrent migrations,
concurrent plans, the heartbeat-versus-reap race, counters across a restart,
round trips, transactional completion, NOTIFY, and connection loss.
"""

from __future__ import annotations

import datetime
import functools
import multiprocessing
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from psycopg import sql

from jobsync.backends.base import (
    ClaimRequest,
    DirectAssign,
    HeartbeatOutcome,
    PlanCommit,
    Revoke,
)
from jobsync.backends.postgres import PostgresBackend, migrate
from jobsync.backends.postgres import schema as schema_module
from jobsync.core import match_pattern
from jobsync.core.errors import (
    BackendUnavailable,
    ConflictError,
    InvalidArgument,
    InvalidPattern,
    NodeNameConflict,
    NotLeader,
    SchemaError,
)
from jobsync.testing.backend_contract import wait_by_polling
from tests.support.pg import OwnedPgServer

pytestmark = pytest.mark.postgres

SITE = "site"
DAY = datetime.date(2024, 3, 1)
# forkserver with this module preloaded: twenty children start in about a
# second (spawn re-imports everything in each child: ~15 s on two cores).
CTX = multiprocessing.get_context("forkserver")


@pytest.fixture
def open_backend(pg_dsn: str, pg_schema: str) -> Iterator[Callable[..., PostgresBackend]]:
    """``open_backend(client, **kwargs)``: handles on this test's schema, closed afterwards."""
    handles: list[PostgresBackend] = []

    def make(client: str = "test", **kwargs: Any) -> PostgresBackend:
        handle = PostgresBackend(pg_dsn, client=client, schema=pg_schema, **kwargs)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.close()


def _plan(leader: str, inc: int, view_gen: int, basis: int, **writes: Any) -> PlanCommit:
    return PlanCommit(
        leader=leader,
        leader_incarnation=inc,
        expected_generation=view_gen,
        basis=basis,
        **writes,
    )


def _give_all(db: PostgresBackend, leader: str, inc: int, to: dict[int, tuple[str, int]]) -> int:
    """DirectAssign tokens (token -> (owner, incarnation)) from their current holders."""
    view = db.read_cluster(SITE)
    assigns = tuple(
        DirectAssign(
            token=t,
            expected_incarnation=view.tokens.incarnation[t],
            expected_epoch=view.tokens.epoch[t],
            owner=owner,
            incarnation=owner_inc,
        )
        for t, (owner, owner_inc) in to.items()
    )
    plan = _plan(leader, inc, view.site.generation, view.site.change_counter, assigns=assigns)
    return db.commit_plan(SITE, plan)


# -- LIKE: the core agrees with the server ----------------------------------------
@pytest.fixture(scope="module")
def like_conn(pg_server: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(pg_server, autocommit=True) as conn:
        yield conn


_TEXT = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_NAME_CHARS = st.one_of(st.sampled_from("ab_%\\\n é中😀"), _TEXT)
_PATTERN_PARTS = st.one_of(
    st.sampled_from(["%", "_", "\\%", "\\_", "\\\\", "\\a", "a", "b", "\n", "é", "中", "😀"]),
    _TEXT.map(lambda c: c if c != "\\" else "\\\\"),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=300)
@given(
    name=st.text(_NAME_CHARS, max_size=8),
    parts=st.lists(_PATTERN_PARTS, max_size=6),
    dangling=st.booleans(),
)
def test_match_pattern_agrees_with_the_servers_like(
    like_conn: psycopg.Connection[Any], name: str, parts: list[str], dangling: bool
) -> None:
    pattern = "".join(parts) + ("\\" if dangling else "")
    ends_unescaped = _ends_in_unescaped_backslash(pattern)
    if ends_unescaped:
        # PostgreSQL refuses such a pattern when matching reaches its end, so
        # give it a name that gets there: one matching the rest, plus a char.
        with pytest.raises(InvalidPattern):
            match_pattern(pattern, name)
        witness = _a_match(pattern[:-1]) + "z"
        with pytest.raises(psycopg.Error, match="escape"):
            like_conn.execute("SELECT %s::text LIKE %s::text", (witness, pattern))
        return
    row = like_conn.execute("SELECT %s::text LIKE %s::text", (name, pattern)).fetchone()
    assert row is not None
    assert match_pattern(pattern, name) is row[0], (pattern, name)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=200)
@given(name=st.text(_NAME_CHARS, min_size=1, max_size=8), data=st.data())
def test_patterns_built_from_the_name_match_on_both_sides(
    like_conn: psycopg.Connection[Any], name: str, data: st.DataObject
) -> None:
    """Patterns that usually match (random names rarely match random patterns)."""
    pattern = "".join(
        data.draw(st.sampled_from(["%", "_", "\\" + ch, ch if ch not in "%_\\" else "\\" + ch]))
        for ch in name
    )
    assume(not _ends_in_unescaped_backslash(pattern))
    row = like_conn.execute("SELECT %s::text LIKE %s::text", (name, pattern)).fetchone()
    assert row is not None
    assert match_pattern(pattern, name) is row[0], (pattern, name)


def test_like_regressions(like_conn: psycopg.Connection[Any]) -> None:
    cases = [("a\nb", "a_b"), ("a\nb", "a%"), ("%", "\\%"), ("\\", "\\\\"), ("ab", "\\a\\b")]
    cases += [("😀", "_"), ("é", "_"), ("x", "%%%"), ("", "%"), ("", "_"), ("A", "a")]
    for name, pattern in cases:
        row = like_conn.execute("SELECT %s::text LIKE %s::text", (name, pattern)).fetchone()
        assert row is not None
        assert match_pattern(pattern, name) is row[0], (pattern, name)


def _a_match(pattern: str) -> str:
    """A name that a valid LIKE pattern matches."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i + 1])
            i += 2
            continue
        out.append({"%": "", "_": "a"}.get(ch, ch))
        i += 1
    return "".join(out)


def _ends_in_unescaped_backslash(pattern: str) -> bool:
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i] == "\\":
            if i + 1 == n:
                return True
            i += 2
        else:
            i += 1
    return False


# -- the plan checks' fast path agrees with their thorough path ------------------------
def _bad_plans() -> list[Any]:
    good = DirectAssign(
        token=0, expected_incarnation=None, expected_epoch=0, owner="a", incarnation=1
    )
    revoke = Revoke(token=1, expected_incarnation=1, expected_epoch=0, destination="b")
    base = PlanCommit(leader="a", leader_incarnation=1, expected_generation=0, basis=0)
    evolve = attrs.evolve
    return [
        "not a plan",
        evolve(base, leader=""),
        evolve(base, leader_incarnation=-1),
        evolve(base, basis=True),
        evolve(base, ack_timeout=0),
        evolve(base, assigns=(evolve(good, owner=None),)),
        evolve(base, assigns=(evolve(good, incarnation=None),)),
        evolve(base, assigns=(evolve(good, owner="x\x00"),)),
        evolve(base, assigns=(evolve(good, expected_epoch=-1),)),
        evolve(base, assigns=(evolve(good, expected_incarnation=True),)),
        evolve(base, assigns=(evolve(good, incarnation=1.0),)),
        evolve(base, assigns=(revoke,)),
        evolve(base, revokes=(evolve(revoke, destination=""),)),
        evolve(base, revokes=(evolve(revoke, expected_incarnation=None),)),
        evolve(base, revokes=(good,)),
    ]


@pytest.mark.parametrize("plan", _bad_plans(), ids=lambda p: repr(p)[:60])
def test_the_fast_plan_checks_refuse_what_the_shared_checks_refuse(plan: Any) -> None:
    from jobsync.backends import _checks

    with pytest.raises(InvalidArgument) as slow:
        _checks._plan_shape_thorough(plan)
    with pytest.raises(InvalidArgument) as fast:
        _checks.plan_shape(plan)
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value)


def test_the_fast_plan_checks_defer_to_the_shared_checks_on_the_unusual() -> None:
    from jobsync.backends._checks import plan_shape as _plan_shape

    good = DirectAssign(
        token=0, expected_incarnation=None, expected_epoch=0, owner="a", incarnation=1
    )
    plan = PlanCommit(leader="a", leader_incarnation=1, expected_generation=0, basis=0)
    listed = attrs.evolve(plan, assigns=[good])  # type: ignore[arg-type]  # _checks accepts it
    assert _plan_shape(listed) is listed


def test_the_fast_token_checks_refuse_what_the_shared_checks_refuse() -> None:
    from jobsync.backends import _checks
    from jobsync.backends._checks import plan_tokens as _plan_tokens

    good = DirectAssign(
        token=0, expected_incarnation=None, expected_epoch=0, owner="a", incarnation=1
    )
    revoke = Revoke(token=0, expected_incarnation=1, expected_epoch=0, destination="b")
    base = PlanCommit(leader="a", leader_incarnation=1, expected_generation=0, basis=0)
    for plan in (
        attrs.evolve(base, assigns=(attrs.evolve(good, token=4),)),
        attrs.evolve(base, assigns=(attrs.evolve(good, token=-1),)),
        attrs.evolve(base, assigns=(good, good)),
        attrs.evolve(base, assigns=(good,), revokes=(revoke,)),
    ):
        with pytest.raises(InvalidArgument) as slow:
            _checks._plan_tokens_thorough(plan, 4)
        with pytest.raises(InvalidArgument) as fast:
            _plan_tokens(plan, 4)
        assert str(fast.value) == str(slow.value)
    _plan_tokens(attrs.evolve(base, assigns=(good,), revokes=(attrs.evolve(revoke, token=3),)), 4)


# -- schema, prefix, monitoring --------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"schema": "Public"},
        {"schema": "1abc"},
        {"schema": 'x"; DROP TABLE y; --'},
        {"schema": ""},
        {"schema": "a" * 42},
        {"prefix": ""},
        {"prefix": "Sync_"},
        {"prefix": "sync-"},
        {"prefix": "s p"},
    ],
)
def test_unsafe_schema_or_prefix_is_refused_before_connecting(kwargs: dict[str, str]) -> None:
    value = next(iter(kwargs.values()))
    dead = "host=127.0.0.1 port=1 user=nobody connect_timeout=1"
    with pytest.raises(InvalidArgument) as caught:
        PostgresBackend(dead, **kwargs)  # type: ignore[arg-type]
    assert repr(value) in str(caught.value)
    with pytest.raises(InvalidArgument):
        migrate(dead, **kwargs)  # type: ignore[arg-type]


def test_a_custom_schema_and_prefix_hold_every_table(
    pg_dsn: str, pg_schema: str, open_backend: Callable[..., PostgresBackend]
) -> None:
    db = open_backend(prefix="jobs_")
    db.ensure_site(SITE, 8, "xxh3")
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (pg_schema,)
        ).fetchall()
    expected = sorted(f"jobs_{name}" for name in schema_module.TABLES)
    assert [r[0] for r in rows] == expected


def test_the_readme_monitoring_queries_work_as_written(
    pg_dsn: str, pg_schema: str, open_backend: Callable[..., PostgresBackend]
) -> None:
    db = open_backend()
    db.ensure_site(SITE, 8, "xxh3")
    a = db.register(SITE, "worker-a", 30.0)
    db.register(SITE, "worker-b", 30.0)
    _give_all(db, "worker-a", a.incarnation, dict.fromkeys(range(8), ("worker-a", a.incarnation)))
    with psycopg.connect(pg_dsn, options=f"-c search_path={pg_schema}") as conn:
        live = conn.execute(
            "SELECT name FROM sync_node WHERE last_heartbeat > now() - interval '15 seconds'"
        ).fetchall()
        assert sorted(r[0] for r in live) == ["worker-a", "worker-b"]
        tokens = conn.execute("SELECT token_id, node FROM sync_token ORDER BY token_id").fetchall()
        assert tokens == [(t, "worker-a") for t in range(8)]
        when = conn.execute("SELECT created_on, last_heartbeat FROM sync_node").fetchall()
        assert all(isinstance(v, datetime.datetime) for row in when for v in row)


def test_a_missing_schema_without_migrate_is_a_schema_error(pg_dsn: str, pg_schema: str) -> None:
    with pytest.raises(SchemaError, match="migrate"):
        PostgresBackend(pg_dsn, schema=pg_schema, migrate=False)
    assert migrate(pg_dsn, schema=pg_schema) == {"from": 0, "to": schema_module.SCHEMA_VERSION}
    PostgresBackend(pg_dsn, schema=pg_schema, migrate=False).close()


def _migrate_in_child(i: int, barrier: Any, queue: Any, dsn: str, schema: str) -> None:
    try:
        barrier.wait(timeout=60)
        if i % 2:
            result: Any = dict(migrate(dsn, schema=schema))
        else:
            PostgresBackend(dsn, schema=schema, client=f"m{i}").close()
            result = "backend"
        queue.put((i, "ok", result))
    except BaseException as exc:
        queue.put((i, "error", repr(exc)))


def test_twenty_processes_migrate_an_empty_schema_at_once(pg_dsn: str, pg_schema: str) -> None:
    count = 20
    CTX.set_forkserver_preload([__name__])
    barrier, queue = CTX.Barrier(count), CTX.Queue()
    procs = [
        CTX.Process(target=_migrate_in_child, args=(i, barrier, queue, pg_dsn, pg_schema))
        for i in range(count)
    ]
    for proc in procs:
        proc.start()
    try:
        results = [queue.get(timeout=120) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
    errors = [r for r in results if r[1] != "ok"]
    assert not errors, errors
    applied = [r[2] for r in results if isinstance(r[2], dict) and r[2]["from"] == 0]
    assert len(applied) <= 1  # one did the work (unless a backend's connect did)
    with psycopg.connect(pg_dsn) as conn:
        versions = conn.execute(
            sql.SQL("SELECT version FROM {}").format(
                sql.Identifier(pg_schema, "sync_schema_version")
            )
        ).fetchall()
    assert sorted(versions) == [(v,) for v in range(1, schema_module.SCHEMA_VERSION + 1)]


# -- concurrent plans -------------------------------------------------------------------
def _race(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` on ``count`` threads released together; results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def body(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_two_leaders_committing_at_once_exactly_one_wins(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    """Two handles commit different plans on one generation: one wins, one loses cleanly.

    Odd rounds: the same leader on two handles (the loser gets ConflictError).
    Even rounds: "a" (the oldest) and "b" (who wrongly believes it leads); the
    loser gets ConflictError or NotLeader, depending on who locks first.
    """
    db = open_backend()
    db.ensure_site(SITE, 64, "xxh3")
    regs = {"a": db.register(SITE, "a", 60.0), "b": db.register(SITE, "b", 60.0)}
    handles = [open_backend("one"), open_backend("two")]
    for round_ in range(16):
        view = db.read_cluster(SITE)
        leaders = ["a", "a"] if round_ % 2 else ["a", "b"]
        random.shuffle(leaders)
        # both plans rewrite every (unowned) token: applying both would bump epochs twice
        assigns = tuple(
            DirectAssign(
                token=t,
                expected_incarnation=None,
                expected_epoch=view.tokens.epoch[t],
                owner=None,
                incarnation=None,
            )
            for t in range(64)
        )
        gen, basis = view.site.generation, view.site.change_counter
        plans = [
            _plan(leader, regs[leader].incarnation, gen, basis, assigns=assigns)
            for leader in leaders
        ]
        results = _race(2, functools.partial(_commit_on, handles, plans))
        wins = [r for r in results if isinstance(r, int)]
        losses = [r for r in results if not isinstance(r, int)]
        assert wins == [gen + 1], results
        assert len(losses) == 1 and isinstance(losses[0], (ConflictError, NotLeader)), results
        if "b" in leaders:
            assert plans[results.index(wins[0])].leader == "a"
        epochs = db.read_cluster(SITE).tokens.epoch
        assert list(epochs) == [e + 1 for e in view.tokens.epoch]


def _commit_on(handles: list[PostgresBackend], plans: list[PlanCommit], i: int) -> int:
    return handles[i].commit_plan(SITE, plans[i])


# -- the heartbeat-versus-reap race -------------------------------------------------------
def test_a_heartbeat_racing_the_reap_of_its_own_incarnation_never_both_succeed(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    lease = 0.1
    admin = open_backend("admin")
    admin.ensure_site(SITE, 4, "xxh3")
    leader = admin.register(SITE, "leader", 600.0)
    beater, reaper = open_backend("beater"), open_backend("reaper")
    rng = random.Random(1234)
    outcomes: dict[tuple[bool, bool], int] = {}
    for round_ in range(32):
        time.sleep(lease + 0.01)  # the previous round's x, if it renewed, has expired
        name = f"x{round_}"
        x = admin.register(SITE, name, lease)
        _give_all(admin, "leader", leader.incarnation, {0: (name, x.incarnation)})
        view = admin.read_cluster(SITE)
        # most rounds hit the expiry within a few ms (real races); some land
        # wider, so that both outcomes occur even on a loaded machine
        spread = 0.004 if round_ % 4 else 0.03
        target = x.registered_at + lease + rng.uniform(-spread, spread)
        while time.time() < target - 0.002:
            time.sleep(0.0005)
        renewed, reaped = _heartbeat_against_reap(
            beater, reaper, name, x.incarnation, leader.incarnation, view
        )
        assert not isinstance(renewed, Exception), renewed
        assert not isinstance(reaped, Exception), reaped
        assert not (renewed and reaped), f"round {round_}: both the heartbeat and the reap won"
        outcomes[(renewed, reaped)] = outcomes.get((renewed, reaped), 0) + 1
        table = admin.read_cluster(SITE).tokens
        _, nodes = admin.read_nodes(SITE)
        row = next(n for n in nodes if n.name == name)
        if reaped:
            assert table.owner[0] is None and row.state == "dead"
        else:
            assert table.incarnation[0] == x.incarnation
    # both sides won some rounds: the race was real, not arranged
    assert outcomes.get((True, False), 0) > 0 and outcomes.get((False, True), 0) > 0, outcomes


def _heartbeat_against_reap(
    beater: PostgresBackend,
    reaper: PostgresBackend,
    name: str,
    incarnation: int,
    leader_incarnation: int,
    view: Any,
) -> list[Any]:
    """Release a heartbeat of ``name`` and a reap of its token 0 (to nobody) together."""

    def beat() -> bool:
        outcome = beater.heartbeat(SITE, name, incarnation).outcome
        return outcome is HeartbeatOutcome.RENEWED

    def reap() -> bool:
        assign = DirectAssign(
            token=0,
            expected_incarnation=incarnation,
            expected_epoch=view.tokens.epoch[0],
            owner=None,
            incarnation=None,
        )
        gen, basis = view.site.generation, view.site.change_counter
        try:
            reaper.commit_plan(
                SITE, _plan("leader", leader_incarnation, gen, basis, assigns=(assign,))
            )
        except ConflictError:
            return False
        return True

    return _race(2, lambda i: (beat, reap)[i]())


# -- counters across a restart ------------------------------------------------------------
@pytest.mark.slow
def test_epochs_generations_and_incarnations_survive_restarts(
    owned_pg_server: OwnedPgServer,
) -> None:
    """A clean restart, then a crash (immediate shutdown, WAL replay): nothing goes back."""
    db = PostgresBackend(owned_pg_server.dsn, client="a", schema="jobsync")
    try:
        db.ensure_site(SITE, 16, "xxh3")
        seen: list[tuple[int, int, list[int]]] = []
        for i, restart in enumerate((owned_pg_server.restart, _crash_and_start(owned_pg_server))):
            for j in range(3):
                reg = db.register(SITE, f"n{i}-{j}", 60.0)
                _give_all(db, reg_name := f"n{i}-{j}", reg.incarnation,
                          dict.fromkeys(range(16), (reg_name, reg.incarnation)))  # fmt: skip
                assert db.deregister(SITE, reg_name, reg.incarnation)
            view = db.read_cluster(SITE)
            state = (view.site.generation, reg.incarnation, list(view.tokens.epoch))
            if seen:
                prev = seen[-1]
                assert state[0] > prev[0] and state[1] > prev[1]
                assert all(now > before for now, before in zip(state[2], prev[2], strict=True))
            seen.append(state)
            restart()
            after = _eventually(lambda: db.read_cluster(SITE))
            assert after.site.generation == state[0]
            assert list(after.tokens.epoch) == state[2]
        fresh = _eventually(lambda: db.register(SITE, "last", 60.0))
        assert fresh.incarnation > seen[-1][1]
    finally:
        db.close()


def _crash_and_start(server: OwnedPgServer) -> Callable[[], None]:
    def crash() -> None:
        server.kill()
        server.start()

    return crash


def _eventually(call: Callable[[], Any], seconds: float = 15.0) -> Any:
    """Retry ``call`` while it raises BackendUnavailable (and only that)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- round trips --------------------------------------------------------------------------
def test_a_renewed_heartbeat_is_exactly_one_round_trip_on_the_wire(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 8, "xxh3")
    a = db.register(SITE, "a", 60.0)
    conn = db._session._conn
    assert conn is not None
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        before = db.statistics()["round_trips"]
        beats = 500
        for _ in range(beats):
            assert db.heartbeat(SITE, "a", a.incarnation).outcome is HeartbeatOutcome.RENEWED
        counted = db.statistics()["round_trips"] - before
        conn.pgconn.untrace()
        trace.seek(0)
        ready = sum(1 for line in trace if "\tReadyForQuery" in line or " ReadyForQuery" in line)
    assert counted == beats
    assert ready == beats  # each ReadyForQuery ends one round trip


def test_statistics_count_the_round_trips_of_every_verb(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 8, "xxh3")
    a = db.register(SITE, "a", 60.0)
    _give_all(db, "a", a.incarnation, dict.fromkeys(range(8), ("a", a.incarnation)))
    owned = db.read_owned(SITE, "a", a.incarnation)
    before = db.statistics()
    requests = [ClaimRequest(task_key=f"k{t}", token=t, epoch=owned.epochs[t]) for t in range(8)]
    assert len(db.claim(SITE, DAY, "a", a.incarnation, requests)) == 8
    db.complete(SITE, DAY, a.incarnation, ["k1"])
    after = db.statistics()
    # a claim of many tasks is one round trip (its first preparation rides along)
    assert after["round_trips"] - before["round_trips"] == 2
    assert after["claim"] - before.get("claim", 0) == 1


# -- transactional completion -------------------------------------------------------------
def test_completion_on_the_users_connection_commits_and_rolls_back_with_it(
    pg_dsn: str, pg_schema: str, open_backend: Callable[..., PostgresBackend]
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 4, "xxh3")
    a = db.register(SITE, "a", 60.0)
    _give_all(db, "a", a.incarnation, dict.fromkeys(range(4), ("a", a.incarnation)))
    epochs = db.read_owned(SITE, "a", a.incarnation).epochs
    requests = [ClaimRequest(task_key="t1", token=0, epoch=epochs[0])]
    assert db.claim(SITE, DAY, "a", a.incarnation, requests) == {"t1"}
    effects = sql.Identifier(pg_schema, "effects")
    with psycopg.connect(pg_dsn) as mine:
        mine.execute(sql.SQL("CREATE TABLE {} (task text)").format(effects))
        mine.commit()
        mine.execute(sql.SQL("INSERT INTO {} VALUES ('t1')").format(effects))
        assert db.complete_in(mine, SITE, DAY, a.incarnation, ["t1"]) == {"t1"}
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["claimed"]  # not yet committed
        mine.rollback()
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["claimed"]
        mine.execute(sql.SQL("INSERT INTO {} VALUES ('t1')").format(effects))
        assert db.complete_in(mine, SITE, DAY, a.incarnation, ["t1"]) == {"t1"}
        mine.commit()
        assert [r.status for r in db.read_audit(SITE, DAY)] == ["done"]
        rows = mine.execute(sql.SQL("SELECT task FROM {}").format(effects)).fetchall()
        assert rows == [("t1",)]
        # a second completion finds nothing open: exactly once
        assert db.complete_in(mine, SITE, DAY, a.incarnation, ["t1"]) == frozenset()
        mine.commit()


def test_completion_refuses_other_connection_types(
    open_backend: Callable[..., PostgresBackend], tmp_path: Path
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 4, "xxh3")
    a = db.register(SITE, "a", 60.0)
    lite = sqlite3.connect(tmp_path / "x.db")
    try:
        for other in (object(), lite, "dbname=postgres"):
            with pytest.raises(InvalidArgument, match="psycopg"):
                db.complete_in(other, SITE, DAY, a.incarnation, ["t1"])
    finally:
        lite.close()


# -- NOTIFY ------------------------------------------------------------------------------------
def test_a_change_wakes_a_waiter_in_another_handle(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    waiter, writer = open_backend("waiter"), open_backend("writer")
    writer.ensure_site(SITE, 4, "xxh3")
    assert waiter.wait_for_change(SITE, 0) is False  # first touch: nothing yet
    woke: list[tuple[bool, float]] = []

    def wait() -> None:
        start = time.monotonic()
        woke.append((waiter.wait_for_change(SITE, 10.0), time.monotonic() - start))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.2)
    writer.register(SITE, "a", 60.0)
    thread.join(timeout=15)
    assert woke and woke[0][0] is True and woke[0][1] < 2.0
    assert waiter.wait_for_change(SITE, 0.05) is False  # edge-triggered: consumed


def test_a_user_call_on_the_waiting_handle_does_not_lose_the_wake(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    """A notification read by another thread's statement still wakes the waiter."""
    waiter, writer = open_backend("waiter"), open_backend("writer")
    writer.ensure_site(SITE, 4, "xxh3")
    waiter.wait_for_change(SITE, 0)
    woke: list[bool] = []
    thread = threading.Thread(target=lambda: woke.append(waiter.wait_for_change(SITE, 10.0)))
    thread.start()
    time.sleep(0.1)
    writer.register(SITE, "a", 60.0)
    for _ in range(20):  # the waiting handle keeps running statements on another thread
        waiter.now()
    thread.join(timeout=15)
    assert woke == [True]


def test_one_notification_per_plan_never_one_per_token(
    pg_dsn: str, pg_schema: str, open_backend: Callable[..., PostgresBackend]
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 200, "xxh3")
    a = db.register(SITE, "a", 60.0)
    channel = schema_module.channel_name(pg_schema, "sync_", SITE)
    with psycopg.connect(pg_dsn, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        _give_all(db, "a", a.incarnation, dict.fromkeys(range(200), ("a", a.incarnation)))
        got = list(listener.notifies(timeout=0.5))
    assert len(got) == 1


# -- connection loss --------------------------------------------------------------------------
def test_a_dead_server_is_backend_unavailable_never_a_driver_error(
    owned_pg_server: OwnedPgServer,
) -> None:
    db = PostgresBackend(owned_pg_server.dsn, client="a", schema="jobsync", connect_timeout=2)
    try:
        db.ensure_site(SITE, 4, "xxh3")
        reg = db.register(SITE, "a", 60.0)
        owned_pg_server.stop()
        for call in (
            lambda: db.heartbeat(SITE, "a", reg.incarnation),
            lambda: db.read_cluster(SITE),
            lambda: db.wait_for_change(SITE, 0.1),
            db.now,
        ):
            with pytest.raises(BackendUnavailable) as caught:
                call()
            cause = caught.value.__cause__
            assert cause is None or isinstance(cause, psycopg.Error)
        with pytest.raises(BackendUnavailable):
            PostgresBackend(owned_pg_server.dsn, schema="jobsync", connect_timeout=1)
        owned_pg_server.start()
        beat = _eventually(lambda: db.heartbeat(SITE, "a", reg.incarnation))
        assert beat.outcome is HeartbeatOutcome.RENEWED
    finally:
        db.close()


def test_reconnects_after_its_session_is_terminated(
    pg_dsn: str, open_backend: Callable[..., PostgresBackend]
) -> None:
    db, writer = open_backend("victim"), open_backend("writer")
    db.ensure_site(SITE, 4, "xxh3")
    reg = db.register(SITE, "a", 60.0)
    db.wait_for_change(SITE, 0)
    pid = db._session._conn.info.backend_pid  # type: ignore[union-attr]
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(100):
            if (
                admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
                is None
            ):
                break
            time.sleep(0.02)
    connects = db.statistics()["connects"]
    failures = 0
    for _ in range(5):
        try:
            beat = db.heartbeat(SITE, "a", reg.incarnation)
            break
        except BackendUnavailable as exc:  # allowed once, never a driver error
            assert isinstance(exc.__cause__, psycopg.Error)
            failures += 1
    assert beat.outcome is HeartbeatOutcome.RENEWED and failures <= 1
    assert db.statistics()["connects"] == connects + 1
    # the new session LISTENs again: a change still wakes it
    assert db.wait_for_change(SITE, 0) is True  # notifications may have been lost: say so
    writer.register(SITE, "b", 60.0)
    assert db.wait_for_change(SITE, 5.0) is True


def test_the_session_carries_the_application_name_and_keepalives(
    pg_dsn: str, open_backend: Callable[..., PostgresBackend]
) -> None:
    db = open_backend("worker-07")
    named = open_backend("x", application_name="custom-app")
    for handle, expected in ((db, "worker-07"), (named, "custom-app")):
        conn = handle._session._conn
        assert conn is not None
        params = conn.info.get_parameters()
        assert conn.info.parameter_status("application_name") == expected
        assert params.get("keepalives_idle") == "10"


def test_closed_handles_are_unavailable(open_backend: Callable[..., PostgresBackend]) -> None:
    db = open_backend()
    db.ensure_site(SITE, 4, "xxh3")
    db.close()
    with pytest.raises(BackendUnavailable):
        db.site_info(SITE)
    with pytest.raises(BackendUnavailable):
        db.wait_for_change(SITE, 0.1)
    db.close()


# -- lost replies: registration by process ---------------------------------------------------
def test_registering_again_from_the_same_process_adds_no_fence(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 4, "xxh3")
    leader = db.register(SITE, "leader", 600.0, process="pl")
    first = db.register(SITE, "b", 600.0, process="pb")
    _give_all(db, "leader", leader.incarnation, {0: ("b", first.incarnation)})
    # the first reply was lost: the process registers again, knowing no incarnation
    second = db.register(SITE, "b", 600.0, process="pb")
    assert second.incarnation > first.incarnation and second.fence_until == 0.0
    _, nodes = db.read_nodes(SITE)
    row = next(n for n in nodes if n.name == "b")
    assert (row.incarnation, row.process, row.fence_until) == (second.incarnation, "pb", 0.0)
    assert db.read_cluster(SITE).nodes[1].process == "pb"
    assert db.heartbeat(SITE, "b", first.incarnation).outcome is HeartbeatOutcome.SUPERSEDED
    # the lost incarnation's token may move at once: its own process holds the name
    _give_all(db, "leader", leader.incarnation, {0: ("b", second.incarnation)})
    # another process taking the name over fences the live incarnation's lease
    third = db.register(SITE, "b", 600.0, process="other")
    assert third.fence_until == pytest.approx(second.registered_at + 600.0, abs=1e-3)
    # and an empty identity is never the same process, itself included
    c1 = db.register(SITE, "c", 600.0)
    c2 = db.register(SITE, "c", 600.0)
    assert c2.fence_until == pytest.approx(c1.registered_at + 600.0, abs=1e-3)


def test_a_late_registration_of_an_older_process_is_refused_and_writes_nothing(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 4, "xxh3")
    old = db.register(SITE, "b", 60.0, process="p1")
    new = db.register(SITE, "b", 60.0, process="p2")
    before = (db.read_nodes(SITE)[1], db.site_info(SITE))
    with pytest.raises(NodeNameConflict) as caught:
        db.register(SITE, "b", 60.0, process="p1", known=old.incarnation)
    message = str(caught.value)
    assert "'b'" in message and str(old.incarnation) in message and str(new.incarnation) in message
    assert (db.read_nodes(SITE)[1], db.site_info(SITE)) == before
    assert db.heartbeat(SITE, "b", new.incarnation).outcome is HeartbeatOutcome.RENEWED
    # no incarnation was used up either
    assert db.register(SITE, "z", 60.0).incarnation == new.incarnation + 1
    # the newer process itself, knowing an older incarnation, may take its own row
    # over: its own incarnation adds no fence (the stored one, over p1's, stays)
    again = db.register(SITE, "b", 60.0, process="p2", known=old.incarnation)
    assert again.fence_until == pytest.approx(new.fence_until, abs=1e-6)
    with pytest.raises(InvalidArgument, match="known"):
        db.register(SITE, "b", 60.0, process="p2", known=-1)
    with pytest.raises(InvalidArgument, match="process"):
        db.register(SITE, "b", 60.0, process="x\x00")


def test_deregistering_a_row_that_fences_an_older_live_incarnation_keeps_the_fence(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 4, "xxh3")
    leader = db.register(SITE, "leader", 600.0, process="pl")
    old = db.register(SITE, "b", 1.0, process="pa")
    _give_all(db, "leader", leader.incarnation, dict.fromkeys(range(4), ("b", old.incarnation)))
    new = db.register(SITE, "b", 600.0, process="pb")
    assert new.fence_until == pytest.approx(old.registered_at + 1.0, abs=1e-3)
    counter = db.site_info(SITE).change_counter  # type: ignore[union-attr]
    assert db.deregister(SITE, "b", new.incarnation) is True
    assert db.site_info(SITE).change_counter > counter  # type: ignore[union-attr]
    _, nodes = db.read_nodes(SITE)
    row = next(n for n in nodes if n.name == "b")
    assert (row.incarnation, row.state, row.process) == (new.incarnation, "dead", "pb")
    assert row.fence_until == pytest.approx(new.fence_until, abs=1e-6)
    assert db.heartbeat(SITE, "b", old.incarnation).outcome is HeartbeatOutcome.SUPERSEDED
    assert db.heartbeat(SITE, "b", new.incarnation).outcome is HeartbeatOutcome.EXPIRED
    view = db.read_cluster(SITE)
    assert set(view.tokens.incarnation) == {old.incarnation}
    with pytest.raises(ConflictError):
        _give_all(db, "leader", leader.incarnation, {0: ("leader", leader.incarnation)})
    assert db.read_cluster(SITE).tokens == view.tokens
    # a repeat (its first reply lost) writes nothing
    before = (db.read_nodes(SITE)[1], db.site_info(SITE))
    assert db.deregister(SITE, "b", new.incarnation) is False
    assert (db.read_nodes(SITE)[1], db.site_info(SITE)) == before
    wait_by_polling(db, new.fence_until)
    _give_all(db, "leader", leader.incarnation, {0: ("leader", leader.incarnation)})
    assert db.read_cluster(SITE).tokens.owner[0] == "leader"


# -- migrations ----------------------------------------------------------------------------------
def migrate_to(version: int, dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create the schema as the library of ``version`` did (its migrations only)."""
    monkeypatch.setattr(schema_module, "MIGRATIONS", schema_module.MIGRATIONS[:version])
    monkeypatch.setattr(schema_module, "SCHEMA_VERSION", version)
    assert migrate(dsn, schema=schema) == {"from": 0, "to": version}
    monkeypatch.undo()


def old_site_rows(
    conn: psycopg.Connection[Any], schema: str, site: str
) -> Callable[[str], sql.Identifier]:
    """Insert a site of 4 unowned tokens as an older library would have (plain SQL);
    return how to name the schema's tables for more rows."""

    def table(name: str) -> sql.Identifier:
        return sql.Identifier(schema, f"sync_{name}")

    conn.execute(
        sql.SQL("INSERT INTO {} (site, total_tokens, hash_function) VALUES (%s, 4, 'xxh3')").format(
            table("site")
        ),
        (site,),
    )
    conn.execute(
        sql.SQL("INSERT INTO {} (site, token_id) SELECT %s, g FROM generate_series(0, 3) g").format(
            table("token")
        ),
        (site,),
    )
    return table


def test_a_version_1_schema_is_migrated_keeping_its_rows(
    pg_dsn: str,
    pg_schema: str,
    open_backend: Callable[..., PostgresBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    migrate_to(1, pg_dsn, pg_schema, monkeypatch)
    with psycopg.connect(pg_dsn) as conn:  # a version-1 deployment's rows
        table = old_site_rows(conn, pg_schema, SITE)
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (site, name, created_on, last_heartbeat, lease_timeout, "
                "incarnation, state) VALUES (%s, 'old', now(), now(), 600, 7, 'active')"
            ).format(table("node")),
            (SITE,),
        )
    with pytest.raises(SchemaError, match="version 1"):
        PostgresBackend(pg_dsn, schema=pg_schema, migrate=False)
    assert migrate(pg_dsn, schema=pg_schema) == {"from": 1, "to": schema_module.SCHEMA_VERSION}
    db = open_backend("a", migrate=False)
    _, nodes = db.read_nodes(SITE)
    assert [(n.name, n.incarnation, n.process) for n in nodes] == [("old", 7, "")]
    # version 3: the old row has the default capacity and no drain
    assert (nodes[0].capacity, nodes[0].drained_at, nodes[0].drain_note) == (1.0, None, "")
    assert db.heartbeat(SITE, "old", 7).outcome is HeartbeatOutcome.RENEWED
    reg = db.register(SITE, "old", 60.0, process="p")
    assert reg.fence_until > 0  # the version-1 row's process ('') is never the caller's
    assert db.read_nodes(SITE)[1][0].process == "p"


# -- prune ---------------------------------------------------------------------------------------
def test_prune_refuses_ages_under_a_day_naming_the_value(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    db = open_backend("a")
    db.ensure_site(SITE, 4, "xxh3")
    a = db.register(SITE, "a", 60.0)
    _give_all(db, "a", a.incarnation, {0: ("a", a.incarnation)})
    epoch = db.read_owned(SITE, "a", a.incarnation).epochs[0]
    assert db.claim(
        SITE, DAY, "a", a.incarnation, [ClaimRequest(task_key="k", token=0, epoch=epoch)]
    ) == {"k"}
    assert db.complete(SITE, DAY, a.incarnation, ["k"]) == {"k"}
    for bad in (0, 1, 3600, 86_399.5):
        with pytest.raises(InvalidArgument) as caught:
            db.prune(SITE, bad)
        assert repr(bad) in str(caught.value)
    assert [r.status for r in db.read_audit(SITE, DAY)] == ["done"]
    assert db.prune(SITE, 86_400) == {"audit": 0, "history": 0}
