"""What a Job reports: its health, its coordination status and its counters.

Read-only views over the Job's parts (``runtime/modes.py``'s session, the
claim ledger), for ``am_i_healthy``, ``get_coordination_status`` and
``statistics`` (docs/USAGE_GUIDE.md, "Health"; the keys are the public API).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from jobsync.backends.base import Backend
from jobsync.core.errors import InvalidArgument
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.core.rules import is_live
from jobsync.runtime.config import CoordinationConfig
from jobsync.runtime.ledger import ClaimLedger
from jobsync.runtime.modes import Session
from jobsync.runtime.snapshot import ClaimSnapshot


def healthy_worker(session: Session, now: float) -> bool:
    """Live and ready: the coordination thread runs and the lease is valid."""
    node = session.node
    return (
        node is not None
        and session.coordinating
        and node.state is NodeState.ACTIVE
        and node.lease_valid(now)
    )


def all_statistics(session: Session, ledger: ClaimLedger) -> dict[str, int]:
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
        "hot_tokens": _hot_tokens(session),
    }


def _hot_tokens(session: Session) -> list[int] | None:
    """The tokens the leader last measured hot, heaviest first; None unless this node
    leads with ``load_half_life_sec`` set (only the leader measures load)."""
    node = session.node
    load = node.leading.load if node is not None and node.is_leader else None
    return None if load is None else list(load.hot)


class ReportMethods:
    """What users read of a Job (part of its facade): its date, tokens, health,
    status and counters, from the attributes the Job sets."""

    name: str
    site: str
    observer: bool
    config: CoordinationConfig
    _session: Session
    _ledger: ClaimLedger
    _holder: Any
    _now: Callable[[], float]
    _date: datetime.date | None
    _beats: tuple[int, float]
    _halted: bool
    _entered: bool

    @property
    def date(self) -> datetime.date:
        if self._date is None:
            raise InvalidArgument("the Job's date is known once it has entered")
        return self._date

    @property
    def my_tokens(self) -> frozenset[int]:
        """The claimable set: exactly the tokens for which can_claim_task answers True now."""
        if self._halted:
            return frozenset()
        snap: ClaimSnapshot = self._holder.snapshot
        return snap.claimable(self._now())

    @property
    def token_version(self) -> int:
        return self._session.node.token_version if self._session.node is not None else 0

    @property
    def draining(self) -> bool:
        """True once this worker stopped claiming for good (drain, SIGTERM, superseded)."""
        node = self._session.node
        return self._halted or (node is not None and node.state in TERMINAL)

    def am_i_leader(self) -> bool:
        return self._session.node is not None and self._session.node.is_leader

    def am_i_healthy(self) -> bool:
        """Live and ready: the coordination thread runs and the lease is valid.

        False from the instant a drain or SIGTERM began (the signal handler
        sets the flag before anything else), so ``/health/ready`` answers 503
        before the node's thread has even seen the signal."""
        if self._halted:
            return False
        if not self.config.enabled:
            return self._entered
        return healthy_worker(self._session, self._now())

    def get_active_nodes(self) -> list[str]:
        now, nodes = self._require_backend().read_nodes(self.site)
        return [n.name for n in nodes if is_live(n, now)]

    def get_dead_nodes(self) -> list[str]:
        now, nodes = self._require_backend().read_nodes(self.site)
        return [n.name for n in nodes if not is_live(n, now)]

    def get_coordination_status(self) -> dict[str, object]:
        return coordination_status(
            self._session,
            self._ledger,
            mode="observer" if self.observer else "standalone",
            leader=self.am_i_leader(),
            healthy=self.am_i_healthy(),
            draining=self.draining,
            tokens=len(self.my_tokens),
            heartbeat_age=self._now() - self._beats[1] if self._beats[0] else None,
        )

    def statistics(self) -> dict[str, int]:
        return all_statistics(self._session, self._ledger)

    def _require_backend(self) -> Backend:
        if not self.config.enabled:
            raise InvalidArgument(
                f"Job {self.name!r} runs standalone (coordination disabled): it has no backend"
            )
        backend = self._session.backend
        if backend is None:
            raise InvalidArgument(f"Job {self.name!r} has no backend yet: enter it first")
        return backend
