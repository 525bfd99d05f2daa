"""The leader's measured load: a decayed per-token estimate from completed claims.

Turned on by ``CoordinationConfig.load_half_life_sec`` on a backend with the
``CompletionFeed`` capability.  The leader reads completions in order, at
most ``BATCH`` a read and at most one read per ``interval`` (twice the
reconciliation interval: 2 requests a minute more for the leader at the
defaults, none for the followers), folds each claim's duration (completed
minus claimed, or the explicit cost given to ``complete``) into
``jobsync.core.loadestimate.LoadEstimate`` and hands the
planner the per-token rates (``inputs``).  Load moves are paced the same
way: at most one plan with load moves per ``interval``; orphans, joins,
leaves and pin changes are planned whenever they happen (``load_moves=0``
between load passes keeps the plan to those).  Each plan knows the nodes of
the last one (``known``): only a node not among them joined.  A new leader
starts from the completions of the last few half-lives; if they hold none, it
keeps the current table (every token weighing one, no load moves) rather than
let the count planner even out what load balancing built, until something is
measured or ``LOOKBACK`` half-lives pass with nothing.  ``hot`` names the tokens the last
load plan found hot, for the status output.
"""

from __future__ import annotations

import logging

import attrs

from jobsync.backends.capabilities import Completion, CompletionFeed
from jobsync.core.loadbalance import LoadPlan
from jobsync.core.loadestimate import LoadEstimate
from jobsync.core.loadpolicy import LoadPolicy

log = logging.getLogger("jobsync.node")

BATCH = 10_000
"""Completions read at most per request (one index range scan)."""
LOOKBACK = 4
"""Half-lives of history a new leader reads back."""


@attrs.frozen(kw_only=True)
class LoadInputs:
    """What the planner needs for a load plan."""

    rates: tuple[float, ...]
    cooling: dict[int, int]
    policy: LoadPolicy
    load_moves: int
    known: tuple[str, ...] | None
    """The nodes of the last plan committed: a node among them is no join."""
    hot: tuple[int, ...]
    """The hot tokens of the last load pass (what the history says now)."""


def _cost(done: Completion) -> float:
    """The explicit cost given to ``complete``, else the claim's duration."""
    if done.cost is not None:
        return done.cost
    return max(0.0, done.completed_at - done.claimed_at)


class LoadTracker:
    """Leader-only: the estimate, the read cursor, the cool-downs and the pacing."""

    def __init__(self, total_tokens: int, half_life: float, interval: float) -> None:
        self.estimate = LoadEstimate.empty(total_tokens, half_life)
        self.interval = interval
        self.policy = LoadPolicy()
        self.cursor: float | None = None
        self.next_read = 0.0
        self.next_moves = 0.0
        self.cooling: dict[int, int] = {}
        self.hot: tuple[int, ...] = ()
        self.known: tuple[str, ...] | None = None
        self.since: float | None = None  # backend time of the first read

    def due(self) -> float:
        """Backend time of the next read or load pass."""
        return min(self.next_read, self.next_moves)

    def refresh(self, backend: object, site: str, now: float) -> None:
        """One bounded read of new completions, if one is due (``now``: backend time)."""
        if not isinstance(backend, CompletionFeed) or now < self.next_read:
            return
        after = self.cursor
        if after is None:
            self.since = now
            after = now - LOOKBACK * self.estimate.half_life
        batch = backend.read_completions(site, after, BATCH)
        costs = [(c.token, _cost(c), c.completed_at) for c in batch]
        self.estimate = self.estimate.observe(now, costs)
        self.cursor = batch[-1].completed_at if batch else after
        # A full batch leaves more to read: read again at the next pass.
        self.next_read = now if len(batch) == BATCH else now + self.interval

    def inputs(self, now: float) -> LoadInputs | None:
        """The planner's load inputs; None (the count planner) once nothing was measured
        in ``LOOKBACK`` half-lives of reading.

        Until something is measured (a new leader whose first read found no
        completion) every token weighs one and no load move is made: the
        table load balancing built is kept, with only orphans, joins, leaves
        and pin changes planned (capacity changes wait for the estimate)."""
        total = len(self.estimate.sums)
        if self.estimate.measured:
            rates = self.estimate.rates(now)
            moves = self.policy.moves_allowed(total) if now >= self.next_moves else 0
        elif self.since is None or now >= self.since + LOOKBACK * self.estimate.half_life:
            return None
        else:
            rates, moves = (1.0,) * total, 0
        return LoadInputs(
            rates=rates,
            cooling=self.cooling,
            policy=self.policy,
            load_moves=moves,
            known=self.known,
            hot=self.hot,
        )

    def planned(self, result: LoadPlan, inputs: LoadInputs, now: float, site: str) -> None:
        """Record a committed load plan: its nodes; if it made load moves, its cool-downs
        and hot tokens and the next load pass."""
        self.known = result.nodes
        if not inputs.load_moves:
            return
        self.cooling = dict(result.cooling)
        self.next_moves = now + self.interval
        if result.hot != self.hot:
            self.hot = result.hot
            if result.hot:
                sample = ", ".join(str(t) for t in result.hot[:10])
                log.warning(
                    "site %s: hot token(s) %s each carry more than a node's share of the "
                    "measured load; spread their tasks (add a salt to the task id)",
                    site,
                    sample,
                )
