"""The working state of `jobsync.core.loadbalance.balance_load`: the holdings and the three phases.

``LoadState`` is who holds which token, with each node's load and token
set; it runs the law's phases over them (orphans, joins, then hot tokens and
load moves), moving tokens, and counts what they did.  The law
itself, what each phase promises and why, is written at the top of
``jobsync.core.loadbalance``, which validates the inputs, runs the phases in
order and turns the state into a ``LoadPlan``.
"""

from __future__ import annotations

import heapq
import math

from jobsync.core.loadpolicy import LoadPolicy


class LoadState:
    """Who holds which token, with each node's load and token set, as the law's
    three phases move them, and what the phases counted (a `LoadPlan`'s counts).

    Nodes are indices into ``names``; ``owner[t]`` is -1 for a token no node
    holds.  A token held by a node it may not use (not live, or not eligible
    under its pin) starts unheld and among ``orphans``; a token no node may
    use is ``unowned`` and never held.
    """

    def __init__(
        self,
        names: tuple[str, ...],
        caps: list[float],
        weights: list[float],
        current: list[str | None],
        *,
        masks: dict[int, int],
        cooling: dict[int, int],
    ) -> None:
        self.names, self.caps, self.w, self.masks = names, caps, weights, masks
        self.full = (1 << len(names)) - 1
        where = {name: i for i, name in enumerate(names)}
        self.owner = [where.get(o, -1) if o is not None else -1 for o in current]
        self.unowned = frozenset(t for t, m in masks.items() if m == 0)
        self.held: list[set[int]] = [set() for _ in names]
        self.load = [0.0] * len(names)
        self.orphans: list[int] = []
        for t, i in enumerate(self.owner):
            if t in self.unowned:
                self.owner[t] = -1
            elif i < 0 or not self.eligible(t, i):
                self.owner[t] = -1
                self.orphans.append(t)
            else:
                self.held[i].add(t)
                self.load[i] += weights[t]
        self.new = [not h for h in self.held]
        self.orphan_set = frozenset(self.orphans)
        self.cooling = cooling
        self.moved: set[int] = set()
        self.forced = self.filled = self.budgeted = self.detours = self.lower = 0
        self.finished = True
        self.hot: list[int] = []
        self.dedicated: dict[int, int] = {}
        self.unit = 0.0
        self.budget = 0
        self.ceiling: list[float] = []
        self.triggered = False
        self.last = -1  # the token of the latest load move

    def eligible(self, t: int, i: int) -> bool:
        return bool(self.masks.get(t, self.full) >> i & 1)

    def _move(self, t: int, to: int) -> None:
        i = self.owner[t]
        if i >= 0:
            self.held[i].discard(t)
            self.load[i] -= self.w[t]
        self.owner[t] = to
        self.held[to].add(t)
        self.load[to] += self.w[t]
        self.moved.add(t)

    def _norm_after(self, i: int, w: float) -> float:
        return (self.load[i] + w) / self.caps[i]

    def _loaded(self, i: int, t: int) -> int:
        """Tokens with any load on node ``i`` besides ``t`` (what giving ``i`` to ``t`` moves)."""
        return sum(1 for u in self.held[i] if u != t and self.w[u] > 0)

    # -- phase 1: orphans ------------------------------------------------------------
    def place_orphans(self) -> None:
        for t in sorted(self.orphans, key=lambda t: (-self.w[t], t)):
            best = min(
                (i for i in range(len(self.names)) if self.eligible(t, i)),
                key=lambda i: (self._norm_after(i, self.w[t]), len(self.held[i]) / self.caps[i], i),
            )
            self._move(t, best)
            self.forced += 1

    # -- phase 2: joins ----------------------------------------------------------------
    def fill_new(self, policy: LoadPolicy) -> None:
        total = sum(self.load)
        if total <= 0:
            return
        unit = total / sum(self.caps)
        for j in (j for j, new in enumerate(self.new) if new):
            while self.load[j] < (1 - policy.band) * self.caps[j] * unit:
                room = self.caps[j] * unit - self.load[j]
                pick = self._fill_pick(j, room)
                if pick is None:
                    break
                self._move(pick, j)
                self.filled += 1

    def _fill_pick(self, j: int, room: float) -> int | None:
        donors = sorted(
            (i for i in range(len(self.names)) if not self.new[i] and self.load[i] > 0),
            key=lambda i: (-self.load[i] / self.caps[i], i),
        )
        for i in donors:
            fits = [
                t
                for t in self.held[i]
                if 0 < self.w[t] <= room and t not in self.moved and self.eligible(t, j)
            ]
            if fits:
                return max(fits, key=lambda t: (self.w[t], t))
        return None

    # -- phase 3: hot tokens and load moves --------------------------------------------
    def _movable(self, t: int) -> bool:
        # An orphan placed by this plan may be placed again (it is one move either way).
        if t in self.orphan_set:
            return self.w[t] > 0
        return self.w[t] > 0 and t not in self.moved and t not in self.cooling

    def _load_move(self, t: int, to: int) -> int:
        """Move ``t`` for load; what it costs the budget (an orphan's move is forced)."""
        self._move(t, to)
        self.last = t
        cost = 0 if t in self.orphan_set else 1
        self.budgeted += cost
        return cost

    def _find_hot(self) -> None:
        """Water-filling: hot tokens, heaviest first, and the node each is given."""
        rest_load, rest_cap = sum(self.load), sum(self.caps)
        free = set(range(len(self.names)))
        for t in sorted(
            (t for t in range(len(self.w)) if self.owner[t] >= 0), key=lambda t: (-self.w[t], t)
        ):
            if len(free) <= 1 or rest_load <= 0:
                break
            spots = [i for i in free if self.eligible(t, i)]
            if not spots:
                continue
            if self.w[t] <= rest_load / rest_cap * max(self.caps[i] for i in spots):
                break
            self.hot.append(t)
            node = min(
                spots,
                key=lambda i: (
                    -self.caps[i],
                    self._loaded(i, t) + (self.owner[t] != i),
                    i,
                ),
            )
            self.dedicated[node] = t
            free.discard(node)
            rest_load -= self.w[t]
            rest_cap -= self.caps[node]
        self.unit = rest_load / rest_cap if rest_cap > 0 else 0.0

    def shed(self, policy: LoadPolicy, budget: int) -> None:
        self.budget = budget
        if sum(self.load) <= 0 or not budget:
            return
        self._find_hot()
        trigger = [policy.trigger * c * self.unit for c in self.caps]
        self.ceiling = [policy.ceiling * c * self.unit for c in self.caps]
        self.triggered = any(
            self._loaded(j, t) or self.owner[t] != j for j, t in self.dedicated.items()
        ) or any(
            self.load[i] > trigger[i] for i in range(len(self.names)) if i not in self.dedicated
        )
        if not self.triggered:
            return
        self.lower = self._lower_bound()
        left = budget
        for j, t in sorted(self.dedicated.items(), key=lambda item: (-self.w[item[1]], item[1])):
            if self.owner[t] != j:
                if not left or not self._movable(t):
                    self.finished = False
                    continue
                left -= self._load_move(t, j)
        heap = [(-self.load[i] / self.caps[i], i) for i in range(len(self.names))]
        heapq.heapify(heap)
        while heap:
            _, i = heapq.heappop(heap)
            over = self._excess(i)
            if over is None:
                continue
            if not left:
                self.finished = False
                break
            cost = self._shed_one(i, over)
            if cost is None:
                self.finished = False
                continue
            left -= cost
            # The donor, and a receiver a detour may have lifted over its trigger.
            for k in (i, self.owner[self.last]):
                heapq.heappush(heap, (-self.load[k] / self.caps[k], k))

    def _excess(self, i: int) -> float | None:
        """What node ``i`` must still lose (None: nothing)."""
        if i in self.dedicated:
            return math.inf if self._loaded(i, self.dedicated[i]) else None
        if self.load[i] > self.ceiling[i]:
            return self.load[i] - self.ceiling[i]
        return None

    def _receiver(self, t: int, i: int, strict: bool) -> int | None:
        w = self.w[t]
        best: tuple[float, int] | None = None
        for j in range(len(self.names)):
            if j == i or j in self.dedicated or not self.eligible(t, j):
                continue
            after = self._norm_after(j, w)
            if strict and self.load[j] + w > self.ceiling[j]:
                continue
            if best is None or (after, j) < best:
                best = (after, j)
        if best is None:
            return None
        if not strict and best[0] >= self.load[i] / self.caps[i]:
            return None
        return best[1]

    def _shed_one(self, i: int, over: float) -> int | None:
        hot = self.dedicated.get(i)
        tokens = sorted(
            (t for t in self.held[i] if t != hot and self._movable(t)),
            key=lambda t: (self.w[t], t),
        )
        if not tokens:
            return None
        # Orphans placed by this plan first (they cost no budget), then the
        # others; in each group the smallest token covering what is over,
        # else the heaviest first.
        order: list[int] = []
        for group in (
            [t for t in tokens if t in self.orphan_set],
            [t for t in tokens if t not in self.orphan_set],
        ):
            order += [t for t in group if self.w[t] >= over]
            order += [t for t in reversed(group) if self.w[t] < over]
        for k, t in enumerate(order):
            j = self._receiver(t, i, strict=True)
            if j is not None:
                self.detours += k > 0
                return self._load_move(t, j)
        for t in reversed(tokens):
            j = self._receiver(t, i, strict=False)
            if j is not None:
                self.detours += 1
                return self._load_move(t, j)
        return None

    def _lower_bound(self) -> int:
        """Fewest load moves any plan needs for these ceilings (the law's lower bound)."""
        load = list(self.load)
        count = 0
        free = self.orphan_set
        for j, t in self.dedicated.items():
            if self.owner[t] != j and self._movable(t):
                count += t not in free
                load[self.owner[t]] -= self.w[t]
                load[j] += self.w[t]
        going = set(self.dedicated.values())  # hot tokens are counted once, above
        for i in range(len(self.names)):
            mine = [t for t in self.held[i] if t not in going and self._movable(t)]
            if i in self.dedicated:
                count += sum(1 for t in mine if t not in free)
                continue
            if load[i] <= self.ceiling[i]:
                continue
            need = load[i] - self.ceiling[i] - sum(self.w[t] for t in mine if t in free)
            mine = [t for t in mine if t not in free]
            for w in sorted((self.w[t] for t in mine), reverse=True):
                if need <= 0:
                    break
                need -= w
                count += 1
        return count
