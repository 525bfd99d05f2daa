"""SQLite backend: processes on one host coordinate through one database file.

The verbs are grouped by what they do, one mixin per module over one
``session._Session`` (the connection, its transactions and the translation of
driver errors; its docstring says how every call's lock waits are bounded):

- ``membership``: sites and the node rows' lifecycle;
- ``planning``: the leader's reads and plans, acknowledgements, evictions;
- ``claims``: claims and completions, also in the caller's own transaction
  (base.py's ``TransactionalCompletion``);
- ``operations``: operators' verbs, locks, history, pruning, change waits.

Schema and migrations live in ``schema``, SQL text in ``queries``, row
conversions and token-row arithmetic in ``rows``.  Every protocol judgement
is ``jobsync.core.rules``': two judgements of an incarnation, as base.py
defines them, are *live* (``rules.is_live``: leadership, release
destinations, ``mark_leaving``) and *lease expired* (``rules.lease_expired``:
DirectAssign, ``reap_claims``).  An evicted incarnation is not live but holds
its lease until it runs out.

A user's write transaction held open (``complete_in`` or ``release_in``)
cannot hang a worker, but it does stall every writer of the file while it
lasts, and must be short.
"""

from __future__ import annotations

from jobsync.backends.sqlite.claims import _Claims
from jobsync.backends.sqlite.membership import _Membership
from jobsync.backends.sqlite.operations import _Operations
from jobsync.backends.sqlite.planning import _Planning


class SQLiteBackend(_Membership, _Planning, _Claims, _Operations):
    """The Backend protocol over one SQLite file shared by the processes of one host.

    The backend's clock is this host's clock (``clock``, ``time.time`` unless a
    test injects one): SQLite lives on one host by construction, so the host
    clock is the database clock.  One handle is one connection, thread-safe
    (calls are serialised on a lock).  ``busy_timeout`` bounds every call's
    waiting for locks (see ``session``'s docstring).  ``wait_for_change`` polls
    the site's signal counter every ``poll_interval`` seconds (at most 0.2).
    """
