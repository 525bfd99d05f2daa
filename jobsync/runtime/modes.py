"""What entering a Job builds, by mode, and how it is taken down.

Three modes (docs/USAGE_GUIDE.md): *standalone* (coordination disabled: no
backend, every task claimable), *observer* (a backend for reading and for
locks, no node) and *worker* (a backend, a ``Node``, the ``Driver`` thread
that ticks it and the ``CallbackRunner`` for ``on_rebalance``).  A
``Session`` holds the parts one Job built; the Job reads them and asks the
session to drain, deregister and tear down.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs

from jobsync.backends.base import Backend, LockSpec, SiteInfo
from jobsync.backends.url import open_backend
from jobsync.core.defences import Defences
from jobsync.core.errors import BackendUnavailable, JobSyncError
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.runtime import clock as clocks
from jobsync.runtime.config import CoordinationConfig, Settings
from jobsync.runtime.loop import CallbackRunner, Driver
from jobsync.runtime.node import Node, RebalanceEvent, Signal

log = logging.getLogger("jobsync.job")
_T = TypeVar("_T")


@attrs.define(eq=False)
class Session:
    """The backend, node, driver and callback thread one Job's ``__enter__`` built."""

    name: str
    site: str
    config: CoordinationConfig
    clock: clocks.Clock
    wait_on_enter: float
    backend: Backend | None = attrs.field(default=None, init=False)
    owns_backend: bool = attrs.field(default=False, init=False)
    node: Node | None = attrs.field(default=None, init=False)
    driver: Driver | None = attrs.field(default=None, init=False)
    callbacks: CallbackRunner | None = attrs.field(default=None, init=False)
    drain_signalled: bool = attrs.field(default=False, init=False)

    # -- entering ----------------------------------------------------------------
    def patiently(self, call: Callable[[], _T], deadline: float) -> _T:
        """Retry a transient failure with capped backoff until ``deadline``."""
        delay = 0.05
        while True:
            try:
                return call()
            except BackendUnavailable as error:
                if self.clock.now() + delay >= deadline:
                    raise TimeoutError(
                        f"node {self.name!r} of site {self.site!r}: the backend stayed "
                        f"unavailable for {self.wait_on_enter:g} s (last error: {error})"
                    ) from error
                log.warning(
                    "node %s: backend unavailable at enter (%s); retrying", self.name, error
                )
                clocks.sleep(delay)
                delay = min(delay * 2, 1.0)

    def open(self, source: Settings | str | Backend, deadline: float) -> Backend:
        """Open (or adopt) the backend, patiently."""

        def opened() -> Backend:
            if isinstance(source, (Settings, str)):
                url = source.url if isinstance(source, Settings) else source
                self.backend = open_backend(url, client=self.name)
                self.owns_backend = True
            else:
                self.backend = source
            return self.backend

        return self.patiently(opened, deadline)

    def backend_date(self, backend: Backend, deadline: float) -> datetime.date:
        """Today on the backend's clock (UTC)."""
        now = self.patiently(backend.now, deadline)
        return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()

    def observe(self, backend: Backend, deadline: float) -> SiteInfo | None:
        """Observer mode: the site's stored constants, if it exists."""
        return self.patiently(lambda: backend.site_info(self.site), deadline)

    def start_worker(
        self,
        backend: Backend,
        deadline: float,
        *,
        locks: Callable[[], Sequence[LockSpec]] | None,
        clear_existing_locks: bool,
        defences: Defences,
        on_rebalance: Callable[..., object] | None,
        between_ticks: Callable[[], None],
        capacity: float = 1.0,
    ) -> Node:
        """Worker mode: create the site if new, then run ``locks`` (the lock
        provider's registrations) and write them, build the node and start the
        coordination thread."""
        cfg = self.config
        self.patiently(
            lambda: backend.ensure_site(self.site, cfg.total_tokens, cfg.hash_function), deadline
        )
        if locks is not None:
            specs = locks()
            self.patiently(
                lambda: backend.replace_locks(self.site, self.name, specs, clear_existing_locks),
                deadline,
            )
        node = Node(
            backend,
            self.site,
            self.name,
            self.config,
            plan_timer=self.clock.now,
            defences=defences,
            capacity=capacity,
        )
        self.node = node
        if on_rebalance is not None:
            self.callbacks = CallbackRunner(on_rebalance, self.name)
        self.driver = Driver(node, self.clock, self._dispatch, between_ticks)
        self.driver.start()
        return node

    def wait_ready(self) -> None:
        """Block until the node is ready; raise what stopped it, or TimeoutError."""
        node, driver = self.node, self.driver
        assert node is not None and driver is not None
        done = driver.wait_for(
            lambda: node.ready or node.state in TERMINAL or driver.error is not None,
            self.wait_on_enter,
        )
        if driver.error is not None:
            raise driver.error
        if node.error is not None:
            raise node.error
        if not done or not node.ready:
            raise TimeoutError(
                f"node {self.name!r} of site {self.site!r} was not ready within "
                f"{self.wait_on_enter:g} s: still waiting for {node.waiting_for}"
            )

    def _dispatch(self, events: list[RebalanceEvent]) -> None:
        if self.callbacks is not None:
            self.callbacks.submit(events)

    # -- what the Job reads ----------------------------------------------------------
    @property
    def coordinating(self) -> bool:
        driver = self.driver
        return driver is not None and driver.alive and driver.error is None

    @property
    def error(self) -> BaseException | None:
        node, driver = self.node, self.driver
        return (driver.error if driver else None) or (node.error if node else None)

    def raise_if_stopped(self) -> None:
        """A superseded node or a crashed coordination thread is the user's to know."""
        node, driver = self.node, self.driver
        if node is not None and node.error is not None:
            raise node.error
        if driver is not None and driver.error is not None:
            raise driver.error

    def coordination_over(self) -> bool:
        """Nothing left for the node to hand off: it stopped, or its thread ended."""
        node, driver = self.node, self.driver
        return node is None or driver is None or node.state in TERMINAL or not driver.alive

    # -- leaving -----------------------------------------------------------------------
    def signal_drain(self) -> None:
        """Ask the coordination thread to drain (once)."""
        if self.driver is not None and not self.drain_signalled:
            self.drain_signalled = True
            self.driver.signal(Signal.DRAIN)

    def drain(self) -> bool:
        """Drain and wait for the node to end; True if it handed off in time."""
        node, driver = self.node, self.driver
        if node is None or driver is None:
            return True
        self.signal_drain()
        bound = self.config.heartbeat_timeout_sec + self.config.ack_timeout
        return driver.wait_for(lambda: node.state in TERMINAL, bound)

    def deregister(self) -> None:
        """Delete our row ourselves (the node's thread is not running), unless the
        node left already or a newer process owns the name."""
        node, backend = self.node, self.backend
        if (
            node is not None
            and backend is not None
            and node.registration is not None
            and node.state is not NodeState.SUPERSEDED
            and not (node.state is NodeState.STOPPED and node.draining)
        ):
            try:
                backend.deregister(self.site, self.name, node.registration.incarnation)
            except JobSyncError as error:
                log.warning("node %s: could not deregister: %s", self.name, error)

    def teardown(self, deregister: bool) -> None:
        """Stop the threads, optionally deregister, close what this session opened."""
        driver, backend = self.driver, self.backend
        if driver is not None:
            driver.stop(timeout=max(1.0, self.config.heartbeat_interval_sec))
        if deregister:
            self.deregister()
        if self.callbacks is not None:
            if not self.callbacks.close(self.config.callback_timeout_sec):
                log.warning("node %s: on_rebalance still running at shutdown", self.name)
            self.callbacks = None
        if backend is not None and self.owns_backend:
            backend.close()
