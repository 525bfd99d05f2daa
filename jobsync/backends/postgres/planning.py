"""Planning and hand-off on PostgreSQL: read_cluster, commit_plan, read_owned,
ack_releases, evict_overdue.

``commit_plan`` checks, at commit, what ``rules.plan_misfit`` checks (the
generation, the leader, every written row's expected incarnation and epoch,
every DirectAssign's holder expired), after marking dead, in a statement of
its own, the holders whose lease ran out (see backend.py on the
heartbeat-versus-reap race).  Rows go out as ``rows.dense_assigns`` or
``rows.compact_assigns``, whichever is cheaper for the plan's size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobsync.backends import _checks as checks
from jobsync.backends.base import (
    ClusterView,
    DirectAssign,
    HistoryEntry,
    OwnedTokens,
    PlanCommit,
    Revoke,
)
from jobsync.backends.postgres import rows as V
from jobsync.backends.postgres.handle import Queries, _Handle, unknown_site
from jobsync.backends.postgres.session import Session
from jobsync.core.errors import (
    ConflictError,
    InvalidArgument,
    NotLeader,
)


class _Planning(_Handle):
    """The leader's plan, and the hand-off it starts."""

    def read_cluster(self, site: str) -> ClusterView:
        site = checks.site_name(site)

        def body(s: Session, q: Queries) -> ClusterView:
            row = s.execute(q["READ_CLUSTER"], {"site": site}, binary=True).fetchone()
            if row is None:
                raise unknown_site(site)
            return V.cluster_view(row)

        return self._call("read_cluster", site, body)

    def commit_plan(self, site: str, commit: PlanCommit) -> int:
        site, commit = checks.site_name(site), checks.plan_shape(commit)
        holders = sorted(
            {a.expected_incarnation for a in commit.assigns if a.expected_incarnation is not None}
        )

        def body(s: Session, q: Queries) -> int:
            if holders:
                # Its own statement, before the transaction (see the module
                # docstring): marks dead the holders whose lease has run out.
                s.execute(q["MARK_EXPIRED_HOLDERS"], {"site": site, "incs": holders})
            with s.transaction():
                total, generation, counter, _ = self._lock_site(s, q, site)
                checks.plan_tokens(commit, total)
                if commit.basis > counter:
                    raise InvalidArgument(
                        f"plan basis {commit.basis} is above site {site!r}'s change counter "
                        f"{counter}"
                    )
                if commit.expected_generation != generation:
                    raise ConflictError(
                        f"site {site!r} is at generation {generation}; the plan expected "
                        f"{commit.expected_generation}"
                    )
                self._check_leader(s, q, site, commit.leader, commit.leader_incarnation)
                channel = {"channel": self._channel(site), "payload": "plan"}
                if not (commit.assigns or commit.revokes):
                    params = {"site": site, "basis": commit.basis, **channel}
                    s.execute(q["RAISE_BASIS"], params)
                    return int(generation)
                if commit.assigns:
                    self._assign(s, q, site, commit, total)
                if commit.revokes:
                    self._revoke(s, q, site, commit)
                row = s.execute(q["FINISH_PLAN"], self._finish_params(site, commit, channel))
                result = row.fetchone()
                assert result is not None
                return int(result[0])

        return self._call("commit_plan", site, body)

    def _check_leader(self, s: Session, q: Queries, site: str, name: str, inc: int) -> None:
        row = s.execute(q["LEADER"], {"site": site}).fetchone()
        if row is None or (row[0], row[1]) != (name, inc):
            oldest = "no live node" if row is None else f"{row[0]!r} ({row[1]})"
            raise NotLeader(
                f"{name!r} incarnation {inc} is not the oldest live node of site "
                f"{site!r}; the leader is {oldest}"
            )

    def _assign(self, s: Session, q: Queries, site: str, commit: PlanCommit, total: int) -> None:
        assigns = commit.assigns
        samples: dict[int, int] = {}  # expected incarnation -> one of its tokens
        for a in assigns:
            if a.expected_incarnation is not None:
                samples.setdefault(a.expected_incarnation, a.token)
        p: dict[str, Any] = {
            "site": site,
            "incs": sorted(samples),
            "samples": [samples[i] for i in sorted(samples)],
        }
        if samples:
            held = s.execute(q["HELD_HOLDERS"], p).fetchone()
            if held is not None:
                raise ConflictError(
                    f"incarnation {held[1]} of {held[0]!r} still holds its lease (or it ran "
                    "out only after this plan began); a live owner must be revoked, not "
                    "reassigned"
                )
        if len(assigns) * 4 >= total:
            query, params = q["ASSIGN"], V.dense_assigns(site, assigns, total)
        else:
            query, params = q["ASSIGN_FEW"], V.compact_assigns(site, assigns)
        if s.execute(query, params).rowcount != len(assigns):
            self._row_conflict(s, q, site, commit)
        if samples:
            s.execute(q["BURY"], p)

    def _revoke(self, s: Session, q: Queries, site: str, commit: PlanCommit) -> None:
        revokes = commit.revokes
        params = {
            "site": site,
            "ack": commit.ack_timeout,
            "tokens": V.csv([r.token for r in revokes]),
            "exp_incs": V.csv([r.expected_incarnation for r in revokes]),
            "exp_epochs": V.csv([r.expected_epoch for r in revokes]),
            "dests": [r.destination for r in revokes],
        }
        if s.execute(q["REVOKE"], params).rowcount != len(revokes):
            self._row_conflict(s, q, site, commit)

    def _row_conflict(self, s: Session, q: Queries, site: str, commit: PlanCommit) -> None:
        writes: list[DirectAssign | Revoke] = [*commit.assigns, *commit.revokes]
        params = {"site": site, "tokens": [w.token for w in writes]}
        rows = {r[0]: r for r in s.execute(q["TOKEN_ROWS"], params).fetchall()}
        for w in writes:
            _, inc, epoch = rows.get(w.token, (w.token, None, None))
            if (inc, epoch) != (w.expected_incarnation, w.expected_epoch):
                raise ConflictError(
                    f"token {w.token} holds incarnation {inc} at epoch {epoch}; the plan "
                    f"expected {w.expected_incarnation} at {w.expected_epoch}"
                )
        raise ConflictError(f"site {site!r}: a token row changed under the plan")

    @staticmethod
    def _finish_params(site: str, commit: PlanCommit, channel: dict[str, str]) -> dict[str, Any]:
        h = commit.history or HistoryEntry(
            trigger="", nodes_before=(), nodes_after=(), moved=0, unowned=0, duration_ms=0.0
        )
        return {
            "site": site,
            "basis": commit.basis,
            "leader": commit.leader,
            "history": commit.history is not None,
            "trigger": h.trigger,
            "before": list(h.nodes_before),
            "after": list(h.nodes_after),
            "moved": h.moved,
            "unowned": h.unowned,
            "duration": float(h.duration_ms),
            "hot": None if h.hot is None else list(h.hot),
            **channel,
        }

    def read_owned(self, site: str, name: str, incarnation: int) -> OwnedTokens:
        site, name, inc = self._member(site, name, incarnation)
        params = {"site": site, "name": name, "inc": inc}

        def body(s: Session, q: Queries) -> OwnedTokens:
            row = s.execute(q["READ_OWNED"], params, prepare=True).fetchone()
            if row is None:
                raise unknown_site(site)
            now, counter, basis, tokens, epochs, pending, incoming = row
            return OwnedTokens(
                now=now,
                change_counter=counter,
                plan_basis=basis,
                tokens=tuple(tokens or ()),
                epochs=tuple(epochs or ()),
                pending=frozenset(pending or ()),
                incoming=incoming,
            )

        return self._call("read_owned", site, body)

    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        site, name, inc = self._member(site, name, incarnation)

        def body(s: Session, q: Queries) -> frozenset[int]:
            with s.transaction():
                total = self._lock_site(s, q, site)[0]
                pairs = checks.token_epochs(tokens, total)
                if not pairs:
                    return frozenset()
                params = {
                    "site": site,
                    "name": name,
                    "inc": inc,
                    "tokens": [t for t, _ in pairs],
                    "epochs": [e for _, e in pairs],
                }
                done = frozenset(r[0] for r in s.execute(q["ACK"], params).fetchall())
                if done:
                    self._bump(s, q, site, "ack")
            return done

        return self._call("ack_releases", site, body)

    def evict_overdue(self, site: str, leader: str, leader_incarnation: int) -> tuple[str, ...]:
        site, leader, inc = self._member(site, leader, leader_incarnation)

        def body(s: Session, q: Queries) -> tuple[str, ...]:
            with s.transaction():
                self._lock_site(s, q, site)
                self._check_leader(s, q, site, leader, inc)
                # The eviction and the bump are one statement, the last before
                # COMMIT: the evicted nodes' rows stay locked no longer.
                params = {"site": site, "channel": self._channel(site), "payload": "evict"}
                row = s.execute(q["EVICT"], params).fetchone()
                assert row is not None
            return tuple(sorted(set(row[0] or ())))

        return self._call("evict_overdue", site, body)
