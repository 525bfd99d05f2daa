"""The claimable snapshot: what ``can_claim_task`` reads, swapped atomically.

Law (docs/ARCHITECTURE.md, "Conventions": hot paths are flat): ``can_claim_task`` reads one
immutable object with no lock.  The coordination thread builds a new
snapshot and rebinds one attribute; readers see the old one or the new one,
never a mix.  ``owned`` is a bytearray (1 = claimable) so the check is one
index; ``lease_deadline`` is on the local boot clock: past it the answer is
False whatever ``owned`` says (self-fencing).  Nothing here is mutated after
it is published.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs


@attrs.frozen(kw_only=True)
class ClaimSnapshot:
    owned: bytearray
    tokens: frozenset[int]
    epochs: Mapping[int, int]
    lease_deadline: float
    incarnation: int | None
    version: int

    @classmethod
    def empty(cls, total_tokens: int, version: int = 0) -> ClaimSnapshot:
        return cls(
            owned=bytearray(total_tokens),
            tokens=frozenset(),
            epochs={},
            lease_deadline=float("-inf"),
            incarnation=None,
            version=version,
        )

    @classmethod
    def build(
        cls,
        total_tokens: int,
        epochs: Mapping[int, int],
        lease_deadline: float,
        incarnation: int,
        version: int,
        *,
        self_fencing: bool = True,
    ) -> ClaimSnapshot:
        """``self_fencing`` False (``Defences.self_fencing``, test only) publishes a
        lease that never ends, so only a heartbeat stops the node answering True."""
        owned = bytearray(total_tokens)
        for token in epochs:
            owned[token] = 1
        return cls(
            owned=owned,
            tokens=frozenset(epochs),
            epochs=dict(epochs),
            lease_deadline=lease_deadline if self_fencing else math.inf,
            incarnation=incarnation,
            version=version,
        )

    def with_lease(self, lease_deadline: float, *, self_fencing: bool = True) -> ClaimSnapshot:
        """The same tokens under a renewed lease (shares the immutable arrays)."""
        return attrs.evolve(self, lease_deadline=lease_deadline if self_fencing else math.inf)

    def claimable(self, now: float) -> frozenset[int]:
        return self.tokens if now < self.lease_deadline else frozenset()


def diff(old: Iterable[int], new: Iterable[int]) -> tuple[frozenset[int], frozenset[int]]:
    """(added, removed) between two claimable sets."""
    a, b = frozenset(old), frozenset(new)
    return b - a, a - b
