"""jobsync's pure core: hashing, LIKE patterns, membership, lifecycle and planning.

No I/O, no clock, no threads, no logging, no randomness: everything it needs
comes in as arguments and frozen values come out, so another scheduler can
embed it (DESIGN.md section 3).
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
from jobsync.core.membership import Member, elect_leader, is_live, live_nodes
from jobsync.core.patterns import match_pattern, validate_node_name, validate_pattern
from jobsync.core.planner import Plan, lower_bound_moves, plan

__all__ = [
    "DEFAULT_HASH",
    "DEFAULT_TOTAL_TOKENS",
    "HASH_FUNCTIONS",
    "JobSyncError",
    "LockConflict",
    "Member",
    "NodeEvent",
    "NodeState",
    "Plan",
    "ResolvedLocks",
    "canonical",
    "elect_leader",
    "is_live",
    "live_nodes",
    "lower_bound_moves",
    "match_pattern",
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
