"""The in-memory backend: a shared, thread-safe store and one handle per client.

``MemoryStore`` holds the state of any number of sites; ``store.connect(client)``
returns a ``MemoryBackend``, one client's "connection", implementing the
``Backend`` protocol of base.py, and ``TransactionalCompletion`` through
``MemoryTransaction``, exactly as their docstrings state (the contract is
written there, not here).  Tests, the simulator and ``memory://`` URLs use it.

Modules, each named for what it holds:

- ``store``: ``MemoryStore``, its fault knobs and the simulator's hooks;
- ``handle``: ``MemoryBackend``, one client's handle (its verbs, in mixins);
- ``transaction``: ``MemoryTransaction``, a user's open transaction;
- ``site``: ``SiteState`` (one site, and what each verb does to it) and
  ``TokenRows``;
- ``records``: the per-site ``ClaimLedger`` and ``LockTable``.

Every protocol judgement (liveness, lease expiry, leadership, takeovers and
fences, whether a plan still fits what it read, tombstones, purging, overdue
releases) is made by ``jobsync.core.rules``, which the site state calls; this
package only keeps the rows, runs each verb atomically and injects faults.

Atomicity: every verb runs under the store's one ``RLock`` and reads the
injected clock once, inside it; that reading is the verb's statement clock.
Waiters of ``wait_for_change`` sleep on a ``Condition`` of the same lock.
"""

from __future__ import annotations

from jobsync.backends.memory.handle import MemoryBackend
from jobsync.backends.memory.site import SiteState
from jobsync.backends.memory.store import CommitHook, MemoryStore
from jobsync.backends.memory.transaction import MemoryTransaction

__all__ = ["CommitHook", "MemoryBackend", "MemoryStore", "MemoryTransaction", "SiteState"]
