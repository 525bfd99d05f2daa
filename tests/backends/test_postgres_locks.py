"""Lock waits on PostgreSQL: no verb waits on a user's open transaction, and no
verb keeps a lock on another node's row beyond one statement.

base.py, "Lock waits are bounded".  The usual holder of a lock jobsync must
not wait on is a user's transaction that completed a task with
``complete_in(connection, ...)`` and is still open (perhaps paused).  Handles whose
promptness is measured get a long lock timeout (``PATIENT``), so that a wait
would show as a slow answer or a LockTimeout rather than pass unnoticed.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import attrs
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from jobsync.backends.base import (
    DEAD_NODE_RETENTION,
    NODE_DEAD,
    ClaimRequest,
    DirectAssign,
    HeartbeatOutcome,
    PlanCommit,
    Reaped,
    Registration,
    Revoke,
)
from jobsync.backends.postgres import PostgresBackend
from jobsync.backends.url import open_backend as open_url
from jobsync.core.errors import BackendUnavailable, InvalidArgument, LockTimeout
from jobsync.testing.backend_contract import wait_by_polling

pytestmark = pytest.mark.postgres

SITE = "site"
DAY = datetime.date(2024, 3, 1)
TOKENS = 4
PATIENT = 5.0
"""Lock timeout (seconds) of handles whose promptness is measured."""
PROMPT = 1.0
"""An answer this fast did not wait for a PATIENT lock timeout."""
RENEWED = HeartbeatOutcome.RENEWED


@pytest.fixture
def open_backend(pg_dsn: str, pg_schema: str) -> Iterator[Callable[..., PostgresBackend]]:
    """``open_backend(client, **kwargs)``: handles on this test's schema, closed afterwards."""
    handles: list[PostgresBackend] = []

    def make(client: str = "test", **kwargs: Any) -> PostgresBackend:
        kwargs.setdefault("lock_timeout", PATIENT)
        handle = PostgresBackend(pg_dsn, client=client, schema=pg_schema, **kwargs)
        handles.append(handle)
        return handle

    yield make
    for handle in handles:
        handle.close()


def _give(
    db: PostgresBackend, leader: Registration, to: dict[int, tuple[str | None, int | None]]
) -> int:
    """DirectAssign tokens (token -> (owner, incarnation)) away from their current holders."""
    view = db.read_cluster(SITE)
    assigns = tuple(
        DirectAssign(
            token=t,
            expected_incarnation=view.tokens.incarnation[t],
            expected_epoch=view.tokens.epoch[t],
            owner=owner,
            incarnation=inc,
        )
        for t, (owner, inc) in to.items()
    )
    return db.commit_plan(SITE, _plan(leader, view, assigns=assigns))


def _plan(leader: Registration, view: Any, **writes: Any) -> PlanCommit:
    return PlanCommit(
        leader="leader",
        leader_incarnation=leader.incarnation,
        expected_generation=view.site.generation,
        basis=view.site.change_counter,
        **writes,
    )


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def _claim(db: PostgresBackend, name: str, reg: Registration, keys: dict[str, int]) -> Any:
    """Claim task keys (key -> token) at the epochs this incarnation holds."""
    owned = db.read_owned(SITE, name, reg.incarnation)
    epochs = dict(zip(owned.tokens, owned.epochs, strict=True))
    requests = [ClaimRequest(task_key=k, token=t, epoch=epochs.get(t, 0)) for k, t in keys.items()]
    return db.claim(SITE, DAY, name, reg.incarnation, requests)


# -- a user's open transaction holds a claim row -------------------------------------------
@attrs.define
class Held:
    """Worker "a" claimed k1 (token 0) and k2 (token 1); ``user``'s open transaction
    completed k1, so the k1 claim row is locked until it commits or rolls back."""

    db: PostgresBackend
    leader: Registration
    a: Registration
    user: psycopg.Connection[Any]

    def open_claims(self, inc: int | None = None) -> frozenset[str]:
        inc = self.a.incarnation if inc is None else inc
        return self.db.open_claims(SITE, DAY, inc, ["k1", "k2", "k3"])


@pytest.fixture
def held(open_backend: Callable[..., PostgresBackend], pg_dsn: str) -> Iterator[Held]:
    db = open_backend("admin")
    db.ensure_site(SITE, TOKENS, "xxh3")
    leader = db.register(SITE, "leader", 600.0, process="pl")
    a = db.register(SITE, "a", 600.0, process="pa")
    _give(db, leader, dict.fromkeys(range(TOKENS), ("a", a.incarnation)))
    assert _claim(db, "a", a, {"k1": 0, "k2": 1}) == {"k1", "k2"}
    user = psycopg.connect(pg_dsn)  # not autocommit: the completion opens a transaction
    # Should a verb wait on this transaction after all, the server ends it in time
    # for the test to fail rather than hang.
    user.execute("SET idle_in_transaction_session_timeout = '20s'")
    user.commit()
    try:
        assert db.complete_in(user, SITE, DAY, a.incarnation, ["k1"]) == {"k1"}
        yield Held(db=db, leader=leader, a=a, user=user)
    finally:
        user.rollback()
        user.close()


def test_a_claim_returns_promptly_without_a_task_completed_in_an_open_transaction(
    held: Held, open_backend: Callable[..., PostgresBackend]
) -> None:
    db = held.db
    # The same process registers again (its first reply lost, say): no fence,
    # so the old incarnation's tokens may move to the new one at once.
    a2 = db.register(SITE, "a", 600.0, process="pa")
    assert a2.fence_until == 0.0
    _give(db, held.leader, {0: ("a", a2.incarnation), 1: ("a", a2.incarnation)})
    claimer = open_backend("a2")
    claimed, took = _timed(lambda: _claim(claimer, "a", a2, {"k1": 0, "k2": 1, "k3": 1}))
    assert claimed == {"k2", "k3"}  # k2 was released by the plan; k1 is still a's claim
    assert took < PROMPT
    assert (held.open_claims(), held.open_claims(a2.incarnation)) == ({"k1"}, {"k2", "k3"})
    held.user.commit()
    assert {r.task_key: r.status for r in db.read_audit(SITE, DAY)} == {
        "k1": "done",
        "k2": "claimed",
        "k3": "claimed",
    }
    assert _claim(claimer, "a", a2, {"k1": 0}) == frozenset()  # done: never again


def test_a_plans_direct_assign_skips_the_locked_claim_row_and_commits(held: Held) -> None:
    db = held.db
    a2 = db.register(SITE, "a", 600.0, process="pa")
    gen, took = _timed(
        lambda: _give(db, held.leader, dict.fromkeys(range(TOKENS), ("a", a2.incarnation)))
    )
    assert took < PROMPT and db.site_info(SITE).generation == gen  # type: ignore[union-attr]
    assert held.open_claims() == {"k1"}  # k2 released, k1 skipped (locked)
    held.user.rollback()  # the completion is undone: k1 is an open claim of a gone incarnation
    assert db.reap_claims(SITE).released == 1
    assert held.open_claims() == frozenset()


def test_release_without_a_connection_raises_lock_timeout_and_writes_nothing(
    held: Held, open_backend: Callable[..., PostgresBackend]
) -> None:
    impatient = open_backend("impatient", lock_timeout=0.3)
    with pytest.raises(LockTimeout) as caught:
        _timed(lambda: impatient.release(SITE, DAY, held.a.incarnation, ["k2", "k1"]))
    assert isinstance(caught.value, BackendUnavailable)
    message = str(caught.value)
    assert "release" in message and "locked by another transaction" in message
    start = time.monotonic()
    with pytest.raises(LockTimeout):
        impatient.release(SITE, DAY, held.a.incarnation, ["k1"])
    assert 0.25 <= time.monotonic() - start < 0.3 + PROMPT
    assert held.open_claims() == {"k1", "k2"}  # k2 too: the statement wrote nothing
    # the handle is still usable afterwards
    assert impatient.heartbeat(SITE, "a", held.a.incarnation).outcome is RENEWED
    held.user.rollback()
    assert impatient.release(SITE, DAY, held.a.incarnation, ["k1", "k2"]) == {"k1", "k2"}


def test_release_on_the_users_connection_runs_in_its_transaction(held: Held) -> None:
    db, inc = held.db, held.a.incarnation
    assert db.release_in(held.user, SITE, DAY, inc, ["k2"]) == {"k2"}
    # Not committed yet: the committed state still has both, read without waiting.
    seen, took = _timed(held.open_claims)
    assert seen == {"k1", "k2"} and took < PROMPT
    held.user.commit()
    assert held.open_claims() == frozenset()
    assert {r.task_key: r.status for r in db.read_audit(SITE, DAY)} == {"k1": "done"}
    # and it rolls back with the caller's transaction
    assert _claim(db, "a", held.a, {"k3": 2}) == {"k3"}
    assert db.release_in(held.user, SITE, DAY, inc, ["k3"]) == {"k3"}
    held.user.rollback()
    assert held.open_claims() == {"k3"}


def test_release_refuses_a_connection_that_would_commit_on_its_own(held: Held, pg_dsn: str) -> None:
    with (
        psycopg.connect(pg_dsn, autocommit=True) as auto,
        pytest.raises(InvalidArgument, match="release"),
    ):
        held.db.release_in(auto, SITE, DAY, held.a.incarnation, ["k2"])
    with pytest.raises(InvalidArgument, match="psycopg"):
        held.db.release_in(object(), SITE, DAY, held.a.incarnation, ["k2"])
    assert held.open_claims() == {"k1", "k2"}


def test_reap_claims_skips_the_locked_claim_row(held: Held) -> None:
    db = held.db
    db.register(SITE, "a", 600.0, process="pa")  # a's incarnation is over (no fence)
    reaped, took = _timed(lambda: db.reap_claims(SITE))
    assert reaped.released == 1 and took < PROMPT  # k2; k1 skipped
    assert held.open_claims() == {"k1"}
    held.user.rollback()
    assert db.reap_claims(SITE).released == 1
    assert held.open_claims() == frozenset()


def test_reap_claims_says_what_it_skipped(held: Held) -> None:
    """The leader keeps reaping while a reap skips claims of an ended incarnation (a
    dead worker's transaction still open on the server): the reap says so."""
    db = held.db
    db.register(SITE, "a", 600.0, process="pa")  # a's incarnation is over (no fence)
    assert db.reap_claims(SITE) == Reaped(released=1, skipped=1)  # k2; k1 locked
    assert db.reap_claims(SITE) == Reaped(released=0, skipped=1)  # still locked
    held.user.rollback()
    assert db.reap_claims(SITE) == Reaped(released=1, skipped=0)
    assert db.reap_claims(SITE) == Reaped(released=0, skipped=0)
    assert held.open_claims() == frozenset()


def test_deregister_skips_the_locked_claim_row(held: Held) -> None:
    db = held.db
    done, took = _timed(lambda: db.deregister(SITE, "a", held.a.incarnation))
    assert done is True and took < PROMPT
    assert held.open_claims() == {"k1"}
    view = db.read_cluster(SITE)
    assert set(view.tokens.owner) == {None}
    # the row stays, dead, while a claim of its incarnation is left open
    row = next(n for n in view.nodes if n.name == "a")
    assert (row.incarnation, row.state) == (held.a.incarnation, NODE_DEAD)
    assert db.heartbeat(SITE, "a", held.a.incarnation).outcome is HeartbeatOutcome.EXPIRED
    held.user.rollback()
    assert db.reap_claims(SITE).released == 1
    assert held.open_claims() == frozenset()


def test_a_completion_without_a_connection_also_gives_up_after_the_lock_timeout(
    held: Held, open_backend: Callable[..., PostgresBackend]
) -> None:
    impatient = open_backend("impatient", lock_timeout=0.2)
    with pytest.raises(LockTimeout, match="complete"):
        impatient.complete(SITE, DAY, held.a.incarnation, ["k1"])
    assert impatient.complete(SITE, DAY, held.a.incarnation, ["k2"]) == {"k2"}


# -- no lock on another node's row beyond one statement ------------------------------------
def _locked_node_rows(dsn: str, schema: str) -> set[str]:
    """The names whose node rows some transaction holds locked right now."""
    table = sql.Identifier(schema, "sync_node")
    with psycopg.connect(dsn) as probe:
        every = {r[0] for r in probe.execute(sql.SQL("SELECT name FROM {}").format(table))}
        free = probe.execute(sql.SQL("SELECT name FROM {} FOR UPDATE SKIP LOCKED").format(table))
        unlocked = {r[0] for r in free}
        probe.rollback()
    return every - unlocked


@contextlib.contextmanager
def _held_open_before_commit(
    db: PostgresBackend, call: Callable[[], Any]
) -> Iterator[dict[str, Any]]:
    """Run ``call`` on a thread; a transaction it commits is held open just before
    its COMMIT for the duration of the block.  Yields ``{"paused": bool}``, and
    ``"value"`` or ``"error"`` once the call is over."""
    session = db._session
    original = session.execute
    paused, resume = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {"paused": False}

    def execute(query: bytes, params: Any = None, **kwargs: Any) -> Any:
        if query == b"COMMIT":
            paused.set()
            resume.wait(30)
        return original(query, params, **kwargs)

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:
            outcome["error"] = exc

    session.execute = execute  # type: ignore[method-assign]
    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not paused.is_set() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.002)
        outcome["paused"] = paused.is_set()
        yield outcome
    finally:
        resume.set()
        thread.join(30)
        del session.execute
    assert not thread.is_alive()


@attrs.define
class Nodes:
    """A leader, a live worker ``y`` and a worker ``x`` whose short lease has run out."""

    db: PostgresBackend
    leader: Registration
    x: Registration
    y: Registration


@pytest.fixture
def nodes(open_backend: Callable[..., PostgresBackend]) -> Nodes:
    db = open_backend("admin")
    db.ensure_site(SITE, TOKENS, "xxh3")
    leader = db.register(SITE, "leader", 600.0, process="pl")
    y = db.register(SITE, "y", 600.0, process="py")
    x = db.register(SITE, "x", 0.3, process="px")
    _give(db, leader, {0: ("x", x.incarnation), 1: ("x", x.incarnation)})
    _give(db, leader, {2: ("y", y.incarnation), 3: ("y", y.incarnation)})
    assert _claim(db, "x", x, {"kx": 0}) == {"kx"}
    assert _claim(db, "y", y, {"ky": 2}) == {"ky"}
    wait_by_polling(db, x.registered_at + 0.3)
    return Nodes(db=db, leader=leader, x=x, y=y)


def _beats_promptly(db: PostgresBackend, *regs: tuple[str, Registration]) -> None:
    for name, reg in regs:
        beat, took = _timed(lambda n=name, r=reg: db.heartbeat(SITE, n, r.incarnation))
        assert beat.outcome is RENEWED and took < PROMPT, (name, took)


def test_a_plan_holds_no_lock_on_a_node_row_across_its_statements(
    nodes: Nodes, open_backend: Callable[..., PostgresBackend], pg_dsn: str, pg_schema: str
) -> None:
    committer, beater = open_backend("committer"), open_backend("beater")
    view = nodes.db.read_cluster(SITE)
    assigns = tuple(
        DirectAssign(
            token=t,
            expected_incarnation=nodes.x.incarnation,
            expected_epoch=view.tokens.epoch[t],
            owner="leader",
            incarnation=nodes.leader.incarnation,
        )
        for t in (0, 1)
    )
    plan = _plan(nodes.leader, view, assigns=assigns)
    with _held_open_before_commit(committer, lambda: committer.commit_plan(SITE, plan)) as run:
        assert run["paused"], run  # inside the plan's transaction, all its statements run
        assert _locked_node_rows(pg_dsn, pg_schema) == set()
        _beats_promptly(beater, ("y", nodes.y), ("leader", nodes.leader))
    assert run.get("value") == view.site.generation + 1, run
    after = nodes.db.read_cluster(SITE)
    assert after.tokens.owner[:2] == ("leader", "leader")
    assert next(n for n in after.nodes if n.name == "x").state == NODE_DEAD
    assert nodes.db.open_claims(SITE, DAY, nodes.x.incarnation, ["kx"]) == frozenset()


def test_a_plan_taking_an_expired_releasers_token_holds_no_lock_on_a_node_row(
    nodes: Nodes, open_backend: Callable[..., PostgresBackend], pg_dsn: str, pg_schema: str
) -> None:
    """The leader's DirectAssign of a token whose releaser's lease ran out, while a
    live worker with a pending release of its own keeps beating."""
    db = nodes.db
    view = db.read_cluster(SITE)
    revokes = tuple(
        Revoke(
            token=t,
            expected_incarnation=inc,
            expected_epoch=view.tokens.epoch[t],
            destination="leader",
        )
        for t, inc in ((0, nodes.x.incarnation), (2, nodes.y.incarnation))
    )
    db.commit_plan(SITE, _plan(nodes.leader, view, revokes=revokes, ack_timeout=600.0))
    view = db.read_cluster(SITE)
    assign = DirectAssign(
        token=0,
        expected_incarnation=nodes.x.incarnation,
        expected_epoch=view.tokens.epoch[0],
        owner="leader",
        incarnation=nodes.leader.incarnation,
    )
    plan = _plan(nodes.leader, view, assigns=(assign,))
    committer, beater = open_backend("committer"), open_backend("beater")
    with _held_open_before_commit(committer, lambda: committer.commit_plan(SITE, plan)) as run:
        assert run["paused"], run
        assert _locked_node_rows(pg_dsn, pg_schema) == set()
        _beats_promptly(beater, ("y", nodes.y))  # y has a pending release too: still live
    assert run.get("value") == view.site.generation + 1, run
    table = db.read_cluster(SITE).tokens
    assert (table.owner[0], table.is_pending(2)) == ("leader", True)


def test_reap_claims_holds_no_lock_on_a_live_node_row(
    nodes: Nodes, open_backend: Callable[..., PostgresBackend], pg_dsn: str, pg_schema: str
) -> None:
    reaper, beater = open_backend("reaper"), open_backend("beater")
    with _held_open_before_commit(reaper, lambda: reaper.reap_claims(SITE)) as run:
        assert _locked_node_rows(pg_dsn, pg_schema) == set()
        _beats_promptly(beater, ("y", nodes.y))
    assert run.get("value") == Reaped(released=1, skipped=0), run  # kx; ky is a live worker's
    assert not run["paused"]  # one statement in autocommit: nothing to hold open
    # Even inside the statement's own transaction (held open here by the test), the
    # live claimer's row is not locked: only claimers whose lease ran out are.
    z = nodes.db.register(SITE, "z", 0.3, process="pz")
    _give(nodes.db, nodes.leader, {1: ("z", z.incarnation)})
    assert _claim(nodes.db, "z", z, {"kz": 1}) == {"kz"}
    wait_by_polling(nodes.db, z.registered_at + 0.3)
    with psycopg.connect(pg_dsn) as held:
        params = {"site": SITE, "retention": DEAD_NODE_RETENTION}
        row = held.execute(reaper._q["REAP"], params).fetchone()
        assert row is not None and row[1] == 1  # kz
        assert _locked_node_rows(pg_dsn, pg_schema) <= {"z"}
        _beats_promptly(beater, ("y", nodes.y), ("leader", nodes.leader))
        held.rollback()


def test_a_heartbeat_racing_reap_claims_of_its_own_claim_never_both_succeed(
    open_backend: Callable[..., PostgresBackend],
) -> None:
    """reap_claims judges and marks expiry in one statement; a renewal in time wins."""
    lease = 0.1
    admin = open_backend("admin")
    admin.ensure_site(SITE, TOKENS, "xxh3")
    leader = admin.register(SITE, "leader", 600.0)
    beater, reaper = open_backend("beater"), open_backend("reaper")
    rng = random.Random(4321)
    outcomes: dict[tuple[bool, bool], int] = {}
    for round_ in range(32):
        name, key = f"x{round_}", f"k{round_}"
        x = admin.register(SITE, name, lease)
        _give(admin, leader, {0: (name, x.incarnation)})
        assert _claim(admin, name, x, {key: 0}) == {key}
        spread = 0.004 if round_ % 4 else 0.03
        target = x.registered_at + lease + rng.uniform(-spread, spread)
        while time.time() < target - 0.002:
            time.sleep(0.0005)
        results = _race(
            lambda: beater.heartbeat(SITE, name, x.incarnation).outcome is RENEWED,
            lambda: reaper.reap_claims(SITE).released > 0,
        )
        assert not any(isinstance(r, Exception) for r in results), results
        renewed, reaped = results
        assert not (renewed and reaped), f"round {round_}: both the heartbeat and the reap won"
        still_open = admin.open_claims(SITE, DAY, x.incarnation, [key]) == {key}
        assert still_open is not reaped
        outcomes[(renewed, reaped)] = outcomes.get((renewed, reaped), 0) + 1
        time.sleep(lease + 0.01)  # x, if it renewed, expires before the next round
        admin.reap_claims(SITE)
    assert outcomes.get((True, False), 0) > 0 and outcomes.get((False, True), 0) > 0, outcomes


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls on threads released together; results or exceptions."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def body(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = calls[i]()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


# -- dead rows are kept for a while, then purged ---------------------------------------------
def test_reap_claims_purges_only_old_dead_rows_that_nothing_names(
    open_backend: Callable[..., PostgresBackend], pg_dsn: str, pg_schema: str
) -> None:
    db = open_backend("admin")
    db.ensure_site(SITE, TOKENS, "xxh3")
    leader = db.register(SITE, "leader", 600.0)
    regs = {name: db.register(SITE, name, 600.0) for name in ("old", "recent", "owner", "fenced")}
    _give(db, leader, {0: ("owner", regs["owner"].incarnation)})
    node = sql.Identifier(pg_schema, "sync_node")
    ago = DEAD_NODE_RETENTION + 60
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        # lease ended long ago for all but "recent" (within the retention)
        conn.execute(
            sql.SQL(
                "UPDATE {} SET state = 'dead', last_heartbeat = clock_timestamp() - "
                "(lease_timeout + %s) * interval '1 second' WHERE name <> 'leader'"
            ).format(node),
            (ago,),
        )
        conn.execute(
            sql.SQL(
                "UPDATE {} SET last_heartbeat = clock_timestamp() - lease_timeout * "
                "interval '1 second' WHERE name = 'recent'"
            ).format(node)
        )
        conn.execute(
            sql.SQL(
                "UPDATE {} SET fence_until = clock_timestamp() + interval '1 hour' "
                "WHERE name = 'fenced'"
            ).format(node)
        )
    assert db.reap_claims(SITE).released == 0
    _, rows = db.read_nodes(SITE)
    assert sorted(n.name for n in rows) == ["fenced", "leader", "owner", "recent"]


# -- the lock timeout is jobsync's session's own ---------------------------------------------
def _lock_timeout_of(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW lock_timeout").fetchone()
    assert row is not None
    return str(row[0])


def test_the_session_lock_timeout_is_500_ms_unless_configured(
    open_backend: Callable[..., PostgresBackend], pg_dsn: str, pg_schema: str
) -> None:
    default = PostgresBackend(pg_dsn, schema=pg_schema)
    try:
        assert default.lock_timeout_ms == 500
        assert _lock_timeout_of(default._session._live()) == "500ms"
    finally:
        default.close()
    assert _lock_timeout_of(open_backend(lock_timeout=0.25)._session._live()) == "250ms"
    params = {**conninfo_to_dict(pg_dsn), "jobsync_schema": pg_schema}
    url = "postgresql:///?" + urlencode({**params, "jobsync_lock_timeout": "1234"})
    handle = open_url(url, client="u")
    try:
        assert isinstance(handle, PostgresBackend)
        assert _lock_timeout_of(handle._session._live()) == "1234ms"
        handle.ensure_site(SITE, TOKENS, "xxh3")  # the option did not reach libpq
    finally:
        handle.close()


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5", "", "99999999999"])
def test_a_bad_lock_timeout_url_option_is_refused_naming_it(value: str) -> None:
    url = "postgresql://nobody@127.0.0.1:1/x?" + urlencode({"jobsync_lock_timeout": value})
    with pytest.raises(InvalidArgument, match="jobsync_lock_timeout") as caught:
        open_url(url)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", [0, -1, 0.0001, float("nan"), "1", True])
def test_a_bad_lock_timeout_argument_is_refused_before_connecting(value: Any) -> None:
    dead = "host=127.0.0.1 port=1 user=nobody connect_timeout=1"
    with pytest.raises(InvalidArgument, match="lock_timeout"):
        PostgresBackend(dead, lock_timeout=value)


def test_the_users_connection_keeps_its_own_lock_timeout(held: Held) -> None:
    before = _lock_timeout_of(held.user)
    assert held.db.complete_in(held.user, SITE, DAY, held.a.incarnation, ["k2"])
    assert held.db.release_in(held.user, SITE, DAY, held.a.incarnation, ["k2"]) == set()
    assert _lock_timeout_of(held.user) == before
