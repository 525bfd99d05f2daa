# Law: a violation names the invariant it breaks (the numbering of docs/PROTOCOL.md section 7 and
# of jobsync.sim.invariants), the virtual instant and the nodes involved, so a
# report can say which guarantee failed without parsing the message.
"""The simulator's one error: an invariant failed."""

from __future__ import annotations


class InvariantViolation(AssertionError):
    """A safety or liveness invariant failed; ``invariant`` is its number (1-7)."""

    def __init__(self, message: str, *, invariant: int = 1) -> None:
        super().__init__(f"invariant {invariant}: {message}")
        self.invariant = invariant
