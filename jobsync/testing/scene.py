"""Set-ups for backend tests: one site on a harness, nodes, plans, hand-offs, claims.

A ``Scene`` is one fresh site (a unique name, so a shared PostgreSQL database
needs no cleaning) on a ``ContractHarness``, with one main handle and helpers
that keep contract tests short.  Leaders are always the first node registered
*and* the first by name ("a"), because on a controlled clock that does not
move every node registers at the same instant and the name decides.
"""

from __future__ import annotations

import datetime
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar, cast

import attrs
import pytest

from jobsync.backends.base import (
    Backend,
    ClaimRequest,
    ClusterView,
    DirectAssign,
    HeartbeatOutcome,
    HistoryEntry,
    NodeRecord,
    OwnedTokens,
    PlanCommit,
    Revoke,
    SiteInfo,
    TokenTable,
)
from jobsync.core.hashing import token_for

_T = TypeVar("_T")

LONG_LEASE = 60.0
"""A lease no test outlives."""
SHORT_LEASE = 0.5
"""A lease tests wait out (really, on backends whose clock they cannot set)."""
TOTAL_TOKENS = 12
DAY = datetime.date(2024, 1, 2)


class ContractHarness(Protocol):
    """What a backend provides to run the contract suite (see backend_contract)."""

    controls_clock: bool
    """True if ``set_time`` works (memory and SQLite take an injected clock)."""

    def connect(self, client: str) -> Backend:
        """A new handle on the shared store, as ``client``."""
        ...

    def set_time(self, instant: float) -> None:
        """Set the backend's clock; called only when ``controls_clock``."""
        ...

    def wait_until(self, instant: float) -> None:
        """Return once the backend's ``now()`` is at least ``instant``."""
        ...


def needs_clock(harness: ContractHarness) -> None:
    """Skip the calling test unless the harness can set the backend's clock."""
    if not harness.controls_clock:
        pytest.skip("needs a controllable clock")


def just_before(instant: float) -> float:
    """The largest float below ``instant``: one instant earlier."""
    return math.nextafter(instant, -math.inf)


def unique_site() -> str:
    return f"contract-{uuid.uuid4().hex[:12]}"


def run_threads(count: int, work: Callable[[int], _T]) -> list[_T]:
    """Run ``work(i)`` on ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    results: list[_T | None] = [None] * count
    errors: list[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:  # re-raised on the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if errors:
        raise errors[0]
    assert all(not thread.is_alive() for thread in threads), "a worker thread hung"
    return cast("list[_T]", results)


@attrs.frozen(kw_only=True)
class Node:
    """One registered incarnation."""

    name: str
    incarnation: int
    registered_at: float
    fence_until: float
    change_counter: int


class Scene:
    """One fresh site on a harness, and the set-ups contract tests share."""

    def __init__(
        self,
        harness: ContractHarness,
        site: str | None = None,
        *,
        total_tokens: int = TOTAL_TOKENS,
        hash_function: str = "xxh3",
    ) -> None:
        self.harness = harness
        self.site = site or unique_site()
        self.total = total_tokens
        self.hash_function = hash_function
        self._handles: list[Backend] = []
        self._nodes: dict[int, Node] = {}
        self.db = self.connect("scene")
        self.created: SiteInfo = self.db.ensure_site(self.site, total_tokens, hash_function)

    def connect(self, client: str = "other") -> Backend:
        handle = self.harness.connect(client)
        self._handles.append(handle)
        return handle

    def close(self) -> None:
        for handle in self._handles:
            handle.close()

    # -- time ------------------------------------------------------------------
    def now(self) -> float:
        return self.db.now()

    def set_time(self, instant: float) -> None:
        self.harness.set_time(instant)

    def wait_until(self, instant: float) -> None:
        self.harness.wait_until(instant)

    def expire(self, *nodes: Node) -> None:
        """Wait until each node's lease (or, if superseded, its fence) is over."""
        for node in nodes:
            row = self.row(node.name)
            if row is None:
                continue
            self.wait_until(
                row.lease_expires if row.incarnation == node.incarnation else row.fence_until
            )

    # -- reads -----------------------------------------------------------------
    def info(self) -> SiteInfo:
        info = self.db.site_info(self.site)
        assert info is not None, f"site {self.site!r} vanished"
        return info

    def counter(self) -> int:
        return self.info().change_counter

    def view(self) -> ClusterView:
        return self.db.read_cluster(self.site)

    def table(self) -> TokenTable:
        return self.view().tokens

    def row(self, name: str) -> NodeRecord | None:
        _, rows = self.db.read_nodes(self.site)
        return next((row for row in rows if row.name == name), None)

    def everything(self) -> tuple[object, ...]:
        """What a write could have changed: counters, node rows, token rows, locks, audit."""
        return (
            self.info(),
            self.db.read_nodes(self.site)[1],
            self.table(),
            self.db.list_locks(self.site),
            self.db.read_audit(self.site, DAY),
        )

    def owned(self, node: Node) -> OwnedTokens:
        return self.db.read_owned(self.site, node.name, node.incarnation)

    def tokens_of(self, node: Node) -> tuple[int, ...]:
        return self.owned(node).tokens

    # -- membership ------------------------------------------------------------
    def join(self, name: str, lease: float = LONG_LEASE) -> Node:
        reg = self.db.register(self.site, name, lease)
        node = Node(
            name=name,
            incarnation=reg.incarnation,
            registered_at=reg.registered_at,
            fence_until=reg.fence_until,
            change_counter=reg.change_counter,
        )
        self._nodes[node.incarnation] = node
        return node

    def join_all(self, *names: str, lease: float = LONG_LEASE) -> list[Node]:
        return [self.join(name, lease) for name in names]

    def heartbeat(self, node: Node, db: Backend | None = None) -> HeartbeatOutcome:
        return (db or self.db).heartbeat(self.site, node.name, node.incarnation).outcome

    # -- plans -----------------------------------------------------------------
    def assign(self, view: ClusterView, token: int, node: Node | None) -> DirectAssign:
        return DirectAssign(
            token=token,
            expected_incarnation=view.tokens.incarnation[token],
            expected_epoch=view.tokens.epoch[token],
            owner=None if node is None else node.name,
            incarnation=None if node is None else node.incarnation,
        )

    def revoke(self, view: ClusterView, token: int, destination: Node | str | None) -> Revoke:
        holder = view.tokens.incarnation[token]
        assert holder is not None, f"token {token} is unowned: nothing to revoke"
        name = destination.name if isinstance(destination, Node) else destination
        return Revoke(
            token=token,
            expected_incarnation=holder,
            expected_epoch=view.tokens.epoch[token],
            destination=name,
        )

    def commit(
        self,
        leader: Node,
        *,
        view: ClusterView | None = None,
        assigns: Iterable[DirectAssign] = (),
        revokes: Iterable[Revoke] = (),
        ack_timeout: float = LONG_LEASE,
        history: HistoryEntry | None = None,
        db: Backend | None = None,
    ) -> int:
        """Commit a plan computed from ``view`` (a fresh read if None)."""
        view = view or self.view()
        plan = PlanCommit(
            leader=leader.name,
            leader_incarnation=leader.incarnation,
            expected_generation=view.site.generation,
            basis=view.site.change_counter,
            assigns=tuple(assigns),
            revokes=tuple(revokes),
            ack_timeout=ack_timeout,
            history=history,
        )
        return (db or self.db).commit_plan(self.site, plan)

    def round_robin(
        self, leader: Node, nodes: Sequence[Node], view: ClusterView | None = None
    ) -> int:
        """DirectAssign token t to ``nodes[t % len(nodes)]`` (every row must be free to move)."""
        view = view or self.view()
        assigns = [
            self.assign(view, t, nodes[t % len(nodes)])
            for t in range(len(view.tokens))
            if view.tokens.incarnation[t] != nodes[t % len(nodes)].incarnation
        ]
        return self.commit(leader, view=view, assigns=assigns)

    def reassign(self, leader: Node, holder: Node, to: Node | None) -> int:
        """DirectAssign every token of ``holder`` (whose lease must be over) to ``to``."""
        view = self.view()
        tokens = [
            t for t in range(len(view.tokens)) if view.tokens.incarnation[t] == holder.incarnation
        ]
        return self.commit(leader, view=view, assigns=[self.assign(view, t, to) for t in tokens])

    def hand_off(self, leader: Node, token: int, destination: Node | None) -> int:
        """Revoke ``token`` to ``destination``, have its holder acknowledge it; return its epoch."""
        view = self.view()
        self.commit(leader, view=view, revokes=[self.revoke(view, token, destination)])
        holder = self._nodes[view.tokens.incarnation[token] or 0]
        acked = self.db.ack_releases(
            self.site, holder.name, holder.incarnation, [(token, view.tokens.epoch[token])]
        )
        assert acked == {token}, f"the hand-off of token {token} was not acknowledged"
        return self.table().epoch[token]

    # -- claims ----------------------------------------------------------------
    def token_of(self, key: str) -> int:
        return token_for(key, self.total, self.hash_function)

    def key_on(self, token: int, prefix: str = "task") -> str:
        """A task key whose token is ``token``."""
        for i in range(100_000):
            key = f"{prefix}-{i}"
            if self.token_of(key) == token:
                return key
        raise AssertionError(f"no key with prefix {prefix!r} maps to token {token}")

    def request(self, key: str, epoch: int | None = None) -> ClaimRequest:
        token = self.token_of(key)
        return ClaimRequest(
            task_key=key, token=token, epoch=self.table().epoch[token] if epoch is None else epoch
        )

    def claim(
        self, node: Node, *keys: str, date: datetime.date = DAY, db: Backend | None = None
    ) -> frozenset[str]:
        """Claim ``keys`` at each token's current epoch."""
        epochs = self.table().epoch
        requests = [
            ClaimRequest(task_key=k, token=self.token_of(k), epoch=epochs[self.token_of(k)])
            for k in keys
        ]
        return (db or self.db).claim(self.site, date, node.name, node.incarnation, requests)

    def audit(self, date: datetime.date = DAY, name: str | None = None) -> dict[str, str]:
        """Task key -> status of the date's claims and completions."""
        return {r.task_key: r.status for r in self.db.read_audit(self.site, date, name)}
