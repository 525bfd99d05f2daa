"""When a SIGTERMed worker waits, drains and ends: a pure policy.

Law: a worker that received SIGTERM at ``signalled_at`` ends by
``signalled_at + drain_timeout + grace`` at the latest, whatever the backend
does (an outage, a lock that is never released, a coordination thread that
ended, a node that was superseded).  Within that bound:

- Open claims may still complete until ``signalled_at + drain_timeout``
  (the drain deadline); while any is open before it, the answer is WAIT.
- Once no claim is open, or at the drain deadline (exactly: the instant
  belongs to DRAIN), the answer is DRAIN: release what is still open and
  let the node hand its tokens off.  The hand-off then gets what is left
  of the bound: at least ``grace`` seconds.
- After DRAIN, the answer is EXIT (re-deliver SIGTERM) as soon as the node
  is done, and at ``signalled_at + drain_timeout + grace`` (exactly: the
  instant belongs to EXIT) even if it is not.  With ``enforce_deadline``
  False (a test-only switch, ``Defences.sigterm_deadline``) only a finished
  node ends the process: the behaviour the deadline exists to prevent.

No clock, no thread, no I/O here: the caller passes ``now`` on whatever
clock ``signalled_at`` was read from, acts on the answer and asks
``next_check`` when time alone would change it.  The Job's SIGTERM watchdog
(``runtime/signals.py``) drives it in production; the simulator drives it
in virtual time.
"""

from __future__ import annotations

import enum
import math

import attrs

DEFAULT_GRACE = 1.0
"""Seconds the hand-off gets past the drain deadline before the process ends anyway."""


class Step(enum.Enum):
    """What a SIGTERMed worker does now."""

    WAIT = "wait"
    """Open claims may still complete; look again later."""
    DRAIN = "drain"
    """Release the claims still open and ask the node to hand its tokens off."""
    EXIT = "exit"
    """Re-deliver SIGTERM now: the drain is over or its time is up."""


def _finite(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value!r}")


def _non_negative(_inst: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0 seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class ShutdownPolicy:
    """The shutdown schedule of one SIGTERM (see the module docstring for the law)."""

    signalled_at: float = attrs.field(validator=_finite)
    """The instant SIGTERM arrived, on the caller's clock."""
    drain_timeout: float = attrs.field(validator=[_finite, _non_negative])
    """Seconds open claims get to complete (``drain_timeout_sec``)."""
    grace: float = attrs.field(default=DEFAULT_GRACE, validator=[_finite, _non_negative])
    """Seconds the hand-off gets past the drain deadline."""
    enforce_deadline: bool = True
    """False (test only): end only when the node is done, however long that takes."""

    @property
    def drain_deadline(self) -> float:
        """Open claims still open at this instant are released."""
        return self.signalled_at + self.drain_timeout

    @property
    def exit_deadline(self) -> float:
        """The process ends at this instant at the latest (if the deadline is enforced)."""
        return self.signalled_at + self.drain_timeout + self.grace

    def decide(self, now: float, *, open_claims: int, drain_started: bool, node_done: bool) -> Step:
        """The step at ``now``.

        ``open_claims``: claims of this worker neither completed nor released.
        ``drain_started``: DRAIN was already acted on.  ``node_done``: the node
        has nothing left to hand off (drained, superseded, or its coordination
        ended) and the release asked for by DRAIN has finished.
        """
        if not drain_started:
            if open_claims > 0 and now < self.drain_deadline:
                return Step.WAIT
            return Step.DRAIN
        if node_done:
            return Step.EXIT
        if self.enforce_deadline and now >= self.exit_deadline:
            return Step.EXIT
        return Step.WAIT

    def next_check(self, now: float, *, open_claims: int, drain_started: bool) -> float:
        """The earliest instant after which ``decide`` may answer differently with
        nothing but time passing (``now`` if it may already; ``math.inf`` if time
        alone never changes it).  A claim completing or the node finishing may
        change the answer sooner: the caller also looks when it learns of those."""
        if not drain_started:
            if open_claims > 0 and now < self.drain_deadline:
                return self.drain_deadline
            return now
        if not self.enforce_deadline:
            return math.inf
        return max(now, self.exit_deadline)
