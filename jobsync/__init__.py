"""jobsync: coordinate worker processes so every task is owned by exactly one live worker.

The public API::

    from jobsync import Job, Task, CoordinationConfig, config

    with Job("worker-01", "production", config) as job:
        for item_id in get_pending_items():
            task = Task(item_id)
            if job.can_claim_task(task) and job.add_task(task):
                process_item(item_id)
        job.write_audit()
"""

from jobsync import errors
from jobsync.core import match_pattern, token_for
from jobsync.core.errors import JobSyncError, NodeNameConflict
from jobsync.runtime.config import CoordinationConfig, Settings, config
from jobsync.runtime.health import serve_health
from jobsync.runtime.job import Job, Task
from jobsync.runtime.maintenance import DrainRefused, drain_node, undrain_node
from jobsync.runtime.node import RebalanceEvent

__version__ = "0.1.0"

__all__ = [
    "CoordinationConfig",
    "DrainRefused",
    "Job",
    "JobSyncError",
    "NodeNameConflict",
    "RebalanceEvent",
    "Settings",
    "Task",
    "__version__",
    "config",
    "drain_node",
    "errors",
    "match_pattern",
    "serve_health",
    "token_for",
    "undrain_node",
]
