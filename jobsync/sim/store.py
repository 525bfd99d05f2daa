# Law: the simulator's backend is the shipped MemoryStore, unchanged in what it
# accepts; this module only adds what a simulation needs around it.
#
# - ``VirtualClock`` is the one true time of a run.  The store reads
#   ``true + db_offset``: a database clock that the scenario may step (within the
#   safety margin, docs/PROTOCOL.md section 4 "Clocks"), never a second time line.
# - ``SimBackend`` is a MemoryBackend handle with two additions, both outside
#   the verb's transaction: a releaser that never acknowledges (its
#   ``ack_releases`` raises BackendUnavailable while blocked, as a connection
#   that fails only for that statement would), and an observer told of every
#   accepted acknowledgement at its instant, so the checker can see whether
#   the releaser still claims what it handed over.
# - ``SimStore.fail_verb`` fails one named verb of one client (a blip that
#   lands on exactly the statement under test); ``slow_verbs`` delays one
#   (the statement runs, and stamps its time, after the other events of the
#   delay: request latency); ``clear_faults`` ends every injected fault at
#   once ("faults stop").
# - Adversarial hooks on every verb (``MemoryStore._inside``/``_committed``/
#   ``_contend``): ``lose_reply`` lets a verb commit and then loses its answer
#   (the client sees BackendUnavailable); ``pause_inside`` / ``pause_after``
#   stall the client inside a verb (holding the node rows that verb keeps
#   locked across its statements) or right after its commit; a verb that
#   meets a row lock is handed to ``on_contend`` (the cluster pauses the
#   process for the wait and judges its length: invariant 8).
"""The simulator's clock, store and per-process backend handle."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from jobsync.backends.base import ClusterView
from jobsync.backends.memory import MemoryBackend, MemoryStore, SiteState
from jobsync.core.defences import PRODUCTION, Defences
from jobsync.core.errors import BackendUnavailable

AckObserver = Callable[[str, int, frozenset[int]], None]


class VirtualClock:
    """The simulation's true time; the store reads ``now + db_offset``."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.db_offset = 0.0

    def __call__(self) -> float:
        return self.now + self.db_offset


class SimStore(MemoryStore):
    """A MemoryStore whose handles are ``SimBackend``s, with fault bookkeeping."""

    def __init__(self, clock: VirtualClock, defences: Defences = PRODUCTION) -> None:
        super().__init__(clock, sleeper=lambda _s: None, defences=defences)
        self.virtual = clock
        self.views: dict[str, ClusterView] = {}
        """The latest cluster view each client read (what its next plan is computed from)."""
        self.slow_any: dict[str, float] = {}
        """verb -> seconds: the next client to call it stalls first (whoever leads then)."""
        self.lose_reply: dict[tuple[str, str], int] = {}
        self.pause_inside: dict[tuple[str, str], float] = {}
        self.pause_after: dict[tuple[str, str], float] = {}
        self.pause_inside_any: dict[str, float] = {}
        """verb -> seconds: the next client to run it pauses inside it, holding its locks."""
        self.on_pause: Callable[[str, float, str], None] | None = None
        """Called as ``on_pause(client, seconds, why)``: stall the client's process now."""
        self.on_contend: Callable[[str, str, Sequence[object]], None] | None = None
        """Called as ``on_contend(client, verb, blockers)``; must raise (the verb fails)."""
        self.blocked_acks: set[str] = set()
        self.verb_failures: dict[tuple[str, str], int] = {}
        self.slow_verbs: dict[tuple[str, str], float] = {}
        self.on_ack: AckObserver | None = None
        self.on_slow: Callable[[str, float], None] | None = None
        """Called as ``on_slow(client, seconds)`` before a slowed verb's statement runs."""

    def connect(self, client: str) -> SimBackend:
        handle = SimBackend(self, client)
        with self._lock:
            self._handles.add(handle)
        return handle

    def site_state(self, site: str) -> SiteState | None:
        """The site's state, read in place (the checker's white-box view)."""
        return self._sites.get(site)

    def unreachable(self, client: str) -> bool:
        return self._outage or client in self._cut

    def clear_faults(self) -> None:
        """Every partition, outage, injected failure, delay and notification loss ends."""
        with self._lock:
            self._cut.clear()
            self._outage = False
            self._failures.clear()
            self._delays.clear()
            self._lost.clear()
            self.blocked_acks.clear()
            self.verb_failures.clear()
            self.slow_verbs.clear()
            self.slow_any.clear()
            self.lose_reply.clear()
            self.pause_inside.clear()
            self.pause_inside_any.clear()
            self.pause_after.clear()

    # -- the adversarial hooks of MemoryStore ----------------------------------------
    def _inside(self, client: str, verb: str, site: str, held: Sequence[tuple[str, str]]) -> None:
        verb = fault_name(verb)
        seconds = self.pause_inside.pop((client, verb), 0.0) or self.pause_inside_any.pop(verb, 0.0)
        if not seconds or self.on_pause is None:
            return
        holder = PausedVerb(client, verb, self.virtual.now + seconds)
        for key in held:
            self.node_locks.setdefault(key, holder)
        try:
            self.on_pause(client, seconds, f"paused inside {verb}")
        finally:
            for key in held:
                if self.node_locks.get(key) is holder:
                    del self.node_locks[key]

    def _committed(self, client: str, verb: str) -> None:
        verb = fault_name(verb)
        seconds = self.pause_after.pop((client, verb), 0.0)
        if seconds and self.on_pause is not None:
            self.on_pause(client, seconds, f"paused after {verb} committed")
        left = self.lose_reply.get((client, verb), 0)
        if left:
            self.lose_reply[client, verb] = left - 1
            raise BackendUnavailable(f"{verb} of {client!r} committed; its reply was lost")

    def _contend(self, client: str, verb: str, blockers: Sequence[object]) -> None:
        if self.on_contend is not None:
            self.on_contend(client, verb, blockers)
        super()._contend(client, verb, blockers)

    def fail_verb(self, client: str, verb: str, n: int = 1) -> None:
        """The next ``n`` calls of ``verb`` by ``client`` raise BackendUnavailable."""
        with self._lock:
            self.verb_failures[client, verb] = self.verb_failures.get((client, verb), 0) + n


FAULT_NAMES = {"glance": "read_nodes"}
"""Verbs that meet the faults armed for another: a node that does not lead reads
who leads with ``glance``, a leader with ``read_nodes``, one step of the node
under one name in the fault catalogue (``faults.VERBS``)."""


def fault_name(verb: str) -> str:
    return FAULT_NAMES.get(verb, verb)


class SimBackend(MemoryBackend):
    """One simulated process's connection: a MemoryBackend with the ack fault."""

    _store: SimStore

    def read_cluster(self, site: str) -> ClusterView:
        """As MemoryBackend; the view is kept: a plan is judged on what its leader read."""
        view = super().read_cluster(site)
        self._store.views[self.client] = view
        return view

    def _begin(self, verb: str) -> None:
        super()._begin(verb)
        store = self._store
        verb = fault_name(verb)
        left = store.verb_failures.get((self.client, verb), 0)
        if left:
            store.verb_failures[self.client, verb] = left - 1
            raise BackendUnavailable(f"injected failure of {verb} for {self.client!r}")
        slow = store.slow_verbs.pop((self.client, verb), 0.0) or store.slow_any.pop(verb, 0.0)
        if slow and store.on_slow is not None:
            store.on_slow(self.client, slow)  # the request is sent now, runs later

    def ack_releases(
        self, site: str, name: str, incarnation: int, tokens: Sequence[tuple[int, int]]
    ) -> frozenset[int]:
        store = self._store
        if self.client in store.blocked_acks:
            self._begin("ack_releases")
            raise BackendUnavailable(f"acknowledgements of {self.client!r} are blocked")
        acked = super().ack_releases(site, name, incarnation, tokens)
        if acked and store.on_ack is not None:
            store.on_ack(name, incarnation, acked)
        return acked

    def take_notification(self, site: str) -> bool:
        """The simulator's delivery of a notification: ``wait_for_change(site, 0)``
        without a round trip.  A partition or outage loses it, as do
        ``lose_notifications``; failures injected for verbs (``fail_next``) do not."""
        store = self._store
        if self._closed or store.unreachable(self.client):
            return False
        with store._lock:
            state = store._site(site)
            seen = self._seen.setdefault(site, state.signals)
            if state.signals <= seen:
                return False
            self._seen[site] = state.signals
            return True


class PausedVerb:
    """The holder of node rows locked by a verb paused inside its transaction."""

    def __init__(self, client: str, verb: str, until: float) -> None:
        self.client = client
        self.verb = verb
        self.until = until

    def __repr__(self) -> str:
        return f"<{self.verb} of {self.client!r} paused until {self.until:.3f}>"
