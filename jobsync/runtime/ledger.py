"""A Job's claim ledger: its open claims, and what became of each.

One duty: the bookkeeping between ``add_task`` and the claim's end.  A claim
is *open* (``open``: task key -> incarnation that claimed it) from a
successful claim until it is completed or released; a completion that failed
transiently is *queued* (retried while the lease lasts); a completion or
release made inside the user's own transaction is *uncertain* until that
transaction ends (settled if it committed, still ours if it rolled back, so
it is released at exit).  Completion is fenced by the claim, not the token's
current epoch (docs/PROTOCOL.md section 4, "Claims and completion").  Claims
whose reply was lost and completions a failover lost are the recovery's
(``runtime/recovery.py``), which the ledger tells of each claim and completion.

``statistics`` is a frozen ``JobStatistics`` value, replaced whole on every
count (under a lock: the SIGTERM watchdog may release claims on its own
thread).
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Sequence

import attrs

from jobsync.backends.base import ClaimRequest, CoordinationBackend
from jobsync.backends.capabilities import TransactionalCompletion
from jobsync.core.errors import BackendUnavailable, InvalidArgument, JobSyncError, LockTimeout
from jobsync.runtime.recovery import ClaimRecovery, by_incarnation
from jobsync.runtime.snapshot import ClaimSnapshot

log = logging.getLogger("jobsync.job")

UNCERTAIN_LIMIT = 1024
"""Transactional completions remembered before the Job asks which have committed."""


@attrs.frozen(kw_only=True)
class JobStatistics:
    """A Job's own counters (``Job.statistics()`` adds the node's and the backend's)."""

    claims: int = 0
    claims_refused: int = 0
    claim_errors: int = 0
    completions: int = 0
    completions_refused: int = 0
    completions_queued: int = 0
    completions_resent: int = 0
    """Completions recorded again after the database lost history (a failover)."""
    releases: int = 0

    def plus(self, **deltas: int) -> JobStatistics:
        """These counters with ``deltas`` added."""
        return attrs.evolve(self, **{k: getattr(self, k) + v for k, v in deltas.items()})

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class ClaimLedger:
    """Open, queued and uncertain claims of one Job, and the verbs that end them."""

    def __init__(self, site: str, name: str) -> None:
        self.site = site
        self.name = name
        self.backend: CoordinationBackend | None = None
        self.date = datetime.date.min
        self.open: dict[str, int] = {}
        self.queued: dict[str, float | None] = {}
        """Completions to retry, with the cost each was given."""
        self.uncertain: dict[str, int] = {}
        self.recovery = ClaimRecovery(self)
        """Doubtful claims and recent completions, for what the database may lose."""
        self.statistics = JobStatistics()
        self._count_lock = threading.Lock()
        self._trim_at = -float("inf")
        self.wake: Callable[[], None] = lambda: None
        """Tells the coordination thread a completion was queued (the Job sets it)."""

    def bind(self, backend: CoordinationBackend, date: datetime.date) -> None:
        self.backend, self.date = backend, date

    def count(self, **deltas: int) -> None:
        with self._count_lock:
            self.statistics = self.statistics.plus(**deltas)

    # -- claiming ------------------------------------------------------------------
    def claim(
        self, keys: Sequence[str], snap: ClaimSnapshot, token_of: Callable[[object], int]
    ) -> frozenset[str]:
        """Claim the keys whose tokens ``snap`` holds and that are not ours already."""
        backend = self.backend
        if backend is None or snap.incarnation is None:
            return frozenset()
        if any(key in self.uncertain for key in keys):
            self.settle_uncertain([key for key in keys if key in self.uncertain])
        requests = []
        for key in dict.fromkeys(keys):
            if key in self.open or key in self.uncertain:
                continue  # already ours: claiming twice must not mean processing twice
            token = token_of(key)
            if snap.owned[token]:
                requests.append(ClaimRequest(task_key=key, token=token, epoch=snap.epochs[token]))
        if not requests:
            return frozenset()
        with self.recovery.claiming:
            try:
                got = backend.claim(self.site, self.date, self.name, snap.incarnation, requests)
            except BackendUnavailable as error:
                self.count(claim_errors=1)
                log.warning("node %s: claim failed (%s); answering False", self.name, error)
                # it may have committed: give it back later
                self.recovery.doubt((r.task_key for r in requests), snap.incarnation)
                return frozenset()
            for key in got:
                self.open[key] = snap.incarnation
                self.recovery.taken(key)
        self.count(claims=len(got), claims_refused=len(requests) - len(got))
        return got

    # -- completing ------------------------------------------------------------------
    def complete(self, key: str, cost: float | None = None) -> bool:
        """Complete an open claim (with its explicit ``cost``, checked by the caller);
        a transient error queues it (False)."""
        incarnation, backend = self.open.get(key), self.backend
        if incarnation is None or backend is None:
            self.count(completions_refused=1)
            return False
        try:
            done = backend.complete(self.site, self.date, incarnation, [key], cost=cost)
        except BackendUnavailable:
            self.queued[key] = cost
            self.count(completions_queued=1)
            self.wake()  # the coordination thread retries it
            return False
        return self._settled(key, key in done)

    def complete_in(self, key: str, connection: object, cost: float | None = None) -> bool:
        """Complete an open claim inside the caller's transaction (uncertain until it ends)."""
        incarnation = self.open.get(key)
        if incarnation is None or self.backend is None:
            self.count(completions_refused=1)
            return False
        backend = self._transactional("complete")
        done = key in backend.complete_in(
            connection, self.site, self.date, incarnation, [key], cost=cost
        )
        self.open.pop(key, None)
        if done:
            self.uncertain[key] = incarnation
            self.recovery.completed_in_transaction(key, incarnation)
            self.count(completions=1)
        else:
            self.count(completions_refused=1)
        return done

    def _transactional(self, verb: str) -> TransactionalCompletion:
        backend: object = self.backend
        if not isinstance(backend, TransactionalCompletion):
            raise InvalidArgument(
                f"{verb} with connection=: the backend {type(backend).__name__} cannot "
                f"{verb} inside your transaction (it does not implement "
                f"TransactionalCompletion); call {verb}(task) without connection="
            )
        return backend

    def _settled(self, key: str, done: bool) -> bool:
        incarnation = self.open.pop(key, None)
        cost = self.queued.pop(key, None)
        if done:
            self.count(completions=1)
            if incarnation is not None:
                self.recovery.completed(key, incarnation, cost)
        else:
            self.count(completions_refused=1)
            log.debug("node %s: completion of %r refused (claim no longer held)", self.name, key)
        return done

    def flush_queued(self) -> None:
        """Retry the queued completions (stop at the first transient error)."""
        backend = self.backend
        groups: dict[tuple[int, float | None], list[str]] = {}
        for key, cost in sorted(self.queued.items()):
            if key in self.open:
                groups.setdefault((self.open[key], cost), []).append(key)
            else:
                self.queued.pop(key, None)
        for (incarnation, cost), group in groups.items():
            assert backend is not None
            try:
                done = backend.complete(self.site, self.date, incarnation, group, cost=cost)
            except BackendUnavailable:
                return
            for key in group:
                self._settled(key, key in done)

    def complete_all(self) -> int:
        """Complete every open claim in one batch per incarnation; how many were recorded."""
        backend = self.backend
        if backend is None or not self.open:
            return 0
        recorded = attempted = 0
        for incarnation, keys in by_incarnation(sorted(self.open.items())).items():
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

    # -- releasing ---------------------------------------------------------------------
    def release(self, key: str, connection: object | None) -> bool:
        """Give an open (or uncertain) claim back, inside ``connection``'s transaction if given."""
        incarnation = self.open.get(key, self.uncertain.get(key))
        backend = self.backend
        if incarnation is None or backend is None:
            return False
        if connection is not None:
            transactional = self._transactional("release")
            released = transactional.release_in(
                connection, self.site, self.date, incarnation, [key]
            )
        else:
            try:
                released = backend.release(self.site, self.date, incarnation, [key])
            except LockTimeout as error:
                raise LockTimeout(
                    f"release of task {key!r}: its claim row stayed locked by an open "
                    "transaction past the lock timeout; if it is your own transaction "
                    "that completed the task (connection=), roll that transaction back "
                    "to give the task back, or release it with connection= there"
                ) from error
        self.open.pop(key, None)
        self.queued.pop(key, None)
        if connection is None:
            self.uncertain.pop(key, None)
        else:  # settled when your transaction ends: released at exit if it rolled back
            self.uncertain[key] = incarnation
        self.count(releases=len(released))
        return key in released

    def release_all(self) -> None:
        """Release every open claim (exit by an exception, SIGTERM's drain deadline).
        May run on another thread than the user's: works on a copy."""
        backend = self.backend
        if backend is None:
            return
        for incarnation, keys in by_incarnation(dict(self.open).items()).items():
            backend.release(self.site, self.date, incarnation, keys)
            for key in keys:
                self.open.pop(key, None)
                self.queued.pop(key, None)
            self.count(releases=len(keys))

    def settle_uncertain(self, keys: list[str]) -> None:
        """Forget those of ``keys`` whose user transaction has committed: they are no
        longer open claims of ours (done or released).  Reads committed state only;
        on a transient error they stay uncertain, which is safe."""
        backend = self.backend
        if backend is None:
            return
        pairs = [(k, self.uncertain[k]) for k in keys if k in self.uncertain]
        for incarnation, group in by_incarnation(pairs).items():
            try:
                still = backend.open_claims(self.site, self.date, incarnation, group)
            except JobSyncError as error:
                log.warning("node %s: could not read open claims (%s)", self.name, error)
                return
            for key in group:
                if key not in still:
                    self.uncertain.pop(key, None)

    def release_uncertain(self) -> None:
        """Release claims completed inside user transactions: a no-op for those that
        committed (they are done), a release for those that rolled back."""
        backend, uncertain = self.backend, self.uncertain
        self.uncertain = {}
        if backend is None:
            return
        for incarnation, keys in by_incarnation(uncertain.items()).items():
            released = backend.release(self.site, self.date, incarnation, keys)
            self.count(releases=len(released))

    def resend_recent(self) -> None:
        """After the database lost history (a failover): record the recent completions
        again and give back those made in user transactions (``ClaimRecovery``)."""
        self.recovery.resend_recent()

    def between_ticks(self, now: float, lease_valid: bool, interval: float) -> None:
        """On the coordination thread: retry queued completions while the lease lasts,
        and past ``UNCERTAIN_LIMIT`` forget the settled uncertain ones (at most once
        per ``interval``)."""
        if self.queued and lease_valid:
            self.flush_queued()
        if self.recovery.doubtful:
            self.recovery.release_doubtful()
        if len(self.uncertain) > UNCERTAIN_LIMIT and now >= self._trim_at:
            self._trim_at = now + interval
            self.settle_uncertain(list(self.uncertain))
