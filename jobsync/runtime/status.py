"""What a Job reports: its health, its coordination status and its counters.

Read-only views over the Job's parts (``runtime/modes.py``'s session, the
claim ledger), for ``am_i_healthy``, ``get_coordination_status`` and
``statistics`` (docs/USAGE_GUIDE.md, "Health"; the keys are the public API).
"""

from __future__ import annotations

from jobsync.core.lifecycle import NodeState
from jobsync.runtime.ledger import ClaimLedger
from jobsync.runtime.modes import Session


def healthy(session: Session, now: float) -> bool:
    """Live and ready: the coordination thread runs and the lease is valid."""
    node = session.node
    return (
        node is not None
        and session.coordinating
        and node.state is NodeState.ACTIVE
        and node.lease_valid(now)
    )


def statistics(session: Session, ledger: ClaimLedger) -> dict[str, int]:
    """The Job's counters, then the node's, the callbacks' and the backend's
    (prefixed ``backend_``)."""
    stats = ledger.statistics.as_dict()
    if session.node is not None:
        stats.update(session.node.stats)
    callbacks = session.callbacks
    if callbacks is not None:
        stats["callback_calls"] = callbacks.calls
        stats["callback_errors"] = callbacks.errors
    if session.backend is not None:
        stats.update({f"backend_{k}": v for k, v in session.backend.statistics().items()})
    return stats


def coordination_status(
    session: Session,
    ledger: ClaimLedger,
    *,
    mode: str,
    leader: bool,
    healthy: bool,
    draining: bool,
    tokens: int,
    heartbeat_age: float | None,
) -> dict[str, object]:
    """``get_coordination_status()``: the node's state and the Job's view of it."""
    node, error = session.node, session.error
    return {
        "node": session.name,
        "site": session.site,
        "state": node.state.value if node else mode,
        "incarnation": node.incarnation if node else None,
        "leader": leader,
        "healthy": healthy,
        "draining": draining,
        "tokens": tokens,
        "token_version": node.token_version if node else 0,
        "generation": node.generation if node else None,
        "waiting_for": node.waiting_for if node else None,
        "open_claims": len(ledger.open),
        "coordinating": session.coordinating,
        "error": None if error is None else str(error),
        "heartbeat_age_sec": heartbeat_age,
    }
