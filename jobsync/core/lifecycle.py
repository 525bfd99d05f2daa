"""Node lifecycle as data: states, events and one transition table.

Law: a node moves only along an edge of ``TRANSITIONS``; any other
(state, event) pair raises IllegalTransition naming both, so a runtime bug
shows up as an error at the event instead of as silent double ownership.

    STARTING --registered--> JOINING --ready--> ACTIVE
    JOINING/ACTIVE --lease_lost--> FENCED --reregistered--> JOINING
    JOINING/ACTIVE/FENCED --drain--> DRAINING --drained--> STOPPED
    any live state --superseded--> SUPERSEDED (terminal; NodeNameConflict)
    any state but terminal --failed--> STOPPED

FENCED answers False to every claim until a heartbeat succeeds again as a
new incarnation.  DRAINING keeps heartbeating but claims nothing new.
"""

from __future__ import annotations

import enum

from jobsync.core.errors import IllegalTransition


class NodeState(enum.Enum):
    STARTING = "starting"
    JOINING = "joining"
    ACTIVE = "active"
    FENCED = "fenced"
    DRAINING = "draining"
    STOPPED = "stopped"
    SUPERSEDED = "superseded"


class NodeEvent(enum.Enum):
    REGISTERED = "registered"
    READY = "ready"
    LEASE_LOST = "lease_lost"
    REREGISTERED = "reregistered"
    DRAIN = "drain"
    DRAINED = "drained"
    SUPERSEDED = "superseded"
    FAILED = "failed"


_S, _E = NodeState, NodeEvent

TRANSITIONS: dict[tuple[NodeState, NodeEvent], NodeState] = {
    (_S.STARTING, _E.REGISTERED): _S.JOINING,
    (_S.STARTING, _E.FAILED): _S.STOPPED,
    (_S.STARTING, _E.SUPERSEDED): _S.SUPERSEDED,
    (_S.JOINING, _E.READY): _S.ACTIVE,
    (_S.JOINING, _E.LEASE_LOST): _S.FENCED,
    (_S.JOINING, _E.DRAIN): _S.DRAINING,
    (_S.JOINING, _E.SUPERSEDED): _S.SUPERSEDED,
    (_S.JOINING, _E.FAILED): _S.STOPPED,
    (_S.ACTIVE, _E.LEASE_LOST): _S.FENCED,
    (_S.ACTIVE, _E.DRAIN): _S.DRAINING,
    (_S.ACTIVE, _E.SUPERSEDED): _S.SUPERSEDED,
    (_S.ACTIVE, _E.FAILED): _S.STOPPED,
    (_S.FENCED, _E.REREGISTERED): _S.JOINING,
    (_S.FENCED, _E.LEASE_LOST): _S.FENCED,
    (_S.FENCED, _E.DRAIN): _S.DRAINING,
    (_S.FENCED, _E.SUPERSEDED): _S.SUPERSEDED,
    (_S.FENCED, _E.FAILED): _S.STOPPED,
    (_S.DRAINING, _E.LEASE_LOST): _S.DRAINING,
    (_S.DRAINING, _E.DRAINED): _S.STOPPED,
    (_S.DRAINING, _E.SUPERSEDED): _S.SUPERSEDED,
    (_S.DRAINING, _E.FAILED): _S.STOPPED,
}

TERMINAL: frozenset[NodeState] = frozenset({NodeState.STOPPED, NodeState.SUPERSEDED})

CLAIMING: frozenset[NodeState] = frozenset({NodeState.JOINING, NodeState.ACTIVE})
"""States in which a node may answer True to ``can_claim_task`` (lease permitting)."""


def transition(state: NodeState, event: NodeEvent) -> NodeState:
    """The state after ``event`` in ``state``; IllegalTransition if the table has no edge."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(
            f"event {event.value!r} is not allowed in state {state.value!r}"
        ) from None
