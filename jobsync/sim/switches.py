# Law: production pays nothing for these switches.  Each is one module-level
# boolean, True in production, read only on a cold path (when a snapshot is
# built, when a plan is committed), never by ``can_claim_task``; only this
# module (for the simulator's tests of its own teeth) sets one False, always
# restoring it.  Each turns off exactly one defence of DESIGN.md section 5:
#
#   revoke_before_assign  (runtime/leader.py) the committing leader
#       acknowledges its own revokes on the live holders' behalf, so a token
#       passes to its destination while its holder still claims it: the
#       effect of a DirectAssign from a live holder.  (A literal DirectAssign
#       from a live holder would be refused by the store's commit-time
#       expiry check, the third defence below, so it could not show teeth on
#       its own.)
#   self_fencing          (runtime/snapshot.py) snapshots are published with
#       a lease that never ends: a paused or cut-off node keeps answering True
#       until a heartbeat tells it otherwise.
#   expiry_recheck        (backends/_memory_state.py) the store accepts a
#       DirectAssign without judging, at commit, that the holder's lease
#       expired (it trusts the leader's earlier read).
"""Test-only switches that disable one safety defence at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType

from jobsync.backends import _memory_state
from jobsync.runtime import leader, snapshot

SWITCHES: dict[str, tuple[ModuleType, str]] = {
    "revoke_before_assign": (leader, "REVOKE_BEFORE_ASSIGN"),
    "self_fencing": (snapshot, "SELF_FENCING"),
    "expiry_recheck": (_memory_state, "EXPIRY_RECHECK"),
}


@contextlib.contextmanager
def disabled(*names: str) -> Iterator[None]:
    """Within the block, the named defences are off (for testing the checker only)."""
    unknown = [n for n in names if n not in SWITCHES]
    if unknown:
        raise ValueError(f"unknown switch {unknown}; known: {sorted(SWITCHES)}")
    saved = [(SWITCHES[n], getattr(*SWITCHES[n])) for n in names]
    try:
        for module, attribute in (SWITCHES[n] for n in names):
            setattr(module, attribute, False)
        yield
    finally:
        for (module, attribute), value in saved:
            setattr(module, attribute, value)


def active() -> dict[str, bool]:
    """Each switch's current value (True: the defence is on)."""
    return {name: bool(getattr(module, attr)) for name, (module, attr) in SWITCHES.items()}
