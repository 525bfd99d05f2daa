"""jobsync's pure core: hashing, LIKE patterns, membership, lifecycle and planning.

No I/O, no clock, no threads, no logging, no randomness: everything it needs
comes in as arguments and frozen values come out, so another scheduler can
embed it (docs/ARCHITECTURE.md, "Layers").
"""

from jobsync.core.errors import JobSyncError
from jobsync.core.hashing import (
    DEFAULT_HASH,
    DEFAULT_TOTAL_TOKENS,
    HASH_FUNCTIONS,
    canonical,
    token_for,
    token_function,
    validate_hash_function,
    validate_total_tokens,
)
from jobsync.core.lifecycle import NodeEvent, NodeState, transition
from jobsync.core.locks import LockConflict, ResolvedLocks, resolve_locks
from jobsync.core.model import NodeRecord
from jobsync.core.patterns import match_pattern, validate_node_name, validate_pattern
from jobsync.core.planner import Plan, lower_bound_moves, plan
from jobsync.core.rules import Hold, holding, is_live, lease_expired, oldest_live

__all__ = [
    "DEFAULT_HASH",
    "DEFAULT_TOTAL_TOKENS",
    "HASH_FUNCTIONS",
    "JobSyncError",
    "LockConflict",
    "Hold",
    "NodeEvent",
    "NodeRecord",
    "NodeState",
    "Plan",
    "ResolvedLocks",
    "canonical",
    "holding",
    "is_live",
    "lease_expired",
    "lower_bound_moves",
    "match_pattern",
    "oldest_live",
    "plan",
    "resolve_locks",
    "token_for",
    "token_function",
    "transition",
    "validate_hash_function",
    "validate_node_name",
    "validate_pattern",
    "validate_total_tokens",
]
