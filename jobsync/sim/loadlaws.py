# Law: with ``load_half_life_sec`` set the leader plans with
# `jobsync.core.loadbalance.balance_load` from inputs the checker cannot see
# (its estimate, cool-downs and pacing), so instead of recomputing the plan,
# each accepted plan is judged on what must hold whatever the loads:
#
# 4. Nothing stranded: every token ends (assigned, revoked or already heading
#    there) at a node the plan judged eligible (``HistoryEntry.nodes_after``),
#    except a token whose holder can be neither revoked nor taken from yet,
#    and a token whose pins match no eligible node, which ends with nobody.
#    And the move budget: the plan's LOAD moves (a token leaving an eligible
#    holder its pins allow, for a node that is not joining) are at most
#    ``LoadPolicy().moves_allowed(total)``.  Where a token is heading is its
#    pending release's destination when that node is eligible, else its
#    owner (what the leader plans from).  A node is joining when it held
#    nothing and was not among the previous plan's nodes under the same
#    leader incarnation (a new leader knows no previous plan: any node
#    holding nothing may be filled).
# 5. Pins: every pinned token ends where its first live-matching pattern allows.
"""The simulator's judgement of plans made by a leader that balances measured load."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from jobsync.core.loadpolicy import LoadPolicy
from jobsync.core.locks import resolve_locks

if TYPE_CHECKING:
    from jobsync.sim.invariants import Checker
    from jobsync.sim.planlaws import Commit


class LoadLaws:
    """Invariants 4 and 5 on the plans of a leader balancing measured load."""

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.budget = LoadPolicy().moves_allowed(checker.total)
        self.leader: tuple[str, int] | None = None
        self.known: frozenset[str] | None = None
        self.most = 0
        """The most load moves any plan made (the tests look at it)."""

    def judge(self, entry: Commit) -> None:
        checker, commit = self.checker, entry.commit
        history = commit.history
        assert history is not None
        names = history.nodes_after
        eligible = frozenset(names)
        if (commit.leader, commit.leader_incarnation) != self.leader:
            self.leader, self.known = (commit.leader, commit.leader_incarnation), None
        pins = resolve_locks(entry.locks, entry.db_now).pins
        heading = list(entry.owner)
        final = list(entry.owner)
        for t, destination in entry.pending_to.items():
            final[t] = destination
            if destination in eligible:
                heading[t] = destination
        for a in commit.assigns:
            final[a.token] = a.owner
        for r in commit.revokes:
            final[r.token] = r.destination

        def allowed(t: int, node: str | None) -> bool:
            if node not in eligible:
                return False
            ok = checker.eligible(pins[t], names) if t in pins else eligible
            return ok is not None and node in ok

        held = Counter(h for t, h in enumerate(heading) if allowed(t, h))
        waiting = checker.plans.waiting(entry)
        moves = 0
        for t, (before, after) in enumerate(zip(heading, final, strict=True)):
            if t not in waiting and after not in eligible:
                nobody = not names or (t in pins and checker.eligible(pins[t], names) is None)
                if after is not None or not nobody:
                    checker.fail(4, f"token {t} left with {after}, not an eligible node")
            if before == after or not allowed(t, before):
                continue  # kept, or forced off its holder
            joining = not held[after] and (self.known is None or after not in self.known)
            moves += not joining
        if moves > self.budget:
            checker.fail(4, f"a plan made {moves} load moves; the budget is {self.budget}")
        self.most = max(self.most, moves)
        checker.plans.pins(final, names, pins)
        self.known = eligible
        checker.stats["load_plans_checked"] += 1
