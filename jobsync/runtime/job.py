"""The Job a user holds: the README's API over a Node, a Driver and a backend.

Guarantees users get (DESIGN.md section 6) and where they come from here:

- ``can_claim_task`` reads one immutable snapshot and the local boot clock:
  True only for tokens this incarnation holds, with no release pending,
  while its own lease lasts and before a drain or SIGTERM began.
- ``add_task`` is the durable, epoch-fenced claim; it returns False (never
  raises) on a transient backend error.  Completion is fenced by the claim.
- Leaving the ``with`` block normally completes the open claims, then
  drains (revokes acknowledged, row deleted); leaving it by an exception
  releases them so the next owner redoes the work.
- SIGTERM: the handler only sets flags; a watchdog thread follows
  ``runtime/shutdown.py`` (open claims until ``drain_timeout_sec``, then
  release and drain), and the process ends by ``drain_timeout_sec`` plus a
  one-second grace whatever the backend does (``runtime/signals.py``).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias, TypeVar

from jobsync.backends.base import Backend, ClaimRequest, LockSpec
from jobsync.backends.url import open_backend
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import (
    BackendUnavailable,
    ConfigError,
    InvalidArgument,
    JobSyncError,
    LockTimeout,
)
from jobsync.core.hashing import token_function
from jobsync.core.lifecycle import TERMINAL, NodeState
from jobsync.core.patterns import validate_node_name
from jobsync.runtime import clock as clocks
from jobsync.runtime.config import CoordinationConfig, Settings
from jobsync.runtime.config import config as default_settings
from jobsync.runtime.health import HealthServer, serve_health
from jobsync.runtime.loop import CallbackRunner, Driver
from jobsync.runtime.node import Node, RebalanceEvent, Signal
from jobsync.runtime.signals import SigtermHandler, SigtermWatchdog
from jobsync.runtime.snapshot import ClaimSnapshot
from jobsync.runtime.task import (
    Fixed,
    Standalone,
    Task,
    audit_rows,
    check_port,
    check_seconds,
    coordination_of,
    lock_rows,
    lock_spec,
    task_key,
)

__all__ = ["UNCERTAIN_LIMIT", "Job", "LockItem", "Task"]

log = logging.getLogger("jobsync.job")
_T = TypeVar("_T")

LockItem: TypeAlias = tuple[object, "str | Sequence[str]", "str | None"]

UNCERTAIN_LIMIT = 1024
"""Transactional completions remembered before the Job asks which have committed."""


class Job:
    """One worker of a site, used as a context manager.  See the README for the loop."""

    def __init__(
        self,
        node_name: str,
        site: str,
        config: Settings | str | Backend | None = None,
        *,
        coordination_config: CoordinationConfig | None = None,
        wait_on_enter: float = 120,
        wait_on_exit: float = 0,
        lock_provider: Callable[[Job], Iterable[LockItem] | None] | None = None,
        clear_existing_locks: bool = False,
        on_rebalance: Callable[..., object] | None = None,
        date: datetime.date | None = None,
        handle_sigterm: bool = True,
        observer: bool = False,
        clock: clocks.Clock | None = None,
        http_port: int | None = None,
        http_host: str = "127.0.0.1",
        _defences: Defences = PRODUCTION,
    ) -> None:
        """``_defences`` is for jobsync's own tests of its defences; never pass it."""
        self.name = validate_node_name(node_name)
        if not isinstance(site, str) or not site:
            raise InvalidArgument(f"site must be a non-empty string, got {site!r}")
        self.site = site
        self._wait_on_enter = check_seconds("wait_on_enter", wait_on_enter, allow_zero=False)
        self._wait_on_exit = check_seconds("wait_on_exit", wait_on_exit, allow_zero=True)
        for label, fn in (("lock_provider", lock_provider), ("on_rebalance", on_rebalance)):
            if fn is not None and not callable(fn):
                raise InvalidArgument(f"{label} must be callable, got {fn!r}")
        if date is not None and not isinstance(date, datetime.date):
            raise InvalidArgument(f"date must be a datetime.date, got {date!r}")
        if coordination_config is not None and not isinstance(
            coordination_config, CoordinationConfig
        ):
            raise ConfigError(
                f"coordination_config must be a CoordinationConfig, got {coordination_config!r}"
            )
        self._source = default_settings if config is None else config
        if not isinstance(self._source, (Settings, str)) and not isinstance(self._source, Backend):
            raise ConfigError(
                f"config must be jobsync.config, a backend URL or a Backend, got {config!r}"
            )
        self.config = coordination_config or coordination_of(self._source)
        self.observer = bool(observer)
        self._http = (http_host, check_port(http_port, self.observer))
        self.health_server: HealthServer | None = None
        self._beats = (0, -1.0)  # (heartbeats seen, local time the count last grew)
        self._lock_provider = lock_provider
        self._clear_existing_locks = bool(clear_existing_locks)
        self._on_rebalance = on_rebalance
        self._handle_sigterm = bool(handle_sigterm)
        self._defences = _defences
        self._clock = clock or clocks.SystemClock()
        self._now = self._clock.now
        self._token = token_function(self.config.total_tokens, self.config.hash_function)
        self._date = date
        self._backend: Backend | None = None
        self._owns_backend = False
        self._node: Node | None = None
        self._driver: Driver | None = None
        self._callbacks: CallbackRunner | None = None
        self._sigterm: SigtermHandler | None = None
        self._watchdog: SigtermWatchdog | None = None
        self._holder: Any = Fixed(ClaimSnapshot.empty(self.config.total_tokens))
        self._explicit_config = coordination_config is not None
        self._used = False
        self._halted = False
        self._drain_signalled = False
        self._open: dict[str, int] = {}
        self._queued: set[str] = set()
        # Completed (or released) inside the user's transaction: settled if it
        # committed, still our open claim if it rolled back.  Released at exit (a
        # no-op once settled); past UNCERTAIN_LIMIT the settled ones are forgotten.
        self._uncertain: dict[str, int] = {}
        self._trim_at = -float("inf")
        self._collecting: list[LockSpec] | None = None
        self._standalone_claims: set[str] = set()
        self._entered = False
        self.counters: dict[str, int] = {
            "claims": 0,
            "claims_refused": 0,
            "claim_errors": 0,
            "completions": 0,
            "completions_refused": 0,
            "completions_queued": 0,
            "releases": 0,
        }

    # -- entering and leaving --------------------------------------------------
    def __enter__(self) -> Job:
        if self._entered or self._used:
            raise InvalidArgument(
                f"Job {self.name!r} was already entered; a Job is entered once (make a new one)"
            )
        self._used = True
        if not self.config.enabled:
            self._holder = Standalone(self.config.total_tokens)
            self._date = self._date or datetime.datetime.now(datetime.timezone.utc).date()
            self._start_health()
            self._entered = True
            return self
        try:
            self._enter()
        except BaseException:
            self._teardown(deregister=True)
            raise
        self._entered = True
        return self

    def _enter(self) -> None:
        deadline = self._now() + self._wait_on_enter
        backend = self._patiently(self._open_backend, deadline)
        cfg = self.config
        if self._date is None:
            now = self._patiently(backend.now, deadline)
            self._date = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
        if self.observer:
            info = self._patiently(lambda: backend.site_info(self.site), deadline)
            if info is not None:  # hash task ids with the site's constants, not ours
                self._token = token_function(info.total_tokens, info.hash_function)
            return
        self._patiently(
            lambda: backend.ensure_site(self.site, cfg.total_tokens, cfg.hash_function), deadline
        )
        if self._lock_provider is not None:
            self._run_lock_provider(backend, deadline)
        node = Node(
            backend, self.site, self.name, cfg, plan_timer=self._now, defences=self._defences
        )
        self._node = node
        self._holder = node
        if self._on_rebalance is not None:
            self._callbacks = CallbackRunner(self._on_rebalance, self.name)
        self._driver = Driver(node, self._clock, self._dispatch, self._between_ticks)
        self._driver.start()
        self._start_health()
        driver = self._driver
        done = driver.wait_for(
            lambda: node.ready or node.state in TERMINAL or driver.error is not None,
            self._wait_on_enter,
        )
        if driver.error is not None:
            raise driver.error
        if node.error is not None:
            raise node.error
        if not done or not node.ready:
            raise TimeoutError(
                f"node {self.name!r} of site {self.site!r} was not ready within "
                f"{self._wait_on_enter:g} s: still waiting for {node.waiting_for}"
            )
        if self._handle_sigterm:
            self._install_sigterm()

    def _start_health(self) -> None:
        host, port = self._http
        if port is not None:
            self.health_server = serve_health(self, port=port, host=host)

    def _patiently(self, call: Callable[[], _T], deadline: float) -> _T:
        """Retry a transient failure with capped backoff until ``deadline``."""
        delay = 0.05
        while True:
            try:
                return call()
            except BackendUnavailable as error:
                if self._now() + delay >= deadline:
                    raise TimeoutError(
                        f"node {self.name!r} of site {self.site!r}: the backend stayed "
                        f"unavailable for {self._wait_on_enter:g} s (last error: {error})"
                    ) from error
                log.warning(
                    "node %s: backend unavailable at enter (%s); retrying", self.name, error
                )
                clocks.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _open_backend(self) -> Backend:
        source = self._source
        if isinstance(source, (Settings, str)):
            url = source.url if isinstance(source, Settings) else source
            self._backend = open_backend(url, client=self.name)
            self._owns_backend = True
        else:
            self._backend = source
        return self._backend

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._entered:
            return
        self._entered = False
        if self._node is None:
            self._teardown(deregister=False)
            return
        try:
            if exc_type is None:
                self.write_audit()
            else:
                self._release_all()
            self._release_uncertain()
        except JobSyncError as error:
            log.warning("node %s: could not settle claims at exit: %s", self.name, error)
        clocks.sleep(self._wait_on_exit)
        self.drain()
        self._teardown(deregister=True)
        if exc_type is None:
            self._raise_if_stopped()

    def drain(self) -> bool:
        """Stop claiming, hand every token off and leave; True if handed off in time.

        Blocks for at most ``heartbeat_timeout + ack_timeout`` seconds.
        """
        node, driver = self._node, self._driver
        if node is None or driver is None:
            return True
        self._halted = True
        if not self._drain_signalled:
            self._drain_signalled = True
            driver.signal(Signal.DRAIN)
        bound = self.config.heartbeat_timeout_sec + self.config.ack_timeout
        return driver.wait_for(lambda: node.state in TERMINAL, bound)

    def _deregister(self) -> None:
        """Delete our row ourselves (the node's thread is not running), unless the
        node left already or a newer process owns the name."""
        node, backend = self._node, self._backend
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

    def _teardown(self, deregister: bool) -> None:
        driver, backend = self._driver, self._backend
        if driver is not None:
            driver.stop(timeout=max(1.0, self.config.heartbeat_interval_sec))
        if deregister:
            self._deregister()
        if self._callbacks is not None:
            if not self._callbacks.close(self.config.callback_timeout_sec):
                log.warning("node %s: on_rebalance still running at shutdown", self.name)
            self._callbacks = None
        if backend is not None and self._owns_backend:
            backend.close()
        if self.health_server is not None:
            self.health_server.close()
            self.health_server = None
        if self._sigterm is not None:
            handler, self._sigterm = self._sigterm, None
            if handler.received and not handler.drained:
                handler.redeliver()
            else:
                handler.restore()
        if self._watchdog is not None:  # after the handler: it may no longer wake it
            watchdog, self._watchdog = self._watchdog, None
            watchdog.stop()

    # -- SIGTERM -----------------------------------------------------------------
    def _install_sigterm(self) -> None:
        watchdog = SigtermWatchdog(
            self.name,
            now=self._now,
            drain_timeout=self.config.drain_timeout_sec,
            open_claims=lambda: len(self._open),
            hand_off=self._hand_off_after_sigterm,
            node_done=self._coordination_over,
            redeliver=self._redeliver,
            enforce_deadline=self._defences.sigterm_deadline,
        )
        watchdog.start()  # before the handler, so no SIGTERM finds it missing
        self._watchdog = watchdog
        handler = SigtermHandler(self._on_sigterm)
        if handler.install():
            self._sigterm = handler
        else:
            self._watchdog = None
            watchdog.stop()

    def _on_sigterm(self) -> None:
        """Runs in the signal handler: flags and the watchdog's event only, no I/O."""
        self._halted = True
        if self._watchdog is not None:
            self._watchdog.notify(self._now())

    def _hand_off_after_sigterm(self) -> None:
        """On the watchdog's helper thread: release the open claims and drain, through
        the coordination thread if it runs, else by deleting our row directly."""
        driver = self._driver
        alive = driver is not None and driver.alive
        if alive and driver is not None and not self._drain_signalled:
            self._drain_signalled = True
            driver.signal(Signal.DRAIN)
        try:
            self._release_all()
        except JobSyncError as error:
            log.warning("node %s: could not release claims after SIGTERM: %s", self.name, error)
        if not alive:
            self._deregister()

    def _coordination_over(self) -> bool:
        """Nothing left for the node to hand off: it stopped, or its thread ended."""
        node, driver = self._node, self._driver
        return node is None or driver is None or node.state in TERMINAL or not driver.alive

    def _redeliver(self) -> None:
        handler = self._sigterm
        if handler is not None:
            handler.redeliver()

    def _between_ticks(self) -> None:
        """On the coordination thread after each tick: retries and bookkeeping."""
        if self._node is not None and self._node.stats["heartbeats"] != self._beats[0]:
            self._beats = (self._node.stats["heartbeats"], self._now())
        if self._queued and self._node is not None and self._node.lease_valid(self._now()):
            self._flush_queued()
        if len(self._uncertain) > UNCERTAIN_LIMIT and self._now() >= self._trim_at:
            self._trim_at = self._now() + self.config.rebalance_check_interval_sec
            self._settle_uncertain(list(self._uncertain))

    # -- the hot path ---------------------------------------------------------
    def can_claim_task(self, task: object) -> bool:
        """True iff this worker may take ``task`` now (never raises on backend trouble)."""
        snap = self._holder.snapshot
        key = task.key if type(task) is Task else task
        return (
            snap.owned[self._token(key)] == 1 and self._now() < snap.lease_deadline
        ) and not self._halted

    def task_to_token(self, task_id: object) -> int:
        return self._token(task_key(task_id))

    # -- claims ------------------------------------------------------------------
    def add_task(self, task: object) -> bool:
        """Durably claim ``task``; False if another worker holds or finished it, or on error."""
        return bool(self._claim([task]))

    def add_tasks(self, tasks: Iterable[object]) -> set[object]:
        """Claim many in one round trip; return the inputs that were claimed."""
        return self._claim(list(tasks))

    def _raise_if_stopped(self) -> None:
        """A superseded node or a crashed coordination thread is the user's to know."""
        node, driver = self._node, self._driver
        if node is not None and node.error is not None:
            raise node.error
        if driver is not None and driver.error is not None:
            raise driver.error

    def _claim(self, tasks: list[object]) -> set[object]:
        self._raise_if_stopped()
        keys = [task_key(t) for t in tasks]
        if not self.config.enabled:
            fresh = {
                t for t, k in zip(tasks, keys, strict=True) if k not in self._standalone_claims
            }
            self._standalone_claims.update(keys)
            return fresh
        backend, snap = self._backend, self._holder.snapshot
        if backend is None or self._halted or snap.incarnation is None:
            return set()
        now = self._now()
        if now >= snap.lease_deadline:
            return set()
        if any(key in self._uncertain for key in keys):
            self._settle_uncertain([key for key in keys if key in self._uncertain])
        requests = []
        for key in dict.fromkeys(keys):
            if key in self._open or key in self._uncertain:
                continue  # already ours: claiming twice must not mean processing twice
            token = self._token(key)
            if snap.owned[token]:
                requests.append(ClaimRequest(task_key=key, token=token, epoch=snap.epochs[token]))
        if not requests:
            return set()
        try:
            got = backend.claim(self.site, self.date, self.name, snap.incarnation, requests)
        except BackendUnavailable as error:
            self.counters["claim_errors"] += 1
            log.warning("node %s: claim failed (%s); answering False", self.name, error)
            return set()
        for key in got:
            self._open[key] = snap.incarnation
        self.counters["claims"] += len(got)
        self.counters["claims_refused"] += len(requests) - len(got)
        return {t for t, k in zip(tasks, keys, strict=True) if k in got}

    def complete(self, task: object, connection: object | None = None) -> bool:
        """Mark a task this Job claimed as done; True if recorded.

        With ``connection`` (your own psycopg or sqlite3 connection, inside your
        open transaction) the completion commits or rolls back with your side
        effect; if it returns False, roll your transaction back.  If your
        transaction rolls back after a True, the claim stays yours and is
        released when the Job exits, so another worker redoes the task.
        Without ``connection``, a transient error queues the completion for
        retry while the lease lasts (returns False;
        ``statistics()['completions_queued']``).
        """
        key = task_key(task)
        if not self.config.enabled:
            return key in self._standalone_claims
        if connection is not None:
            return self._complete_in(key, connection)
        incarnation = self._open.get(key)
        backend = self._backend
        if incarnation is None or backend is None:
            self.counters["completions_refused"] += 1
            return False
        try:
            done = backend.complete(self.site, self.date, incarnation, [key], connection)
        except BackendUnavailable:
            if connection is not None:
                raise
            self._queued.add(key)
            self.counters["completions_queued"] += 1
            return False
        return self._settled(key, key in done)

    def _complete_in(self, key: str, connection: object) -> bool:
        incarnation, backend = self._open.get(key), self._backend
        if incarnation is None or backend is None:
            self.counters["completions_refused"] += 1
            return False
        done = key in backend.complete(self.site, self.date, incarnation, [key], connection)
        self._open.pop(key, None)
        if done:
            self._uncertain[key] = incarnation
            self.counters["completions"] += 1
        else:
            self.counters["completions_refused"] += 1
        return done

    def _settled(self, key: str, done: bool) -> bool:
        self._open.pop(key, None)
        self._queued.discard(key)
        if done:
            self.counters["completions"] += 1
        else:
            self.counters["completions_refused"] += 1
            log.debug("node %s: completion of %r refused (claim no longer held)", self.name, key)
        return done

    def _flush_queued(self) -> None:
        backend = self._backend
        keys = sorted(self._queued)
        by_inc: dict[int, list[str]] = {}
        for key in keys:
            if key in self._open:
                by_inc.setdefault(self._open[key], []).append(key)
            else:
                self._queued.discard(key)
        for incarnation, group in by_inc.items():
            assert backend is not None
            try:
                done = backend.complete(self.site, self.date, incarnation, group)
            except BackendUnavailable:
                return
            for key in group:
                self._settled(key, key in done)

    def release(self, task: object, connection: object | None = None) -> bool:
        """Give a claimed task back (it failed); another worker may claim it.

        With ``connection`` (as for ``complete``: your own connection, inside your
        open transaction) the release commits or rolls back with your
        transaction; use it for a task you completed with ``connection=`` in that
        same transaction, whose claim row your transaction holds locked.  If your
        transaction rolls back, the claim stays yours and is released when the Job
        exits.  Without ``connection``, a claim row that another transaction
        keeps locked (usually your own open one) is waited on only for the
        backend's lock timeout: then ``LockTimeout`` is raised, naming the task.
        """
        key = task_key(task)
        incarnation = self._open.get(key, self._uncertain.get(key))
        backend = self._backend
        if incarnation is None or backend is None:
            return False
        try:
            released = backend.release(self.site, self.date, incarnation, [key], connection)
        except LockTimeout as error:
            if connection is not None:
                raise
            raise LockTimeout(
                f"release of task {key!r}: its claim row stayed locked by an open "
                "transaction past the lock timeout; if your own transaction completed "
                "or holds it, pass connection= to release it inside that transaction"
            ) from error
        self._open.pop(key, None)
        self._queued.discard(key)
        if connection is None:
            self._uncertain.pop(key, None)
        else:  # settled when your transaction ends: released at exit if it rolled back
            self._uncertain[key] = incarnation
        self.counters["releases"] += len(released)
        return key in released

    def _release_all(self) -> None:
        """Release every open claim (exit by an exception, SIGTERM's drain deadline).
        May run on another thread than the user's: works on a copy."""
        backend = self._backend
        if backend is None:
            return
        by_inc: dict[int, list[str]] = {}
        for key, incarnation in dict(self._open).items():
            by_inc.setdefault(incarnation, []).append(key)
        for incarnation, keys in by_inc.items():
            backend.release(self.site, self.date, incarnation, keys)
            for key in keys:
                self._open.pop(key, None)
                self._queued.discard(key)
            self.counters["releases"] += len(keys)

    def _settle_uncertain(self, keys: list[str]) -> None:
        """Forget those of ``keys`` whose user transaction has committed: they are no
        longer open claims of ours (done or released).  Reads committed state only;
        on a transient error they stay uncertain, which is safe."""
        backend = self._backend
        if backend is None:
            return
        by_inc: dict[int, list[str]] = {}
        for key in keys:
            incarnation = self._uncertain.get(key)
            if incarnation is not None:
                by_inc.setdefault(incarnation, []).append(key)
        for incarnation, group in by_inc.items():
            try:
                still = backend.open_claims(self.site, self.date, incarnation, group)
            except JobSyncError as error:
                log.warning("node %s: could not read open claims (%s)", self.name, error)
                return
            for key in group:
                if key not in still:
                    self._uncertain.pop(key, None)

    def _release_uncertain(self) -> None:
        """Release claims completed inside user transactions: a no-op for those that
        committed (they are done), a release for those that rolled back."""
        backend, uncertain = self._backend, self._uncertain
        self._uncertain = {}
        if backend is None:
            return
        by_inc: dict[int, list[str]] = {}
        for key, incarnation in uncertain.items():
            by_inc.setdefault(incarnation, []).append(key)
        for incarnation, keys in by_inc.items():
            released = backend.release(self.site, self.date, incarnation, keys)
            self.counters["releases"] += len(released)

    def write_audit(self) -> int:
        """Complete every open claim of this Job in one batch; return how many were recorded."""
        backend = self._backend
        if backend is None or not self._open:
            return 0
        by_inc: dict[int, list[str]] = {}
        for key, incarnation in sorted(self._open.items()):
            by_inc.setdefault(incarnation, []).append(key)
        recorded = attempted = 0
        for incarnation, keys in by_inc.items():
            done = backend.complete(self.site, self.date, incarnation, keys)
            recorded += sum(self._settled(key, key in done) for key in keys)
            attempted += len(keys)
        if recorded < attempted:
            log.warning(
                "node %s: %d completion(s) refused: those claims were released when this "
                "worker lost its lease, and their tasks go to the new owner",
                self.name,
                attempted - recorded,
            )
        return recorded

    def get_audit(self) -> list[dict[str, object]]:
        """This site's claims and completions for the Job's date."""
        backend = self._require_backend()
        return audit_rows(backend.read_audit(self.site, self.date))

    # -- locks -------------------------------------------------------------------
    def register_task_locks_bulk(self, items: Iterable[LockItem]) -> int:
        """Pin tasks' tokens to nodes matching patterns: ``[(task_id, patterns, reason), ...]``."""
        specs = [lock_spec(item, self._token) for item in items]
        return self._write_locks(specs)

    def register_lock(
        self,
        task_id: object,
        patterns: str | Sequence[str],
        reason: str | None = None,
        expires_in_days: float | None = None,
    ) -> int:
        """Pin one task's token; ``expires_in_days`` on the backend's clock."""
        if expires_in_days is not None:
            check_seconds("expires_in_days", expires_in_days, allow_zero=False)
        spec = lock_spec((task_id, patterns, reason), self._token, expires_in_days)
        return self._write_locks([spec])

    def _write_locks(self, specs: list[LockSpec]) -> int:
        if self._collecting is not None:
            self._collecting.extend(specs)
            return len(specs)
        backend = self._require_backend()
        if self.observer and backend.site_info(self.site) is None:
            # An operator may pin tasks before the first worker starts, but only with
            # the site's constants said explicitly: a guess would fix them wrongly.
            if not self._explicit_config:
                raise InvalidArgument(
                    f"site {self.site!r} does not exist yet: pass coordination_config with "
                    "its total_tokens and hash_function to create it, or start a worker first"
                )
            cfg = self.config
            backend.ensure_site(self.site, cfg.total_tokens, cfg.hash_function)
        return backend.replace_locks(self.site, self.name, specs, clear_existing=False)

    def _run_lock_provider(self, backend: Backend, deadline: float) -> None:
        assert self._lock_provider is not None
        self._collecting = []
        try:
            returned = self._lock_provider(self)
            if returned is not None:
                self._collecting.extend(lock_spec(item, self._token) for item in returned)
            specs, self._collecting = self._collecting, None
        finally:
            self._collecting = None
        self._patiently(
            lambda: backend.replace_locks(self.site, self.name, specs, self._clear_existing_locks),
            deadline,
        )

    def list_locks(self) -> list[dict[str, object]]:
        """Every unexpired lock of the site, with the lock that decides its token on conflict."""
        backend = self._require_backend()
        return lock_rows(backend.list_locks(self.site))

    def clear_locks_by_creator(self, creator: str) -> int:
        validate_node_name(creator)
        return self._require_backend().clear_locks(self.site, creator)

    def clear_all_locks(self) -> int:
        return self._require_backend().clear_locks(self.site, None)

    # -- what users read -------------------------------------------------------------
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
        return self._node.token_version if self._node is not None else 0

    @property
    def draining(self) -> bool:
        """True once this worker stopped claiming for good (drain, SIGTERM, superseded)."""
        node = self._node
        return self._halted or (node is not None and node.state in TERMINAL)

    def am_i_leader(self) -> bool:
        return self._node is not None and self._node.is_leader

    def am_i_healthy(self) -> bool:
        """Live and ready: the coordination thread runs and the lease is valid."""
        if not self.config.enabled:
            return self._entered
        node, driver = self._node, self._driver
        return (
            node is not None
            and driver is not None
            and driver.alive
            and driver.error is None
            and node.state is NodeState.ACTIVE
            and node.lease_valid(self._now())
        )

    def get_active_nodes(self) -> list[str]:
        now, nodes = self._require_backend().read_nodes(self.site)
        return [n.name for n in nodes if n.is_live(now)]

    def get_dead_nodes(self) -> list[str]:
        now, nodes = self._require_backend().read_nodes(self.site)
        return [n.name for n in nodes if not n.is_live(now)]

    def get_coordination_status(self) -> dict[str, object]:
        node, driver = self._node, self._driver
        error = (driver.error if driver else None) or (node.error if node else None)
        return {
            "node": self.name,
            "site": self.site,
            "state": node.state.value if node else ("observer" if self.observer else "standalone"),
            "incarnation": node.incarnation if node else None,
            "leader": self.am_i_leader(),
            "healthy": self.am_i_healthy(),
            "draining": self.draining,
            "tokens": len(self.my_tokens),
            "token_version": self.token_version,
            "generation": node.generation if node else None,
            "waiting_for": node.waiting_for if node else None,
            "open_claims": len(self._open),
            "coordinating": driver is not None and driver.alive and driver.error is None,
            "error": None if error is None else str(error),
            "heartbeat_age_sec": self._now() - self._beats[1] if self._beats[0] else None,
        }

    def statistics(self) -> dict[str, int]:
        stats = dict(self.counters)
        if self._node is not None:
            stats.update(self._node.stats)
        if self._callbacks is not None:
            stats["callback_calls"] = self._callbacks.calls
            stats["callback_errors"] = self._callbacks.errors
        if self._backend is not None:
            stats.update({f"backend_{k}": v for k, v in self._backend.statistics().items()})
        return stats

    def _require_backend(self) -> Backend:
        if not self.config.enabled:
            raise InvalidArgument(
                f"Job {self.name!r} runs standalone (coordination disabled): it has no backend"
            )
        if self._backend is None:
            raise InvalidArgument(f"Job {self.name!r} has no backend yet: enter it first")
        return self._backend

    def _dispatch(self, events: list[RebalanceEvent]) -> None:
        if self._callbacks is not None:
            self._callbacks.submit(events)
