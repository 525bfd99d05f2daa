"""The simulator's judgement of who may claim what: invariants 1 (exclusivity: one
process at most may claim a token), 2 (fencing at the edges of a process: a buried
incarnation never publishes again, an acknowledgement hands over only tokens its
process no longer claims, a claim is accepted only at the token's current
incarnation and epoch) and 6 (the epochs under which a token is published never go
backwards).  The laws are stated at the top of ``invariants.py``."""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobsync.sim.cluster import SimNode
    from jobsync.sim.invariants import Checker

EMPTY: frozenset[int] = frozenset()


class Ownership:
    """Which process may claim each token, the incarnations seen and those buried."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.c = checker.c
        total = checker.total
        self.holder: list[str | None] = [None] * total
        """The one process whose published claimable set holds each token, if any."""
        self.epoch_seen = array("q", [-1]) * total
        self.epoch_inc: list[int | None] = [None] * total
        self.counted: dict[str, frozenset[int]] = {}
        self.by_incarnation: dict[int, SimNode] = {}
        """The process that published each incarnation first."""
        self.buried: set[int] = set()
        """Incarnations a plan took tokens from directly: they never publish again."""

    def fail(self, invariant: int, message: str) -> None:
        self.checker.fail(invariant, message)

    def sync(self, key: str) -> None:
        """Bring ``holder`` up to date with node ``key``'s claimable set now."""
        sim = self.c.nodes.get(key)
        tokens = EMPTY
        snap = None
        if sim is not None and not sim.crashed:
            snap = sim.node.snapshot
            if snap.tokens and snap.claimable(self.c.local(sim)):
                tokens = snap.tokens
        old = self.counted.get(key, EMPTY)
        if tokens is old:
            return
        holder = self.holder
        if old:
            for t in old - tokens if tokens else old:
                if holder[t] == key:
                    holder[t] = None
        self.counted[key] = tokens
        if not tokens or snap is None:
            return
        inc = snap.incarnation
        fresh = tokens - old if old else tokens
        if fresh and inc in self.buried:
            self.fail(2, f"{key}: incarnation {inc} claims {few(fresh)} after it was buried")
        for t in fresh:
            other = holder[t]
            if other is not None and other != key:
                self.sync(other)
                other = holder[t]
                if other is not None and other != key:
                    self.fail(1, f"token {t} claimable by {other} and {key}")
            holder[t] = key
            self._epoch(key, t, snap.epochs[t], inc)

    def _epoch(self, key: str, token: int, epoch: int, inc: int | None) -> None:
        seen = self.epoch_seen[token]
        if epoch < seen or (epoch == seen and inc != self.epoch_inc[token]):
            self.fail(
                6,
                f"{key} publishes token {token} at epoch {epoch} (incarnation {inc}); "
                f"epoch {seen} was already published by incarnation {self.epoch_inc[token]}",
            )
        self.epoch_seen[token] = epoch
        self.epoch_inc[token] = inc

    def note(self, sim: SimNode) -> None:
        """Record the process that publishes its incarnation first (after a tick)."""
        inc = sim.node.incarnation
        if inc is not None and inc not in self.by_incarnation:
            self.by_incarnation[inc] = sim

    def forget(self, sim: SimNode) -> None:
        """A process died: it claims nothing any more."""
        if self.c.nodes.get(sim.key) is sim:
            old = self.counted.pop(sim.key, EMPTY)
            for t in old:
                if self.holder[t] == sim.key:
                    self.holder[t] = None

    def on_ack(self, incarnation: int, acked: frozenset[int]) -> None:
        sim = self.by_incarnation.get(incarnation)
        if sim is None or sim.crashed or sim.node.snapshot.incarnation != incarnation:
            return
        still = sim.node.snapshot.claimable(self.c.local(sim)) & acked
        if still:
            self.fail(2, f"{sim.key} handed over {few(still)} while it still claims them")

    def on_claim(self, sim: SimNode, token: int, epoch: int, incarnation: int) -> None:
        state = self.c.store.site_state(self.c.site)
        assert state is not None
        rows = state.tokens
        current = (rows.incarnation[token], rows.epoch[token], token in rows.pending)
        if current != (incarnation, epoch, False):
            self.fail(
                2,
                f"{sim.key}: claim on token {token} at ({incarnation}, {epoch}) accepted; "
                f"the row holds {current}",
            )
        self.checker.stats["claims"] += 1


def few(tokens: frozenset[int]) -> str:
    """The first few of ``tokens``, for a message."""
    shown = sorted(tokens)[:5]
    return f"{shown}{'...' if len(tokens) > 5 else ''}"
