"""How a Job wires SIGTERM: the handler, the watchdog, and what they act on.

``runtime/signals.py`` has the handler (flags only, no I/O) and the watchdog
(``runtime/shutdown.py``'s policy on a thread of its own).  This module gives
them the Job's parts: the handler stops claiming at once and wakes the
watchdog; the watchdog reads how many claims are open, hands off (releases
the open claims and drains, through the coordination thread if it runs, else
by deleting the node's row directly) and re-delivers SIGTERM once the node
is done or the deadline comes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import attrs

from jobsync.core.errors import JobSyncError
from jobsync.runtime.ledger import ClaimLedger
from jobsync.runtime.modes import Session
from jobsync.runtime.signals import SigtermHandler, SigtermWatchdog

log = logging.getLogger("jobsync.job")


@attrs.define(eq=False)
class SigtermGuard:
    """The SIGTERM handler and watchdog of one worker Job."""

    _session: Session
    _ledger: ClaimLedger
    _now: Callable[[], float] = attrs.field(kw_only=True)
    _halt: Callable[[], None] = attrs.field(kw_only=True)
    _enforce: bool = attrs.field(kw_only=True, alias="enforce_deadline")
    _handler: SigtermHandler | None = attrs.field(default=None, init=False)
    _watchdog: SigtermWatchdog | None = attrs.field(default=None, init=False)

    def install(self) -> bool:
        """Start the watchdog and install the handler; False if SIGTERM cannot be
        handled here (not the main thread), and then nothing stays installed."""
        session = self._session
        watchdog = SigtermWatchdog(
            session.name,
            now=self._now,
            drain_timeout=session.config.drain_timeout_sec,
            open_claims=lambda: len(self._ledger.open),
            hand_off=self._hand_off,
            node_done=session.coordination_over,
            redeliver=self._redeliver,
            enforce_deadline=self._enforce,
        )
        watchdog.start()  # before the handler, so no SIGTERM finds it missing
        self._watchdog = watchdog
        handler = SigtermHandler(self._on_sigterm)
        if handler.install():
            self._handler = handler
            return True
        self._watchdog = None
        watchdog.stop()
        return False

    def _on_sigterm(self) -> None:
        """Runs in the signal handler: flags and the watchdog's event only, no I/O."""
        self._halt()
        if self._watchdog is not None:
            self._watchdog.notify(self._now())

    def _hand_off(self) -> None:
        """On the watchdog's helper thread: release the open claims and drain, through
        the coordination thread if it runs, else by deleting our row directly."""
        session = self._session
        alive = session.driver is not None and session.driver.alive
        if alive:
            session.signal_drain()
        try:
            self._ledger.release_all()
        except JobSyncError as error:
            log.warning("node %s: could not release claims after SIGTERM: %s", session.name, error)
        if not alive:
            session.deregister()

    def _redeliver(self) -> None:
        handler = self._handler
        if handler is not None:
            handler.redeliver()

    def close(self) -> None:
        """Give SIGTERM back: re-deliver one received and not yet drained, else restore
        the previous handler; then stop the watchdog."""
        if self._handler is not None:
            handler, self._handler = self._handler, None
            if handler.received and not handler.drained:
                handler.redeliver()
            else:
                handler.restore()
        if self._watchdog is not None:  # after the handler: it may no longer wake it
            watchdog, self._watchdog = self._watchdog, None
            watchdog.stop()
