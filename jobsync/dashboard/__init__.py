"""The operator's live dashboard: ``jobsync dashboard --dsn URL --site S``.

A page served by the library itself (``server``): the token map, the
workers, the rebalance timeline, locks and unsatisfied pins, updated live
from one shared poll of the database.  ``snapshot`` builds the JSON document
the page draws; ``static/`` holds the page's every asset.  It sits on top of
the backends, like the command line (docs/ARCHITECTURE.md, "Layers").
"""

from jobsync.dashboard.server import Dashboard

__all__ = ["Dashboard"]
