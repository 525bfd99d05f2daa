"""Planning and hand-off on SQLite: read_cluster, commit_plan, read_owned,
ack_releases, evict_overdue.

A plan is judged by ``rules.plan_misfit`` against the rows it writes, read
under the write lock (so nothing changes between the check and the commit);
``rows.plan_rows`` then says what changes.  Leadership is
``rules.oldest_live``; an acknowledged release goes where
``rules.destination`` says (``rows.handoff``); DirectAssign acts only on
leases ``rules.lease_expired`` judges over.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence

from jobsync.backends import _checks as C
from jobsync.backends.base import (
    NODE_EVICTED,
    ClusterView,
    HistoryRecord,
    NodeRecord,
    OwnedTokens,
    PlanCommit,
    TokenTable,
)
from jobsync.backends.sqlite import queries as Q
from jobsync.backends.sqlite import rows as R
from jobsync.backends.sqlite.rows import Row
from jobsync.backends.sqlite.session import _Session
from jobsync.core import rules
from jobsync.core.errors import InvalidArgument, NotLeader


class _Planning(_Session):
    """The leader's reads and plans, and the hand-off of released tokens."""

    def read_cluster(self, site: str) -> ClusterView:
        C.site_name(site)
        with self._tx("read_cluster", write=False) as conn:
            info, now = self._site(conn, site), self._clock()
            nodes = self._nodes(conn, site)
            rows = conn.execute(Q.SELECT_TOKENS, (site,)).fetchall()
            locks = tuple(R.lock(row) for row in conn.execute(Q.SELECT_LOCKS, (site, now)))
        owner, incarnation, epoch, dest, deadline = zip(*rows, strict=True)
        table = TokenTable(
            owner=owner, incarnation=incarnation, epoch=array("q", epoch), pending_to=dest,
            pending_deadline=deadline,
        )  # fmt: skip
        return ClusterView(
            now=now, site=R.site_info(info), nodes=R.seniority(nodes.values()), tokens=table,
            locks=locks,
        )  # fmt: skip

    def commit_plan(self, site: str, commit: PlanCommit) -> int:
        C.site_name(site)
        C.plan_shape(commit)
        with self._tx("commit_plan") as conn:
            info, now = self._site(conn, site), self._clock()
            C.plan_tokens(commit, info[R.TOTAL])
            generation = info[R.GENERATION]
            if commit.basis > info[R.COUNTER]:
                raise InvalidArgument(
                    f"plan basis {commit.basis} is above site {site!r}'s change counter"
                    f" {info[R.COUNTER]}"
                )
            nodes = self._nodes(conn, site)
            written = [a.token for a in commit.assigns] + [r.token for r in commit.revokes]
            rows = self._rows(conn, site, written)
            rules.plan_misfit(
                commit, site=site, generation=generation, tokens=R.TokenColumns(rows),
                nodes=nodes, now=now,
            )  # fmt: skip
            updates, dead = R.plan_rows(site, commit, rows, now)
            if not written:
                conn.execute(Q.RAISE_BASIS, (site, commit.basis))
                return int(generation)
            conn.executemany(Q.UPDATE_TOKEN, updates)  # only the rows that change
            self._bury(conn, site, dead)
            generation += 1
            conn.execute(Q.NEW_GENERATION, (site, generation, commit.basis))
            conn.execute(Q.BUMP, (site,))
            if commit.history is not None:
                record = HistoryRecord(
                    generation=generation, leader=commit.leader, at=now, entry=commit.history
                )
                conn.execute(Q.INSERT_HISTORY, R.history_params(site, record))
            return int(generation)

    def read_owned(self, site: str, name: str, incarnation: int) -> OwnedTokens:
        self._member(site, name, incarnation)
        with self._tx("read_owned", write=False) as conn:
            info, now = self._site(conn, site), self._clock()
            rows = conn.execute(Q.SELECT_OWNED, (site, name, incarnation)).fetchall()
            (incoming,) = conn.execute(Q.COUNT_INCOMING, (site, name, incarnation)).fetchone()
        return OwnedTokens(
            now=now, change_counter=info[R.COUNTER], plan_basis=info[R.BASIS],
            tokens=tuple(r[0] for r in rows), epochs=tuple(r[1] for r in rows),
            pending=frozenset(r[0] for r in rows if r[2] is not None), incoming=incoming,
        )  # fmt: skip

    # -- hand-off -------------------------------------------------------------
    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        self._member(site, name, incarnation)
        with self._tx("ack_releases") as conn:
            pairs = C.token_epochs(tokens, self._site(conn, site)[R.TOTAL])
            now, nodes = self._clock(), self._nodes(conn, site)
            rows = self._rows(conn, site, (token for token, _ in pairs))
            done: dict[int, Row] = {}
            for token, epoch in pairs:
                row = rows[token]
                held = (row[R.OWNER], row[R.INC], row[R.EPOCH]) == (name, incarnation, epoch)
                if held and row[R.DEADLINE] is not None:
                    done[token] = R.handoff(site, row, nodes, now)
            conn.executemany(Q.UPDATE_TOKEN, done.values())
            if done:
                conn.execute(Q.BUMP, (site,))
        return frozenset(done)

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        self._member(site, leader, leader_incarnation)
        with self._tx("evict_overdue") as conn:
            self._site(conn, site)
            now, nodes = self._clock(), self._nodes(conn, site)
            _require_leader(site, nodes, now, leader, leader_incarnation)
            overdue = conn.execute(Q.OVERDUE, (site, now)).fetchall()
            names = sorted({name for name, inc in overdue if R.running(nodes.get(name), inc)})
            conn.executemany(Q.SET_STATE, [(site, name, NODE_EVICTED) for name in names])
            if names:
                conn.execute(Q.BUMP, (site,))
        return tuple(names)


def _require_leader(
    site: str, nodes: Mapping[str, NodeRecord], now: float, name: str, inc: int
) -> None:
    lead = rules.oldest_live(nodes.values(), now)
    if lead is None or (lead.name, lead.incarnation) != (name, inc):
        oldest = "no live node" if lead is None else f"{lead.name!r} ({lead.incarnation})"
        raise NotLeader(
            f"{name!r} incarnation {inc} is not the oldest live node of site {site!r}; "
            f"the leader is {oldest}"
        )
