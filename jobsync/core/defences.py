"""Test-only switches: each turns off exactly one safety defence.

Production never builds anything but ``PRODUCTION`` (every defence on).  The
simulator's teeth tests pass a ``Defences`` with one field False, explicitly,
to the parts that read it (the node, the Job's SIGTERM watchdog, the memory
store), to show that the simulator finds the defect the defence exists for.
Nothing reads these on a hot path, and no module-level state is ever mutated
to turn one off: a switch is an argument, so two simulations in one process
cannot leak into each other.

Each field names the defence and the defect it closes (the numbers are those
of docs/PROTOCOL.md, "Defences and the faults that test them"):

- ``revoke_before_assign``: a live holder's token moves only after it
  acknowledged the revoke (off: the leader acknowledges on its behalf).
- ``self_fencing``: a node stops answering True when its local lease ends
  (off: snapshots never expire).
- ``expiry_recheck``: a DirectAssign is judged at commit on the statement
  clock (off: the store trusts the leader's earlier read).
- ``deregister_keeps_fence``: deregistering a row that fences an older
  incarnation keeps it as a dead tombstone (off: the row is deleted and the
  older incarnation's tokens are handed on at once; defect 1).
- ``retry_leader_errors``: a node retries every error that is not final
  (off: NotLeader or ConflictError outside a plan commit ends it; defect 2).
- ``reregister_after_lost_reply``: a node whose registration reply was lost
  registers again rather than heartbeating its old incarnation (off: it
  heartbeats, sees its own newer incarnation and stops; defect 3).
- ``bounded_lock_waits``: no verb waits on a row lock past the lock timeout,
  claims never wait on a claim row, cleanup skips locked claim rows (off:
  verbs wait for the holder's transaction to end; defect 4).
- ``sigterm_deadline``: a SIGTERMed process ends within ``drain_timeout_sec``
  plus a grace whatever the backend does (off: it waits for the drain to
  finish, which an outage prevents; defect 5).
- ``short_reap_locks``: reaping claims holds no lock on a live node's row
  beyond one statement (off: it locks every claimer's node row for its whole
  transaction, so a paused leader stalls their heartbeats; defect 6).
"""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class Defences:
    """Which safety defences are on (all of them, in production)."""

    revoke_before_assign: bool = True
    self_fencing: bool = True
    expiry_recheck: bool = True
    deregister_keeps_fence: bool = True
    retry_leader_errors: bool = True
    reregister_after_lost_reply: bool = True
    bounded_lock_waits: bool = True
    sigterm_deadline: bool = True
    short_reap_locks: bool = True

    @classmethod
    def without(cls, *names: str) -> Defences:
        """Every defence on except ``names`` (for the simulator's teeth tests)."""
        known = set(attrs.fields_dict(cls))
        unknown = sorted(set(names) - known)
        if unknown:
            from jobsync.core.errors import InvalidArgument

            raise InvalidArgument(f"unknown defence(s) {unknown}; known: {sorted(known)}")
        return cls(**dict.fromkeys(names, False))

    def off(self) -> tuple[str, ...]:
        """The names of the defences that are off."""
        return tuple(name for name, on in attrs.asdict(self).items() if not on)


PRODUCTION = Defences()
