"""Upgrading a database from the original jobsync (PyPI ``jobsync`` 1.x).

``python -m jobsync migrate`` runs ``command.migrate``: it finds the
original's tables (``jobsync.backends.postgres.original``), prints the plan
(``plan``), and either upgrades the database at once or, while original
workers still heartbeat, arms the zero-downtime handover that the first new
worker to start after the last original worker stops carries out.  This
package sits above the backends and below the command line; the runtime never
imports it (a worker meets the original's tables through its backend).
"""

from jobsync.upgrade.command import Outcome, migrate

__all__ = ["Outcome", "migrate"]
