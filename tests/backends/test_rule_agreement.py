"""One rule, every backend: the same rows get the same answer from the core rule and
from each backend's verb.

The protocol's rules live once, in ``jobsync.core.rules``; memory and SQLite call
them, PostgreSQL runs their SQL form.  Here every combination of a node row's
state, how long its lease still runs (or has been over), whether a newer
incarnation of another process took the name over, and how long that fence
runs (or has been over) is written into each backend's own storage, and the
backend is asked the questions those rules answer:

- ``heartbeat``: its outcome must be ``rules.heartbeat``'s; and another
  node's heartbeat, watching the row or asking as the leader, must see it
  live exactly when ``rules.is_live`` does;
- a plan taking the holder's token directly (a DirectAssign): committed exactly
  when ``rules.lease_expired`` says the holder's lease has expired;
- ``register`` over that row by another process: the fence it sets must be
  ``rules.takeover``'s;
- ``glance`` (a non-leader's read): the leader it names must be
  ``rules.oldest_live``'s over every row, with the long-lived leader live and
  with it dead.

Times are drawn a whole second or more away from any boundary, so the few
milliseconds between a PostgreSQL statement's clock and the reading used for
the rule cannot change an answer (the boundary instants themselves are pinned
by the contract suite on the backends that can set their clock).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import attrs
import pytest

from jobsync.backends.base import Backend, DirectAssign, NodeRecord, PlanCommit
from jobsync.backends.memory import MemoryStore
from jobsync.backends.sqlite import SQLiteBackend
from jobsync.core import rules
from jobsync.core.errors import ConflictError
from jobsync.core.model import Joining
from jobsync.testing.clock import ManualClock

SITE_TOKENS = 4
LEASE = 30.0
STATES = ("active", "leaving", "dead", "evicted")


@attrs.frozen
class Shape:
    """A drawn node row, relative to the backend's now."""

    state: str
    left: float
    """Seconds its lease still runs (negative: over since)."""
    newer: bool
    """A newer incarnation of another process holds the row."""
    fence_left: float
    """Seconds the newer incarnation's fence still runs (negative: over)."""


SHAPES = [
    Shape(state=state, left=left, newer=newer, fence_left=fence)
    for state in STATES
    for left in (-20.0, -3.0, 3.0, 20.0)
    for newer in (False, True)
    for fence in ((-5.0, -2.0, 2.0, 5.0) if newer else (0.0,))
]


class Store(Protocol):
    """A backend's storage, as this test needs it."""

    def connect(self, client: str) -> Backend: ...
    def now(self) -> float: ...
    def rewrite(self, site: str, name: str, **fields: Any) -> None:
        """Overwrite columns of one node row (times as seconds since the epoch)."""
        ...


class MemoryStorage:
    def __init__(self) -> None:
        self.clock = ManualClock(1_000_000.0)
        self.store = MemoryStore(clock=self.clock)

    def connect(self, client: str) -> Backend:
        return self.store.connect(client)

    def now(self) -> float:
        return self.clock()

    def rewrite(self, site: str, name: str, **fields: Any) -> None:
        state = self.store._sites[site]
        state.nodes[name] = attrs.evolve(state.nodes[name], **fields)


class SQLiteStorage:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.clock = ManualClock(1_000_000.0)

    def connect(self, client: str) -> Backend:
        return SQLiteBackend(self.path, client=client, clock=self.clock)

    def now(self) -> float:
        return self.clock()

    def rewrite(self, site: str, name: str, **fields: Any) -> None:
        sets = ", ".join(f"{column} = ?" for column in fields)
        with sqlite3.connect(self.path, isolation_level=None) as conn:
            conn.execute(
                f"UPDATE sync_node SET {sets} WHERE site = ? AND name = ?",
                (*fields.values(), site, name),
            )


class PostgresStorage:
    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self._clock: Backend | None = None

    def connect(self, client: str) -> Backend:
        from jobsync.backends.postgres import PostgresBackend

        return PostgresBackend(self.dsn, client=client, schema=self.schema)

    def now(self) -> float:
        if self._clock is None:
            self._clock = self.connect("clock")
        return self._clock.now()

    def rewrite(self, site: str, name: str, **fields: Any) -> None:
        import psycopg

        times = {"last_heartbeat", "fence_until"}
        sets = ", ".join(
            f"{column} = to_timestamp(%s)" if column in times else f"{column} = %s"
            for column in fields
        )
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{self.schema}".sync_node SET {sets} WHERE site = %s AND name = %s',
                (*fields.values(), site, name),
            )


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStorage()
    elif request.param == "sqlite":
        yield SQLiteStorage(tmp_path / "agree.db")
    else:
        dsn = request.getfixturevalue("pg_dsn")
        yield PostgresStorage(dsn, request.getfixturevalue("pg_schema"))


def _scene(storage: Store, shape: Shape) -> tuple[Backend, str, int, int]:
    """A fresh site: a long-lived leader, and holder ``h`` owning token 0, then the
    holder's row rewritten to ``shape``.  Returns (leader handle, site, leader inc, h inc)."""
    site = f"agree-{uuid.uuid4().hex[:10]}"
    db = storage.connect("leader")
    db.ensure_site(site, SITE_TOKENS, "xxh3")
    leader = db.register(site, "a", 3600.0, process="pl")
    holder = db.register(site, "h", LEASE, process="ph")
    view = db.read_cluster(site)
    assign = DirectAssign(
        token=0, expected_incarnation=None, expected_epoch=view.tokens.epoch[0],
        owner="h", incarnation=holder.incarnation,
    )  # fmt: skip
    db.commit_plan(site, _plan(view, leader.incarnation, (assign,)))
    if shape.newer:
        db.register(site, "h", LEASE, process="other")
    now = storage.now()
    fields: dict[str, Any] = {
        "state": shape.state,
        "last_heartbeat": now + shape.left - LEASE,
    }
    if shape.newer:
        fields["fence_until"] = now + shape.fence_left
    storage.rewrite(site, "h", **fields)
    return db, site, leader.incarnation, holder.incarnation


def _plan(view: Any, leader_inc: int, assigns: tuple[DirectAssign, ...]) -> PlanCommit:
    return PlanCommit(
        leader="a",
        leader_incarnation=leader_inc,
        expected_generation=view.site.generation,
        basis=view.site.change_counter,
        assigns=assigns,
    )


def _row(db: Backend, site: str, name: str) -> tuple[float, NodeRecord | None]:
    now, nodes = db.read_nodes(site)
    return now, next((n for n in nodes if n.name == name), None)


def _disagreements(storage: Store, check: Callable[[Store, Shape], str | None]) -> list[str]:
    return [found for shape in SHAPES if (found := check(storage, shape)) is not None]


def _direct_assignment(storage: Store, shape: Shape) -> str | None:
    db, site, leader_inc, h_inc = _scene(storage, shape)
    now, row = _row(db, site, "h")
    expected = rules.lease_expired(row, h_inc, now)
    view = db.read_cluster(site)
    take = DirectAssign(
        token=0, expected_incarnation=h_inc, expected_epoch=view.tokens.epoch[0],
        owner="a", incarnation=leader_inc,
    )  # fmt: skip
    try:
        db.commit_plan(site, _plan(view, leader_inc, (take,)))
        committed = True
    except ConflictError:
        committed = False
    return None if committed == expected else f"{shape}: committed {committed}, rule {expected}"


def _heartbeat(storage: Store, shape: Shape) -> str | None:
    db, site, _, h_inc = _scene(storage, shape)
    now, row = _row(db, site, "h")
    expected, _ = rules.heartbeat(row, h_inc, now)
    got = db.heartbeat(site, "h", h_inc).outcome
    return None if got is expected else f"{shape}: {got}, rule {expected}"


def _liveness(storage: Store, shape: Shape) -> str | None:
    """The leader's heartbeat counts ``h`` live, and a heartbeat watching ``h`` gets
    its lease end, exactly when ``rules.is_live`` says it is live."""
    db, site, leader_inc, _ = _scene(storage, shape)
    now, row = _row(db, site, "h")
    expected = row is not None and rules.is_live(row, now)
    watched = db.heartbeat(site, "a", leader_inc, watch="h").watched_expiry
    lead = db.heartbeat(site, "a", leader_inc, leading=True)
    got = (watched is not None, lead.live_others == 1, lead.earliest_other_expiry is not None)
    if got != (expected,) * 3:
        return f"{shape}: watched, counted, earliest {got}, rule {expected}"
    if expected and row is not None and watched != pytest.approx(row.lease_expires):
        return f"{shape}: watched lease end {watched}, row {row.lease_expires}"
    return None


def _leadership(storage: Store, shape: Shape) -> str | None:
    """A glance names the leader ``rules.oldest_live`` names over every row: with the
    long-lived leader ``a`` live, and with it dead (``h`` leads exactly when live)."""
    db, site, _, _ = _scene(storage, shape)
    for a_state in ("active", "dead"):
        storage.rewrite(site, "a", state=a_state)
        now, rows = db.read_nodes(site)
        expected = rules.oldest_live(rows, now)
        glance = db.glance(site, "h")
        got = None if glance.leader is None else glance.leader.name
        if got != (None if expected is None else expected.name):
            return f"{shape}, a {a_state}: glance leader {got}, rule {expected}"
        if glance.own != next(r for r in rows if r.name == "h"):
            return f"{shape}: glance own row {glance.own}"
    return None


def _takeover(storage: Store, shape: Shape) -> str | None:
    db, site, _, _ = _scene(storage, shape)
    now, row = _row(db, site, "h")
    joining = Joining(site=site, name="h", lease_timeout=LEASE, process="third")
    expected = rules.takeover(row, joining, 0, now).fence_until
    got = db.register(site, "h", LEASE, process="third").fence_until
    return None if abs(got - expected) < 1e-3 else f"{shape}: fence {got}, rule {expected}"


@pytest.mark.parametrize(
    "check",
    [_direct_assignment, _heartbeat, _leadership, _liveness, _takeover],
    ids=lambda f: f.__name__.strip("_"),
)
def test_the_backend_answers_as_the_core_rule_does(
    storage: Store, check: Callable[[Store, Shape], str | None]
) -> None:
    assert _disagreements(storage, check) == []


def test_the_shapes_cover_every_class_of_holder() -> None:
    """The table reaches each answer of ``rules.holding`` (else agreement proves little)."""
    now = 1_000_000.0
    kinds = set()
    for shape in SHAPES:
        row = NodeRecord(
            name="h", incarnation=3 if shape.newer else 2, registered_at=0.0,
            last_heartbeat=now + shape.left - LEASE, lease_timeout=LEASE, state=shape.state,
            fence_until=now + shape.fence_left if shape.newer else 0.0,
        )  # fmt: skip
        kinds.add(rules.holding(row, 2, now)[0])
    assert kinds == {rules.Hold.LIVE, rules.Hold.EXPIRED, rules.Hold.WAITING}
